"""
Tests of ``meteord-admin`` on a temporary SQLite store: the user commands, ``import-dir`` and
``fsck``, in-process on trial's reactor, plus one run of the console script as a process.
"""

from __future__ import annotations

import errno
import getpass
import io
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail
from twisted.trial.unittest import TestCase

from meteord.admin import build_parser, run
from meteord.config import load_config
from meteord.errors import AuthenticationFailed
from meteord.model import CameraStatus, FileRecordSearch, Location, Orientation, User, new_id
from meteord.store.files import FileStore
from meteord.store.sql import open_store

CAMERA = "0123456789ab"
STATUS_FROM = datetime(2024, 1, 1, tzinfo=timezone.utc)
FILE_TIME = datetime(2024, 6, 1, 22, 30, tzinfo=timezone.utc).timestamp()


class AdminTests(TestCase):
    def setUp(self) -> None:
        self.data_dir = os.path.abspath(self.mktemp())
        os.makedirs(self.data_dir)
        self.config_path = os.path.join(self.data_dir, "meteord.toml")
        with open(self.config_path, "w", encoding="utf-8") as f:
            f.write(f"[node]\nid = \"{CAMERA}\"\ndata_dir = {json.dumps(self.data_dir)}\n")

    async def admin(self, *argv: str, stdin: str = "") -> tuple[int, str, str]:
        """Run one command in-process; give (exit status, stdout, stderr)."""
        stdout, stderr = io.StringIO(), io.StringIO()
        arguments = build_parser().parse_args(["--config", self.config_path, *argv])
        status = await run(reactor, arguments, io.StringIO(stdin), stdout, stderr)
        return status, stdout.getvalue(), stderr.getvalue()

    async def open_store(self):
        config = load_config(self.config_path)
        store = await open_store(config.database.url, config.files.path,
                                 default_camera_id=config.node.id, reactor=reactor)
        self.addCleanup(store.close)
        return store

    async def test_adduser(self) -> None:
        status, out, err = await self.admin("adduser", "alice", "--roles", "user,import",
                                            "--password-stdin", stdin="s3cret\n")
        self.assertEqual((status, out, err), (0, "added user alice (import, user)\n", ""))
        store = await self.open_store()
        self.assertEqual(await store.get_user("alice", "s3cret"),
                         User(user_id="alice", roles={"user", "import"}))

    async def test_adduser_refuses_an_existing_user(self) -> None:
        await self.admin("adduser", "alice", "--password-stdin", stdin="one\n")
        status, out, err = await self.admin("adduser", "alice", "--password-stdin",
                                            stdin="two\n")
        self.assertEqual((status, out), (1, ""))
        self.assertEqual(err, "meteord-admin: user alice already exists (use passwd or roles)\n")
        store = await self.open_store()
        self.assertEqual((await store.get_user("alice", "one")).roles, {"user"})

    async def test_adduser_refuses_an_empty_password(self) -> None:
        status, _, err = await self.admin("adduser", "alice", "--password-stdin", stdin="\n")
        self.assertEqual((status, err), (1, "meteord-admin: the password must not be empty\n"))

    async def test_adduser_with_unknown_role(self) -> None:
        status, _, err = await self.admin("adduser", "alice", "--roles", "user,root",
                                          "--password-stdin", stdin="pw\n")
        self.assertEqual(status, 1)
        self.assertEqual(err, "meteord-admin: Invalid 'roles': unknown role 'root'; "
                              "roles are user, camera_admin, import\n")

    async def test_adduser_prompts_twice(self) -> None:
        answers = iter(["typed", "typed"])
        self.patch(getpass, "getpass", lambda prompt: next(answers))
        status, _, _ = await self.admin("adduser", "alice")
        self.assertEqual(status, 0)
        store = await self.open_store()
        self.assertEqual((await store.get_user("alice", "typed")).user_id, "alice")

    async def test_passwd(self) -> None:
        await self.admin("adduser", "alice", "--password-stdin", stdin="old\n")
        status, out, _ = await self.admin("passwd", "alice", "--password-stdin", stdin="new\n")
        self.assertEqual((status, out), (0, "changed the password of alice\n"))
        store = await self.open_store()
        await store.get_user("alice", "new")
        with self.assertRaises(AuthenticationFailed):
            await store.get_user("alice", "old")

    async def test_passwd_of_unknown_user(self) -> None:
        status, _, err = await self.admin("passwd", "bob", "--password-stdin", stdin="pw\n")
        self.assertEqual((status, err), (1, "meteord-admin: no user bob\n"))

    async def test_roles(self) -> None:
        await self.admin("adduser", "alice", "--password-stdin", stdin="pw\n")
        status, out, _ = await self.admin("roles", "alice", "camera_admin, user")
        self.assertEqual((status, out), (0, "user alice (camera_admin, user)\n"))
        store = await self.open_store()
        self.assertEqual(await store.get_users(),
                         [User(user_id="alice", roles={"camera_admin", "user"})])

    async def test_roles_of_unknown_user(self) -> None:
        status, _, err = await self.admin("roles", "bob", "user")
        self.assertEqual((status, err), (1, "meteord-admin: User not found: bob\n"))

    async def test_bad_config_is_one_line(self) -> None:
        with open(self.config_path, "a", encoding="utf-8") as f:
            f.write("[database]\npool_size = \"many\"\n")
        status, _, err = await self.admin("roles", "bob", "user")
        self.assertEqual(status, 1)
        self.assertTrue(err.startswith("meteord-admin: [database] pool_size: "), err)
        self.assertEqual(err.count("\n"), 1)

    def make_files(self, *names: str) -> str:
        """Files named ``names`` (paths under a new directory) holding their own names."""
        directory = os.path.abspath(self.mktemp())
        for name in names:
            path = os.path.join(directory, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(name)
            os.utime(path, (FILE_TIME, FILE_TIME))
        return directory

    async def add_camera_status(self) -> None:
        store = await self.open_store()
        await store.update_camera_status(CameraStatus(
            camera_id=CAMERA, status_id=new_id(), lens="", sensor="", software_version=1,
            valid_from=STATUS_FROM, location=Location(lat=51.5, long=-0.1, gps=False, error=1.0),
            orientation=Orientation(alt=90.0, az=0.0, error=1.0, rot=0.0, width=120.0),
        ), time=STATUS_FROM)

    async def imported_files(self) -> list:
        store = await self.open_store()
        found = await store.search_files(FileRecordSearch(limit=0))
        return sorted(found["files"], key=lambda record: record.file_name)

    async def test_import_dir(self) -> None:
        await self.add_camera_status()
        directory = self.make_files("a.png", "nested/b.txt", "nested/c")
        status, out, err = await self.admin("import-dir", directory)
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(out.splitlines()[-1], "imported 3 files, 0 not imported")
        records = await self.imported_files()
        self.assertEqual(
            [(r.file_name, r.mime_type, str(r.semantic_type), r.camera_id, r.file_size)
             for r in records],
            [("a.png", "image/png", "meteord:imported", CAMERA, 5),
             ("b.txt", "text/plain", "meteord:imported", CAMERA, 12),
             ("c", "application/octet-stream", "meteord:imported", CAMERA, 8)])
        self.assertEqual({r.file_time.timestamp() for r in records}, {FILE_TIME})
        self.assertEqual(sorted(os.listdir(os.path.join(directory, "nested"))), [])

    async def test_import_dir_with_types_and_failures(self) -> None:
        await self.add_camera_status()
        directory = self.make_files("ok.bin", "too-early.bin")
        os.utime(os.path.join(directory, "too-early.bin"), (0, 0))
        status, out, err = await self.admin(
            "import-dir", directory, "--mime-type", "video/mp4", "--semantic-type",
            "meteorpi:video")
        self.assertEqual(status, 1)
        self.assertTrue(err.startswith(
            f"not imported {os.path.join(directory, 'too-early.bin')}: no status"), err)
        self.assertEqual(out.splitlines()[-1], "imported 1 files, 1 not imported")
        (record,) = await self.imported_files()
        self.assertEqual((record.file_name, record.mime_type, str(record.semantic_type)),
                         ("ok.bin", "video/mp4", "meteorpi:video"))
        self.assertTrue(os.path.exists(os.path.join(directory, "too-early.bin")))

    async def test_import_dir_reports_a_directory_it_cannot_read(self) -> None:
        await self.add_camera_status()
        directory = self.make_files("a.png")
        locked = os.path.join(directory, "locked")
        walk = os.walk

        def walk_meeting_a_locked_directory(top: str, **options: Any) -> Any:
            options["onerror"](PermissionError(errno.EACCES, "Permission denied", locked))
            return walk(top, **options)

        self.patch(os, "walk", walk_meeting_a_locked_directory)
        status, out, err = await self.admin("import-dir", directory)
        self.assertEqual(status, 1)
        self.assertEqual(err, f"not imported {locked}: the directory cannot be read "
                              "(Permission denied)\n")
        self.assertEqual(out.splitlines()[-1], "imported 1 files, 1 not imported")

    async def test_fsck_of_a_sound_store(self) -> None:
        await self.add_camera_status()
        await self.admin("import-dir", self.make_files("a", "b"))
        status, out, _ = await self.admin("fsck")
        self.assertEqual((status, out),
                         (0, "checked 2 records: 0 mismatched, 0 missing, 0 orphans (0 removed)\n"))

    async def test_fsck_reports_a_file_it_cannot_read_and_goes_on(self) -> None:
        await self.add_camera_status()
        await self.admin("import-dir", self.make_files("a", "b"))
        a, b = (r.file_id for r in await self.imported_files())
        rehash = FileStore.rehash

        def failing_disk(file_store: FileStore, file_id: str) -> Deferred:
            if file_id == a:
                return fail(OSError(errno.EIO, "Input/output error"))
            return rehash(file_store, file_id)

        self.patch(FileStore, "rehash", failing_disk)
        status, out, _ = await self.admin("fsck")
        self.assertEqual(status, 1)
        lines = out.splitlines()
        self.assertEqual(lines[0], f"unreadable {a}: Input/output error")
        self.assertEqual(lines[-1], "checked 2 records: 1 mismatched, 0 missing, 0 orphans "
                                    "(0 removed)")

    async def test_adduser_without_a_typed_password(self) -> None:
        def no_input(prompt: str) -> str:
            raise EOFError()

        self.patch(getpass, "getpass", no_input)
        status, _, err = await self.admin("adduser", "alice")
        self.assertEqual((status, err), (1, "meteord-admin: no password given\n"))

    async def test_fsck_finds_and_repairs(self) -> None:
        await self.add_camera_status()
        await self.admin("import-dir", self.make_files("a", "b", "c"))
        a, b, c = (r.file_id for r in await self.imported_files())
        store = await self.open_store()
        with open(store.file_path_for_id(a).path, "wb") as f:
            f.write(b"A")
        with open(store.file_path_for_id(b).path, "wb") as f:
            f.write(b"XY")
        os.remove(store.file_path_for_id(c).path)
        orphan = new_id()
        source = os.path.join(self.data_dir, "orphan")
        with open(source, "wb") as f:
            f.write(b"nobody's")
        await store.file_store.add_from_path(source, orphan, move=True)

        status, out, _ = await self.admin("fsck")
        self.assertEqual(status, 1)
        lines = out.splitlines()
        self.assertEqual(lines[-1], "checked 3 records: 2 mismatched, 1 missing, 1 orphans "
                                    "(0 removed)")
        self.assertEqual(sorted(lines[:-1]), sorted([
            f"mismatch {a}: md5 is 7fc56270e7a70fa81a5935b72eacbe29, "
            "the record says 0cc175b9c0f1b6a831c399e269772661",
            f"mismatch {b}: 2 bytes, the record says 1",
            f"missing {c}: the record has no file",
            f"orphan {orphan}: no record for this file",
        ]))

        status, out, _ = await self.admin("fsck", "--repair")
        self.assertEqual(status, 1)
        self.assertIn(f"removed orphan {orphan}", out.splitlines())
        self.assertEqual(out.splitlines()[-1],
                         "checked 3 records: 2 mismatched, 1 missing, 1 orphans (1 removed)")
        store = await self.open_store()
        self.assertFalse(await store.file_store.exists(orphan))

    def test_console_script_exit_status(self) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "meteord.admin", "--config", self.config_path,
             "roles", "nobody", "user"],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "PYTHONPATH": _source_root()})
        self.assertEqual((result.returncode, result.stdout, result.stderr),
                         (1, "", "meteord-admin: User not found: nobody\n"))


def _source_root() -> str:
    """The directory holding the meteord package, for the child process's import path."""
    import meteord

    return os.path.dirname(os.path.dirname(os.path.abspath(meteord.__file__)))
