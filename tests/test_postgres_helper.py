"""
Tests for the throwaway PostgreSQL cluster used by the storage tests: it starts, hands out
fresh databases that txpostgres can query, and survives a restart.
"""

from __future__ import annotations

import os
import pwd
import tempfile

from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from txpostgres import txpostgres

from meteord.testing import postgres
from meteord.testing.postgres import PostgresCluster, PostgresUnavailable
from tests._postgres import postgres_cluster


class PostgresHelperTests(TestCase):
    async def connect(self, url_database: str) -> txpostgres.Connection:
        cluster = postgres_cluster()
        connection = txpostgres.Connection(reactor=reactor)
        await connection.connect(**cluster.connect_kwargs(url_database))
        self.addCleanup(lambda: connection.close() if not connection.closed else None)
        return connection

    async def test_txpostgres_runs_a_query(self) -> None:
        cluster = postgres_cluster()
        url = cluster.create_database()
        database = url.split("///", 1)[1].split("?", 1)[0]
        connection = await self.connect(database)
        rows = await connection.runQuery("SELECT current_database(), 6 * 7")
        self.assertEqual(rows, [(database, 42)])

    async def test_each_database_is_new_and_empty(self) -> None:
        cluster = postgres_cluster()
        first, second = cluster.create_database(), cluster.create_database()
        self.assertNotEqual(first, second)
        connection = await self.connect(second.split("///", 1)[1].split("?", 1)[0])
        rows = await connection.runQuery(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
        self.assertEqual(rows, [(0,)])

    async def test_restart_keeps_data(self) -> None:
        cluster = postgres_cluster()
        database = cluster.create_database().split("///", 1)[1].split("?", 1)[0]
        connection = await self.connect(database)
        await connection.runOperation("CREATE TABLE t (x integer)")
        await connection.runOperation("INSERT INTO t VALUES (1)")
        connection.close()
        await deferToThread(cluster.restart)
        again = await self.connect(database)
        self.assertEqual(await again.runQuery("SELECT x FROM t"), [(1,)])

    async def test_settings_are_given_to_the_server(self) -> None:
        shared = postgres_cluster()
        directory = tempfile.mkdtemp(prefix="meteord-pg-settings-")
        if shared.run_as is not None:
            entry = pwd.getpwnam(shared.run_as)
            os.chown(directory, entry.pw_uid, entry.pw_gid)
        cluster = PostgresCluster(bin_dir=shared.bin_dir, directory=directory,
                                  run_as=shared.run_as, settings={"work_mem": "7MB"})
        self.addCleanup(deferToThread, cluster.stop)
        await deferToThread(cluster.start)
        connection = txpostgres.Connection(reactor=reactor)
        await connection.connect(**cluster.connect_kwargs())
        self.addCleanup(connection.close)
        self.assertEqual(await connection.runQuery("SHOW work_mem"), [("7MB",)])


class SharedClusterTests(TestCase):
    def test_root_without_a_postgres_account_is_unavailable_with_the_reason(self) -> None:
        directory = self.mktemp()
        os.mkdir(directory)

        def no_such_account(name: str) -> None:
            raise KeyError(name)

        self.patch(postgres, "_cluster", None)
        self.patch(postgres, "_failure", None)
        self.patch(postgres, "find_binaries", lambda: "/usr/bin")
        self.patch(postgres.tempfile, "mkdtemp", lambda prefix: directory)
        self.patch(postgres.os, "geteuid", lambda: 0)
        self.patch(postgres.pwd, "getpwnam", no_such_account)
        e = self.assertRaises(PostgresUnavailable, postgres.shared_cluster)
        self.assertIn("no 'postgres' account", str(e))
        self.assertFalse(os.path.exists(directory))
        # Remembered: the next test is told the same without trying again.
        e = self.assertRaises(PostgresUnavailable, postgres.shared_cluster)
        self.assertIn("no 'postgres' account", str(e))
