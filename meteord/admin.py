"""
``meteord-admin``: operator commands on a node's configured store (``--config`` as for
twistd): add users and change their passwords and roles, check the file store against the
file records (``fsck``), and register a directory of files as stand-alone files
(``import-dir``). Each run opens the store, does one thing, closes it; any error is one line
on standard error and a non-zero exit status.

Decisions where the specification is silent:

- ``adduser`` refuses an existing user and ``passwd`` an unknown one, so a typo never creates
  or silently changes an account. Passwords come from a prompt (asked twice) or, with
  ``--password-stdin``, from the first line of standard input; roles default to ``user``.
- ``fsck`` lists the files on disk first and reads the records afterwards, so a file
  registered meanwhile is not taken for an orphan; before ``--repair`` removes an orphan its
  record is looked up once more. It is still best run while the daemon is stopped. The exit
  status is 1 when any mismatch, missing file or unremoved orphan was found.
- ``import-dir`` moves the files into the store (as ``register_file`` does), walking the
  directory in name order without following symbolic links; a file's time is its modification
  time, its name its suggested download name, its MIME type guessed from the name unless
  given (``application/octet-stream`` when unknown), its semantic type ``meteord:imported``
  unless given. A file that cannot be registered (no camera status in force at its time, for
  instance) is reported and left where it is; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import getpass
import mimetypes
import os
import sys
from datetime import datetime, timezone
from typing import Any, Optional, TextIO

from tqdm import tqdm
from twisted.internet.defer import Deferred
from twisted.internet.task import react

from meteord.config import ConfigError, load_config
from meteord.errors import StoreError
from meteord.model import InvalidEntity, User
from meteord.store._sql import Operation, Query
from meteord.store.files import FileStoreError
from meteord.store.sql import SQLStore, open_store

PROG = "meteord-admin"
DEFAULT_SEMANTIC_TYPE = "meteord:imported"
DEFAULT_MIME_TYPE = "application/octet-stream"


class CommandFailed(Exception):
    """A command cannot go on; its message is the one line shown to the operator."""


def build_parser() -> argparse.ArgumentParser:
    """The command line of meteord-admin."""
    parser = argparse.ArgumentParser(prog=PROG, description="Administer a meteord node's store.")
    parser.add_argument("--config", help="TOML configuration file (as for twistd meteord)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    adduser = commands.add_parser("adduser", help="add a user")
    adduser.add_argument("user_id")
    adduser.add_argument("--roles", default="user",
                         help="comma-separated roles: user, camera_admin, import (default user)")
    adduser.add_argument("--password-stdin", action="store_true",
                         help="read the password from the first line of standard input")

    passwd = commands.add_parser("passwd", help="change a user's password")
    passwd.add_argument("user_id")
    passwd.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of standard input")

    roles = commands.add_parser("roles", help="set a user's roles")
    roles.add_argument("user_id")
    roles.add_argument("roles", help="comma-separated roles: user, camera_admin, import")

    fsck = commands.add_parser("fsck", help="check every stored file against its record")
    fsck.add_argument("--repair", action="store_true", help="remove files that have no record")

    import_dir = commands.add_parser(
        "import-dir", help="move every file under a directory into the store as stand-alone files")
    import_dir.add_argument("directory")
    import_dir.add_argument("--camera-id", help="camera of the files (default: this node's id)")
    import_dir.add_argument("--mime-type", help="MIME type of every file (default: guessed)")
    import_dir.add_argument("--semantic-type", default=DEFAULT_SEMANTIC_TYPE,
                            help=f"semantic type of every file (default {DEFAULT_SEMANTIC_TYPE})")
    return parser


async def run(reactor: Any, arguments: argparse.Namespace, stdin: TextIO = sys.stdin,
              stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> int:
    """Carry out one parsed command on the configured store; give the exit status."""
    command = _COMMANDS[arguments.command]
    try:
        config = load_config(arguments.config)
        store = await open_store(
            config.database.url, config.files.path, default_camera_id=config.node.id,
            pool_size=config.database.pool_size, reactor=reactor)
        try:
            return await command(store, arguments, _Terminal(stdin, stdout, stderr))
        finally:
            await store.close()
    except (CommandFailed, ConfigError, StoreError, InvalidEntity, FileStoreError,
            OSError) as e:
        stderr.write(f"{PROG}: {_one_line(e)}\n")
        return 1


def main(argv: Optional[list[str]] = None) -> None:
    """The console script: parse, run on a fresh reactor, exit with the command's status."""
    arguments = build_parser().parse_args(argv)

    async def command(reactor: Any) -> None:
        status = await run(reactor, arguments)
        if status:
            raise SystemExit(status)

    react(lambda reactor: Deferred.fromCoroutine(command(reactor)))


class _Terminal:
    """Where a command reads passwords and writes results, progress and warnings."""

    def __init__(self, stdin: TextIO, stdout: TextIO, stderr: TextIO) -> None:
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr

    def say(self, line: str) -> None:
        """A result line, on standard output."""
        self.stdout.write(line + "\n")

    def warn(self, line: str) -> None:
        """A warning line, on standard error."""
        self.stderr.write(line + "\n")

    def read_password(self, from_stdin: bool) -> str:
        """A new password, from standard input's first line or typed twice at a prompt."""
        if from_stdin:
            password = self.stdin.readline().rstrip("\r\n")
        else:
            try:
                password = getpass.getpass("New password: ")
                again = getpass.getpass("Again: ")
            except (EOFError, KeyboardInterrupt):
                raise CommandFailed("no password given") from None
            if again != password:
                raise CommandFailed("the passwords differ")
        if not password:
            raise CommandFailed("the password must not be empty")
        return password

    def progress(self, **kwargs: Any) -> tqdm:
        """A progress bar on standard error, shown only when it is a terminal."""
        return tqdm(file=self.stderr, disable=None, **kwargs)


# users


def _roles(text: str) -> list[str]:
    return [role.strip() for role in text.split(",") if role.strip()]


async def _user_exists(store: SQLStore, user_id: str) -> bool:
    return any(user.user_id == user_id for user in await store.get_users())


def _describe(user: User) -> str:
    return f"{user.user_id} ({', '.join(sorted(user.roles)) or 'no roles'})"


async def _adduser(store: SQLStore, arguments: argparse.Namespace, terminal: _Terminal) -> int:
    roles = _roles(arguments.roles)
    user = User(user_id=arguments.user_id, roles=roles)
    if await _user_exists(store, user.user_id):
        raise CommandFailed(f"user {user.user_id} already exists (use passwd or roles)")
    password = terminal.read_password(arguments.password_stdin)
    await store.create_or_update_user(user.user_id, password, roles)
    terminal.say(f"added user {_describe(user)}")
    return 0


async def _passwd(store: SQLStore, arguments: argparse.Namespace, terminal: _Terminal) -> int:
    if not await _user_exists(store, arguments.user_id):
        raise CommandFailed(f"no user {arguments.user_id}")
    password = terminal.read_password(arguments.password_stdin)
    await store.create_or_update_user(arguments.user_id, password, None)
    terminal.say(f"changed the password of {arguments.user_id}")
    return 0


async def _set_roles(store: SQLStore, arguments: argparse.Namespace, terminal: _Terminal) -> int:
    user = await store.set_user_roles(arguments.user_id, _roles(arguments.roles))
    terminal.say(f"user {_describe(user)}")
    return 0


# fsck


def _file_records() -> Operation[list[tuple[str, int, str, Optional[str]]]]:
    rows = yield Query("SELECT file_id, file_size, md5, sha256 FROM files ORDER BY file_id")
    return [tuple(row) for row in rows]


async def _fsck(store: SQLStore, arguments: argparse.Namespace, terminal: _Terminal) -> int:
    on_disk = set(await store.in_thread(lambda: list(store.file_store.iter_file_ids())))
    records = await store.run(_file_records)
    mismatched = missing = 0
    with terminal.progress(total=sum(size for _, size, _, _ in records), unit="B",
                           unit_scale=True, desc="fsck") as bar:
        for file_id, size, md5, sha256 in records:
            problem = await _check_file(store, file_id, size, md5, sha256, file_id in on_disk)
            bar.update(size)
            if problem is None:
                continue
            if problem.startswith("missing"):
                missing += 1
            else:
                mismatched += 1
            terminal.say(problem)
    orphans = sorted(on_disk - {record[0] for record in records})
    removed = 0
    for file_id in orphans:
        terminal.say(f"orphan {file_id}: no record for this file")
        if arguments.repair and not await store.has_file_id(file_id):
            removed += len(await store.file_store.remove([file_id]))
            terminal.say(f"removed orphan {file_id}")
    terminal.say(f"checked {len(records)} records: {mismatched} mismatched, {missing} missing, "
                 f"{len(orphans)} orphans ({removed} removed)")
    return 1 if mismatched or missing or len(orphans) > removed else 0


async def _check_file(store: SQLStore, file_id: str, size: int, md5: str,
                      sha256: Optional[str], on_disk: bool) -> Optional[str]:
    """A line describing what is wrong with one record's file, or None if it is whole."""
    missing = f"missing {file_id}: the record has no file"
    if not on_disk:
        return missing
    try:
        stored = await store.file_store.rehash(file_id)
    except FileStoreError:
        return missing
    except OSError as e:
        return f"unreadable {file_id}: {e.strerror or e}"
    if stored.size != size:
        return f"mismatch {file_id}: {stored.size} bytes, the record says {size}"
    if stored.md5 != md5:
        return f"mismatch {file_id}: md5 is {stored.md5}, the record says {md5}"
    if sha256 is not None and stored.sha256 != sha256:
        return f"mismatch {file_id}: sha256 is {stored.sha256}, the record says {sha256}"
    return None


# import-dir


def _regular_files(directory: str) -> tuple[list[str], list[OSError]]:
    """
    Every regular file under directory, in name order, not following symbolic links; and
    the errors of the directories that could not be read.
    """
    if not os.path.isdir(directory):
        raise CommandFailed(f"{directory} is not a directory")
    found = []
    unreadable: list[OSError] = []
    for root, directories, names in os.walk(directory, onerror=unreadable.append):
        directories.sort()
        for name in sorted(names):
            path = os.path.join(root, name)
            if os.path.isfile(path) and not os.path.islink(path):
                found.append(path)
    return found, unreadable


async def _import_dir(store: SQLStore, arguments: argparse.Namespace,
                      terminal: _Terminal) -> int:
    paths, unreadable = await store.in_thread(_regular_files, arguments.directory)
    imported, failed = 0, len(unreadable)
    for error in unreadable:
        terminal.warn(f"not imported {error.filename}: the directory cannot be read "
                      f"({error.strerror or error})")
    with terminal.progress(total=len(paths), unit="file", desc="import") as bar:
        for path in paths:
            try:
                record = await store.register_file(
                    path,
                    arguments.mime_type or mimetypes.guess_type(path)[0] or DEFAULT_MIME_TYPE,
                    arguments.semantic_type,
                    datetime.fromtimestamp(os.stat(path).st_mtime, timezone.utc),
                    (),
                    arguments.camera_id,
                    os.path.basename(path),
                )
            except (StoreError, InvalidEntity, FileStoreError, OSError) as e:
                failed += 1
                terminal.warn(f"not imported {path}: {_one_line(e)}")
            else:
                imported += 1
                terminal.say(f"{record.file_id} {path}")
            bar.update(1)
    terminal.say(f"imported {imported} files, {failed} not imported")
    return 1 if failed else 0


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


_COMMANDS = {
    "adduser": _adduser,
    "passwd": _passwd,
    "roles": _set_roles,
    "fsck": _fsck,
    "import-dir": _import_dir,
}


if __name__ == "__main__":
    main()
