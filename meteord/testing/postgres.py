"""
A throwaway PostgreSQL cluster for tests and benchmarks: ``initdb`` and ``pg_ctl`` from the
machine's PostgreSQL binaries in a temporary directory, listening only on a Unix socket there,
run as the ``postgres`` user when the caller is root. One cluster serves a whole test run; each
test case gets a fresh database. The cluster is stopped and deleted when the process exits,
whether the tests passed or not.
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from urllib.parse import quote

import attrs

REQUIRED_ENV = "METEORD_TEST_POSTGRES"


class PostgresUnavailable(Exception):
    """No PostgreSQL server binaries here, or the cluster could not be started."""


def find_binaries() -> str | None:
    """The directory holding ``initdb`` and ``pg_ctl``: the newest Debian version, else PATH."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: [int(x) if x.isdigit() else 0 for x in p.split("/")[4].split(".")],
    )
    for directory in reversed(candidates):
        if os.access(os.path.join(directory, "initdb"), os.X_OK):
            return directory
    initdb = shutil.which("initdb")
    return os.path.dirname(os.path.realpath(initdb)) if initdb else None


def required() -> bool:
    """Whether a missing PostgreSQL is a failure rather than a skip."""
    return os.environ.get(REQUIRED_ENV, "").lower() == "required"


@attrs.define
class PostgresCluster:
    """A running throwaway cluster; ``create_database()`` hands out fresh databases."""

    bin_dir: str
    directory: str
    run_as: str | None
    #: More server settings given at every start, e.g. ``{"shared_buffers": "1GB"}``.
    settings: dict[str, str] = attrs.field(factory=dict)
    _names: itertools.count = attrs.field(factory=lambda: itertools.count(1))

    @property
    def socket_dir(self) -> str:
        return self.directory

    @property
    def data_dir(self) -> str:
        return os.path.join(self.directory, "data")

    def _run(self, *command: str) -> None:
        argv = [os.path.join(self.bin_dir, command[0]), *command[1:]]
        if self.run_as is not None:
            argv = ["runuser", "-u", self.run_as, "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, cwd=self.directory)
        if result.returncode != 0:
            raise PostgresUnavailable(
                f"{command[0]} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}"
            )

    def start(self) -> None:
        self._run("initdb", "-D", self.data_dir, "-U", "postgres", "-A", "trust", "-E", "UTF8",
                  "--no-sync", "--locale=C")
        self._run_pg_ctl("start")

    def _run_pg_ctl(self, action: str) -> None:
        options = (f"-c listen_addresses='' -c unix_socket_directories='{self.socket_dir}' "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                   "-c max_connections=200"
                   + "".join(f" -c {name}={value}" for name, value in self.settings.items()))
        self._run("pg_ctl", "-D", self.data_dir, "-l", os.path.join(self.directory, "server.log"),
                  "-o", options, "-w", "-t", "60", action, *(("-m", "fast") if action != "start" else ()))

    def stop(self) -> None:
        """Stop the server (immediately) and delete everything."""
        try:
            self._run("pg_ctl", "-D", self.data_dir, "-m", "immediate", "-w", "stop")
        except PostgresUnavailable:
            pass
        shutil.rmtree(self.directory, ignore_errors=True)

    def restart(self) -> None:
        """Restart the server, dropping every connection (for outage tests)."""
        self._run_pg_ctl("restart")

    def url(self, database: str) -> str:
        return f"postgresql:///{database}?host={quote(self.socket_dir)}&user=postgres"

    def connect_kwargs(self, database: str = "postgres") -> dict[str, str]:
        return {"dbname": database, "host": self.socket_dir, "user": "postgres"}

    def create_database(self) -> str:
        """Create an empty database and return its URL."""
        import psycopg2

        name = f"meteord_test_{os.getpid()}_{next(self._names)}"
        connection = psycopg2.connect(**self.connect_kwargs())
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()
        return self.url(name)


_cluster: PostgresCluster | None = None
_failure: str | None = None


def shared_cluster() -> PostgresCluster:
    """
    The cluster of this process, started on first use and removed at exit.

    @raise PostgresUnavailable: with the reason, when there are no binaries or start failed.
    """
    global _cluster, _failure
    if _cluster is not None:
        return _cluster
    if _failure is not None:
        raise PostgresUnavailable(_failure)
    bin_dir = find_binaries()
    if bin_dir is None:
        _failure = ("PostgreSQL server binaries (initdb, pg_ctl) not found: "
                    "install the 'postgresql' package to run the PostgreSQL tests")
        raise PostgresUnavailable(_failure)
    directory = tempfile.mkdtemp(prefix="meteord-pg-")
    try:
        run_as = None
        if os.geteuid() == 0:
            # The server refuses to run as root: it runs as the account the package creates.
            run_as = "postgres"
            try:
                entry = pwd.getpwnam(run_as)
            except KeyError:
                raise PostgresUnavailable(
                    "running as root, and there is no 'postgres' account to run the server as"
                ) from None
            os.chown(directory, entry.pw_uid, entry.pw_gid)
        cluster = PostgresCluster(bin_dir=bin_dir, directory=directory, run_as=run_as)
        cluster.start()
    except (PostgresUnavailable, OSError) as e:
        shutil.rmtree(directory, ignore_errors=True)
        _failure = f"could not start a PostgreSQL cluster: {e}"
        raise PostgresUnavailable(_failure) from None
    atexit.register(cluster.stop)
    _cluster = cluster
    return cluster
