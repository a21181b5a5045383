"""
Tests of the accounts half of the store on both databases: users and passwords, the initial
admin, export configurations, export tasks from marking to completion, the export status, and
the discovery registry.
"""

from __future__ import annotations

import os
import threading
from datetime import datetime, timezone
from typing import Any

import attrs
from argon2 import PasswordHasher
from twisted.internet.defer import Deferred, DeferredList, gatherResults
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from meteord.errors import AuthenticationFailed, EntityNotFound, LastCameraAdmin
from meteord.model import (
    EventSearch,
    ExportConfiguration,
    ExportOutcome,
    ExportStatus,
    FileRecordSearch,
    InvalidEntity,
    User,
    new_id,
)
from meteord.store import _passwords
from meteord.store import sql as store_sql
from meteord.store._sql import Query, migrate
from meteord.store.sql import CPU_WORK_CONCURRENCY, build_store
from tests._stores import PostgresStoreMixin, SQLiteStoreMixin

NOW_MS = 1_700_000_000_000


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, timezone.utc)


def _export_config(config_id: str, **changes) -> ExportConfiguration:
    values = dict(
        config_id=config_id,
        type="event",
        target_url="https://hub.example/api/import",
        user_id="camera1",
        password="remote secret",
        search=EventSearch(camera_ids=("0123456789ab",), limit=5, skip=2),
        config_name="to the hub",
        config_description="every event of camera 0123456789ab",
        enabled=True,
    )
    values.update(changes)
    return ExportConfiguration(**values)


def _stored_hash(user_id):
    rows = yield Query("SELECT password_hash FROM users WHERE user_id = ?", (user_id,))
    return rows[0][0]


def _set_hash(user_id, password_hash):
    yield Query("UPDATE users SET password_hash = ? WHERE user_id = ?", (password_hash, user_id))


def _back_to_schema_1():
    """Undo 0002_export_tls, as a database of schema version 1 has it."""
    yield Query("ALTER TABLE export_configs DROP COLUMN ca_file")
    yield Query("ALTER TABLE export_configs DROP COLUMN pinned_certificates")
    yield Query("DELETE FROM schema_version WHERE version = 2")


def _count_tasks():
    rows = yield Query("SELECT count(*) FROM export_tasks")
    return rows[0][0]


class UserTests:
    async def test_create_then_verify(self) -> None:
        self.assertEqual(
            await self.store.create_or_update_user("alice", "pw one", ["user", "import"]),
            "create")
        user = await self.store.get_user("alice", "pw one")
        self.assertEqual(user, User(user_id="alice", roles={"user", "import"}))

    async def test_new_user_roles_default_to_user(self) -> None:
        await self.store.create_or_update_user("alice", "pw", None)
        self.assertEqual(await self.store.get_users(), [User(user_id="alice", roles={"user"})])

    async def test_new_user_needs_a_password(self) -> None:
        with self.assertRaises(InvalidEntity) as caught:
            await self.store.create_or_update_user("alice", None, ["user"])
        self.assertEqual(caught.exception.key, "password")
        self.assertEqual(await self.store.get_users(), [])

    async def test_unknown_role_refused(self) -> None:
        with self.assertRaises(InvalidEntity):
            await self.store.create_or_update_user("alice", "pw", ["user", "root"])
        self.assertEqual(await self.store.get_users(), [])

    async def test_password_change_is_an_update(self) -> None:
        await self.store.create_or_update_user("alice", "old", ["user"])
        self.assertEqual(await self.store.create_or_update_user("alice", "new", None), "update")
        self.assertEqual((await self.store.get_user("alice", "new")).roles, {"user"})
        with self.assertRaises(AuthenticationFailed):
            await self.store.get_user("alice", "old")

    async def test_role_change_is_an_update(self) -> None:
        await self.store.create_or_update_user("alice", "pw", ["user"])
        self.assertEqual(
            await self.store.create_or_update_user("alice", None, ["user", "camera_admin"]),
            "update")
        self.assertEqual((await self.store.get_user("alice", "pw")).role_mask, 3)

    async def test_no_change_is_none(self) -> None:
        await self.store.create_or_update_user("alice", "pw", ["user"])
        before = await self.store.run(_stored_hash, "alice")
        self.assertEqual(await self.store.create_or_update_user("alice", "pw", ["user"]), "none")
        self.assertEqual(await self.store.create_or_update_user("alice", None, None), "none")
        self.assertEqual(await self.store.run(_stored_hash, "alice"), before)

    async def test_wrong_password_and_unknown_user_fail_alike(self) -> None:
        await self.store.create_or_update_user("alice", "pw", ["user"])
        with self.assertRaises(AuthenticationFailed) as wrong:
            await self.store.get_user("alice", "not pw")
        with self.assertRaises(AuthenticationFailed) as unknown:
            await self.store.get_user("bob", "pw")
        self.assertEqual(str(wrong.exception), str(unknown.exception))

    async def test_password_is_stored_hashed(self) -> None:
        await self.store.create_or_update_user("alice", "plain text", ["user"])
        stored = await self.store.run(_stored_hash, "alice")
        self.assertNotIn("plain text", stored)
        self.assertTrue(stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$"))

    async def test_hashing_and_verifying_run_off_the_reactor_thread(self) -> None:
        threads = []
        real_hash, real_verify = _passwords.hash_password, _passwords.verify_password
        # The dummy hash for unknown users is made once per process: made here, so that which
        # test ran first does not change the count below.
        _passwords.dummy_hash()

        def hash_password(password):
            threads.append(threading.get_ident())
            return real_hash(password)

        def verify_password(password_hash, password):
            threads.append(threading.get_ident())
            return real_verify(password_hash, password)

        self.patch(_passwords, "hash_password", hash_password)
        self.patch(_passwords, "verify_password", verify_password)
        await self.store.create_or_update_user("alice", "pw", ["user"])
        await self.store.get_user("alice", "pw")
        with self.assertRaises(AuthenticationFailed):
            await self.store.get_user("nobody", "pw")
        self.assertEqual(len(threads), 3)
        self.assertNotIn(threading.get_ident(), threads)

    async def test_old_hash_parameters_replaced_on_login(self) -> None:
        await self.store.create_or_update_user("alice", "pw", ["user"])
        weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("pw")
        await self.store.run(_set_hash, "alice", weak)
        await self.store.get_user("alice", "pw")
        stored = await self.store.run(_stored_hash, "alice")
        self.assertNotEqual(stored, weak)
        self.assertFalse(_passwords.needs_rehash(stored))
        self.assertEqual((await self.store.get_user("alice", "pw")).user_id, "alice")

    async def test_users_listed_by_id(self) -> None:
        for user_id in ("carol", "alice", "bob"):
            await self.store.create_or_update_user(user_id, "pw", ["user"])
        self.assertEqual([u.user_id for u in await self.store.get_users()],
                         ["alice", "bob", "carol"])

    async def test_set_user_roles(self) -> None:
        await self.store.create_or_update_user("alice", "pw", ["user"])
        user = await self.store.set_user_roles("alice", ["import"])
        self.assertEqual(user, User(user_id="alice", roles={"import"}))
        self.assertEqual(await self.store.get_users(), [user])

    async def test_set_roles_of_unknown_user(self) -> None:
        with self.assertRaises(EntityNotFound):
            await self.store.set_user_roles("nobody", ["user"])

    async def test_set_roles_swaps_camera_admin_in_one_transaction(self) -> None:
        await self.store.create_or_update_user("root", "pw", ["user", "camera_admin"])
        await self.store.create_or_update_user("alice", "pw", ["user"])
        users = await self.store.set_roles({"root": ["user"], "alice": ["camera_admin"]})
        self.assertEqual(users, [User(user_id="root", roles={"user"}),
                                 User(user_id="alice", roles={"camera_admin"})])
        self.assertEqual({u.user_id: u.roles for u in await self.store.get_users()},
                         {"root": {"user"}, "alice": {"camera_admin"}})

    async def test_set_roles_changes_none_when_one_fails(self) -> None:
        await self.store.create_or_update_user("root", "pw", ["camera_admin"])
        await self.store.create_or_update_user("alice", "pw", ["user"])
        before = await self.store.get_users()
        with self.assertRaises(EntityNotFound):
            await self.store.set_roles({"alice": ["import"], "nobody": ["user"]})
        with self.assertRaises(LastCameraAdmin):
            await self.store.set_roles({"alice": ["import"], "root": ["user"]})
        with self.assertRaises(InvalidEntity):
            await self.store.set_roles({"alice": ["import"], "root": ["no-such-role"]})
        self.assertEqual(await self.store.get_users(), before)

    async def test_delete_user(self) -> None:
        await self.store.create_or_update_user("alice", "pw", ["user"])
        self.assertTrue(await self.store.delete_user("alice"))
        self.assertFalse(await self.store.delete_user("alice"))
        self.assertEqual(await self.store.get_users(), [])
        with self.assertRaises(AuthenticationFailed):
            await self.store.get_user("alice", "pw")

    async def test_last_camera_admin_is_kept(self) -> None:
        await self.store.create_or_update_user("root", "pw", ["user", "camera_admin"])
        await self.store.create_or_update_user("alice", "pw", ["user"])
        with self.assertRaises(LastCameraAdmin):
            await self.store.delete_user("root")
        with self.assertRaises(LastCameraAdmin):
            await self.store.set_user_roles("root", ["user"])
        with self.assertRaises(LastCameraAdmin):
            await self.store.create_or_update_user("root", None, ["user"])
        self.assertEqual((await self.store.get_user("root", "pw")).role_mask, 3)

    async def test_an_admin_may_go_while_another_remains(self) -> None:
        await self.store.create_or_update_user("root", "pw", ["camera_admin"])
        await self.store.create_or_update_user("root2", "pw", ["camera_admin"])
        self.assertTrue(await self.store.delete_user("root"))
        self.assertEqual([u.user_id for u in await self.store.get_users()], ["root2"])

    async def test_initial_admin_created_once(self) -> None:
        password = await self.store.ensure_initial_admin()
        self.assertIsInstance(password, str)
        self.assertGreaterEqual(len(password), 20)
        user = await self.store.get_user("admin", password)
        self.assertEqual(user.roles, {"user", "camera_admin", "import"})
        self.assertIsNone(await self.store.ensure_initial_admin())
        self.assertEqual(await self.store.get_users(), [user])

    async def test_no_initial_admin_when_users_exist(self) -> None:
        await self.store.create_or_update_user("alice", "pw", ["user"])
        self.assertIsNone(await self.store.ensure_initial_admin())
        self.assertEqual([u.user_id for u in await self.store.get_users()], ["alice"])


class ExportConfigurationTests:
    async def test_round_trip(self) -> None:
        config = _export_config(
            new_id(), window=("22:00-06:00", "12:00-13:00"), max_bytes_per_second=65536,
            priority=-3, enabled=False, ca_file="/etc/meteord/hub-ca.pem",
            pinned_certificates=("ab" * 32, "01" * 32))
        self.assertEqual(await self.store.create_or_update_export_configuration(config), config)
        self.assertEqual(await self.store.get_export_configuration(config.config_id), config)
        self.assertEqual(await self.store.get_export_configurations(), [config])

    async def test_tls_settings_are_replaced_by_an_update(self) -> None:
        config = _export_config(new_id(), ca_file="/etc/meteord/hub-ca.pem")
        await self.store.create_or_update_export_configuration(config)
        for ca_file, pins in ((None, ("cd" * 32,)), ("/srv/ca.pem", ("01" * 32, "ef" * 32)),
                              (None, None)):
            changed = attrs.evolve(config, ca_file=ca_file, pinned_certificates=pins)
            self.assertEqual(
                await self.store.create_or_update_export_configuration(changed), changed)
            self.assertEqual(await self.store.get_export_configuration(config.config_id),
                             changed)

    async def test_configuration_stored_before_the_tls_migration_survives_it(self) -> None:
        config = await self.store.create_or_update_export_configuration(
            _export_config(new_id(), window=("22:00-06:00",)))
        await self.store.run(_back_to_schema_1)
        self.assertEqual(await self.store.run(migrate, self.store.dialect), 2)
        self.assertEqual(await self.store.get_export_configuration(config.config_id), config)

    async def test_file_configuration_round_trip(self) -> None:
        config = _export_config(
            new_id(), type="file",
            search=FileRecordSearch(semantic_type="meteorpi:bezier", limit=0, after=_at(NOW_MS)))
        await self.store.create_or_update_export_configuration(config)
        self.assertEqual(await self.store.get_export_configuration(config.config_id), config)

    async def test_empty_password_keeps_the_stored_one(self) -> None:
        config = _export_config(new_id(), password="first")
        await self.store.create_or_update_export_configuration(config)
        renamed = _export_config(config.config_id, password="", config_name="renamed")
        stored = await self.store.create_or_update_export_configuration(renamed)
        self.assertEqual(stored.password, "first")
        self.assertEqual(stored.config_name, "renamed")
        fetched = await self.store.get_export_configuration(config.config_id)
        self.assertEqual(fetched, _export_config(config.config_id, password="first",
                                                 config_name="renamed"))
        await self.store.create_or_update_export_configuration(
            _export_config(config.config_id, password="second"))
        self.assertEqual(
            (await self.store.get_export_configuration(config.config_id)).password, "second")

    async def test_listed_by_id(self) -> None:
        ids = sorted(new_id() for _ in range(3))
        for config_id in reversed(ids):
            await self.store.create_or_update_export_configuration(_export_config(config_id))
        self.assertEqual([c.config_id for c in await self.store.get_export_configurations()], ids)

    async def test_unknown_configuration(self) -> None:
        self.assertIsNone(await self.store.get_export_configuration(new_id()))
        self.assertIsNone(await self.store.get_export_status(new_id()))
        self.assertFalse(await self.store.delete_export_configuration(new_id()))
        for call in (self.store.defer_export_tasks(new_id(), 10),
                     self.store.retry_export_tasks(new_id()),
                     self.store.record_export_outcome(new_id(), ExportOutcome()),
                     self.store.claim_export_tasks(new_id(), 10, 60)):
            with self.assertRaises(EntityNotFound):
                await call

    async def test_outcome_is_stored(self) -> None:
        config = _export_config(new_id())
        await self.store.create_or_update_export_configuration(config)
        await self.store.record_export_outcome(config.config_id, ExportOutcome(
            consecutive_failures=4, deferred_until=_at(NOW_MS + 1_800_000), enabled=False,
            disabled_reason="4 consecutive transport failures", last_error="timeout"))
        status = await self.store.get_export_status(config.config_id)
        self.assertEqual(status.outcome(), ExportOutcome(
            consecutive_failures=4, deferred_until=_at(NOW_MS + 1_800_000), enabled=False,
            disabled_reason="4 consecutive transport failures", last_error="timeout"))
        self.assertFalse((await self.store.get_export_configuration(config.config_id)).enabled)
        # None keeps the most recent error; re-enabling resets the accounting.
        await self.store.record_export_outcome(
            config.config_id, ExportOutcome(consecutive_failures=4, enabled=False,
                                            disabled_reason="4 consecutive transport failures"))
        self.assertEqual((await self.store.get_export_status(config.config_id)).last_error,
                         "timeout")
        await self.store.create_or_update_export_configuration(config)
        status = await self.store.get_export_status(config.config_id)
        self.assertEqual(status.to_dict(), {
            "config_id": config.config_id, "enabled": True, "pending": 0, "done": 0,
            "failed": 0, "consecutive_failures": 0, "last_error": "timeout", "bytes_sent": 0})

    async def test_outcome_only_if_count_and_enabled_flag_are_still_those_read(self) -> None:
        config = _export_config(new_id())
        await self.store.create_or_update_export_configuration(config)
        fresh = ExportOutcome(enabled=True)
        first = ExportOutcome(consecutive_failures=1, deferred_until=_at(NOW_MS + 60_000),
                              enabled=True, last_error="refused")
        self.assertTrue(await self.store.record_export_outcome(config.config_id, first,
                                                               if_unchanged=fresh))
        second = ExportOutcome(consecutive_failures=1, deferred_until=_at(NOW_MS + 1_800_000),
                               enabled=True, last_error="timeout")
        self.assertFalse(await self.store.record_export_outcome(config.config_id, second,
                                                                if_unchanged=fresh))
        self.assertEqual((await self.store.get_export_status(config.config_id)).outcome(),
                         first)
        # An operator disables it meanwhile: a write decided while it was enabled is refused.
        await self.store.create_or_update_export_configuration(
            attrs.evolve(config, enabled=False))
        third = attrs.evolve(first, consecutive_failures=2)
        self.assertFalse(await self.store.record_export_outcome(config.config_id, third,
                                                                if_unchanged=first))
        self.assertFalse((await self.store.get_export_status(config.config_id)).enabled)
        self.assertFalse(await self.store.record_export_outcome(new_id(), first,
                                                                if_unchanged=fresh))


CAMERA_A, CAMERA_B = "0123456789ab", "ba9876543210"


def _insert_event(event_id, camera_id, event_time):
    yield Query(
        "INSERT INTO events (event_id, camera_id, event_time, event_type, status_id) "
        "VALUES (?, ?, ?, ?, ?)", (event_id, camera_id, event_time, "meteorpi:meteor", new_id()))


def _insert_file(file_id, camera_id, file_time, event_id=None):
    yield Query(
        "INSERT INTO files (file_id, camera_id, status_id, mime_type, semantic_type, file_time, "
        "file_size, md5) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (file_id, camera_id, new_id(), "image/png", "meteorpi:image", file_time, 3, "0" * 32))
    if event_id is not None:
        yield Query(
            "INSERT INTO event_files (event_pk, position, file_pk) SELECT e.id, 0, f.id "
            "FROM events e, files f WHERE e.event_id = ? AND f.file_id = ?", (event_id, file_id))


def _delete_event(event_id):
    yield Query("DELETE FROM events WHERE event_id = ?", (event_id,))


class ExportTaskTests:
    """Export task tests on a fake clock; listed before the store mixin, whose setUp it extends."""

    async def setUp(self) -> None:
        await super().setUp()
        self.clock = Clock()
        self.clock.advance(NOW_MS / 1000)
        self.store.clock = self.clock
        self.config = _export_config(new_id())
        await self.store.create_or_update_export_configuration(self.config)

    async def add_events(self, *times: int, camera_id: str = CAMERA_A) -> list[str]:
        """Store one event per time (ms after NOW_MS); give their ids in that order."""
        ids = []
        for offset in times:
            ids.append(new_id())
            await self.store.run(_insert_event, ids[-1], camera_id, NOW_MS - 100_000 + offset)
        return ids

    async def queue(self, *times: int) -> list[str]:
        """`add_events`, then mark them for export; their ids."""
        ids = await self.add_events(*times)
        await self.store.mark_entities_to_export(self.config)
        return ids

    async def claim(self, limit: int = 10, lease_seconds: float = 60) -> list:
        return await self.store.claim_export_tasks(self.config.config_id, limit, lease_seconds)

    async def status(self) -> dict:
        return (await self.store.get_export_status(self.config.config_id)).to_dict()

    def count_trips(self) -> list:
        """The operations run on the database from now on, one per trip."""
        trips = []
        run = self.store.run

        def counting(operation: Any, *args: Any) -> Any:
            trips.append(operation)
            return run(operation, *args)

        self.patch(self.store, "run", counting)
        return trips

    async def test_marking_is_idempotent(self) -> None:
        await self.add_events(3, 1, 2)
        await self.add_events(4, camera_id=CAMERA_B)
        self.assertEqual(await self.store.mark_entities_to_export(self.config), 3)
        self.assertEqual(await self.store.mark_entities_to_export(self.config), 0)
        self.assertEqual(await self.store.run(_count_tasks), 3)
        await self.add_events(5)
        self.assertEqual(await self.store.mark_entities_to_export(self.config), 1)
        self.assertEqual(await self.store.run(_count_tasks), 4)

    async def test_tasks_of_one_config_do_not_hide_entities_from_another(self) -> None:
        await self.add_events(1, 2)
        other = _export_config(new_id())
        await self.store.create_or_update_export_configuration(other)
        self.assertEqual(await self.store.mark_entities_to_export(self.config), 2)
        self.assertEqual(await self.store.mark_entities_to_export(other), 2)

    async def test_file_exports_take_stand_alone_files_only(self) -> None:
        config = _export_config(new_id(), type="file", search=FileRecordSearch())
        await self.store.create_or_update_export_configuration(config)
        (event_id,) = await self.add_events(1)
        alone, linked = new_id(), new_id()
        await self.store.run(_insert_file, alone, CAMERA_A, NOW_MS - 5000)
        await self.store.run(_insert_file, linked, CAMERA_A, NOW_MS - 4000, event_id)
        self.assertEqual(await self.store.mark_entities_to_export(config), 1)
        tasks = await self.store.claim_export_tasks(config.config_id, 10, 60)
        self.assertEqual([(t.kind, t.entity_id) for t in tasks], [("file", alone)])
        self.assertEqual(tasks[0].entity, await self.store.get_file(alone))

    async def test_claims_oldest_first_with_entities(self) -> None:
        newest, oldest, middle = await self.queue(3, 1, 2)
        tasks = await self.claim(limit=2)
        self.assertEqual([t.entity_id for t in tasks], [oldest, middle])
        self.assertEqual([(t.kind, t.config_id, t.attempts) for t in tasks],
                         [("event", self.config.config_id, 1)] * 2)
        self.assertEqual(tasks[0].entity, await self.store.get_event(oldest))
        self.assertEqual([t.entity_id for t in await self.claim()], [newest])

    async def test_a_claim_reads_its_entities_in_its_own_trip_to_the_database(self) -> None:
        event_ids = await self.queue(1, 2, 3)
        trips = self.count_trips()
        tasks = await self.claim()
        self.assertEqual(len(trips), 1)
        self.assertEqual([t.entity for t in tasks],
                         [await self.store.get_event(event_id) for event_id in event_ids])

    async def test_lease_hides_claimed_tasks_until_it_expires(self) -> None:
        (event_id,) = await self.queue(1)
        (task,) = await self.claim(lease_seconds=60)
        self.assertEqual(await self.claim(), [])
        self.clock.advance(59.999)
        self.assertEqual(await self.claim(), [])
        self.clock.advance(0.001)
        (again,) = await self.claim()
        self.assertEqual((again.task_id, again.entity_id, again.attempts),
                         (task.task_id, event_id, 2))

    async def test_complete(self) -> None:
        await self.queue(1, 2)
        first, second = await self.claim()
        self.clock.advance(5)
        await self.store.complete_export_task(first.task_id, 1000)
        await self.store.complete_export_task(second.task_id, 24)
        self.clock.advance(3600)
        self.assertEqual(await self.claim(), [])
        self.assertEqual(await self.status(), {
            "config_id": self.config.config_id, "enabled": True, "pending": 0, "done": 2,
            "failed": 0, "consecutive_failures": 0, "last_success": NOW_MS + 5000,
            "bytes_sent": 1024})

    async def test_complete_and_claim_the_next_in_one_trip(self) -> None:
        oldest, middle, newest = await self.queue(1, 2, 3)
        (first,) = await self.claim(limit=1)
        trips = self.count_trips()
        self.clock.advance(5)
        (second,) = await self.store.complete_and_claim_export_tasks(
            first.task_id, 1000, self.config.config_id, 1, 60)
        self.assertEqual(len(trips), 1)
        self.assertEqual((first.entity_id, second.entity_id, second.attempts),
                         (oldest, middle, 1))
        self.assertEqual(second.entity, await self.store.get_event(middle))
        self.assertEqual(await self.status(), {
            "config_id": self.config.config_id, "enabled": True, "pending": 2, "done": 1,
            "failed": 0, "oldest_pending_ms": NOW_MS, "consecutive_failures": 0,
            "last_success": NOW_MS + 5000, "next_attempt": NOW_MS, "bytes_sent": 1000})
        self.assertEqual([t.entity_id for t in await self.claim()], [newest])

    async def test_complete_and_claim_never_claims_the_task_it_completes(self) -> None:
        """Even when the completed task's lease has run out, the claim takes only others."""
        oldest, middle = await self.queue(1, 2)
        (first,) = await self.claim(limit=1, lease_seconds=60)
        self.clock.advance(61)
        claimed = await self.store.complete_and_claim_export_tasks(
            first.task_id, 10, self.config.config_id, 2, 60)
        self.assertEqual([t.entity_id for t in claimed], [middle])
        status = await self.status()
        self.assertEqual((status["pending"], status["done"], status["bytes_sent"]), (1, 1, 10))

    async def test_complete_and_claim_of_an_unknown_task_claims_nothing(self) -> None:
        await self.queue(1, 2)
        with self.assertRaises(EntityNotFound):
            await self.store.complete_and_claim_export_tasks(
                10**6, 0, self.config.config_id, 1, 60)
        with self.assertRaises(ValueError):
            await self.store.complete_and_claim_export_tasks(
                10**6, -1, self.config.config_id, 1, 60)
        self.assertEqual(len(await self.claim()), 2)

    async def test_fail_then_retry(self) -> None:
        await self.queue(1, 2)
        first, second = await self.claim()
        await self.store.fail_export_task(first.task_id, "importer answered failed")
        await self.store.release_export_task(second.task_id)
        self.clock.advance(10)
        self.assertEqual([t.task_id for t in await self.claim()], [second.task_id])
        self.assertEqual(await self.status(), {
            "config_id": self.config.config_id, "enabled": True, "pending": 1, "done": 0,
            "failed": 1, "oldest_pending_ms": NOW_MS, "consecutive_failures": 0,
            "last_error": "importer answered failed", "next_attempt": NOW_MS, "bytes_sent": 0})
        self.assertEqual(await self.store.retry_export_tasks(self.config.config_id), 1)
        self.assertEqual(await self.store.retry_export_tasks(self.config.config_id), 0)
        (retried,) = await self.claim()
        self.assertEqual((retried.task_id, retried.attempts), (first.task_id, 2))

    async def test_release_makes_a_task_claimable_at_once(self) -> None:
        await self.queue(1)
        (task,) = await self.claim(lease_seconds=600)
        await self.store.release_export_task(task.task_id)
        (again,) = await self.claim()
        self.assertEqual((again.task_id, again.attempts), (task.task_id, 2))

    async def test_a_success_resets_the_failure_count(self) -> None:
        await self.queue(1, 2)
        first, second = await self.claim()
        failing = ExportOutcome(consecutive_failures=3, deferred_until=_at(NOW_MS + 60_000),
                                enabled=True, last_error="timeout")
        for complete in (
                lambda: self.store.complete_export_task(first.task_id, 10),
                lambda: self.store.complete_and_claim_export_tasks(
                    second.task_id, 10, self.config.config_id, 1, 60)):
            await self.store.record_export_outcome(self.config.config_id, failing)
            await complete()
            status = await self.store.get_export_status(self.config.config_id)
            # Only the count: the back-off and the last error stay.
            self.assertEqual(status.outcome(), attrs.evolve(
                failing, consecutive_failures=0, last_success=_at(NOW_MS)))

    async def test_a_success_leaves_the_count_of_a_disabled_configuration(self) -> None:
        await self.queue(1)
        (task,) = await self.claim()
        disabled = ExportOutcome(consecutive_failures=4, enabled=False,
                                 disabled_reason="4 consecutive transport failures")
        await self.store.record_export_outcome(self.config.config_id, disabled)
        await self.store.complete_export_task(task.task_id, 10)
        status = await self.store.get_export_status(self.config.config_id)
        self.assertEqual((status.consecutive_failures, status.done), (4, 1))

    async def test_renew_extends_a_running_lease(self) -> None:
        await self.queue(1)
        (task,) = await self.claim(lease_seconds=60)
        self.clock.advance(30)
        self.assertTrue(await self.store.renew_export_task(task.task_id, task.attempts, 60))
        self.clock.advance(59.999)
        self.assertEqual(await self.claim(), [])
        self.clock.advance(0.001)
        (again,) = await self.claim()
        self.assertEqual((again.task_id, again.attempts), (task.task_id, 2))

    async def test_renew_never_takes_back_a_lease_that_ran_out(self) -> None:
        await self.queue(1)
        (task,) = await self.claim(lease_seconds=60)
        self.clock.advance(60)
        self.assertFalse(await self.store.renew_export_task(task.task_id, task.attempts, 60))
        # Claimed meanwhile by another exporter: its lease stays as it is.
        (again,) = await self.claim(lease_seconds=10)
        self.assertFalse(await self.store.renew_export_task(task.task_id, task.attempts, 60))
        self.clock.advance(10)
        (third,) = await self.claim()
        self.assertEqual((third.task_id, third.attempts), (task.task_id, 3))
        self.assertTrue(await self.store.renew_export_task(third.task_id, third.attempts, 60))

    async def test_renew_of_a_task_done_failed_or_released_changes_nothing(self) -> None:
        await self.queue(1, 2, 3)
        done, failed, released = await self.claim(lease_seconds=60)
        await self.store.complete_export_task(done.task_id, 10)
        await self.store.fail_export_task(failed.task_id, "refused")
        await self.store.release_export_task(released.task_id)
        for task in (done, failed, released):
            self.assertFalse(await self.store.renew_export_task(task.task_id, task.attempts, 60))
        (again,) = await self.claim()
        self.assertEqual(again.task_id, released.task_id)
        status = await self.status()
        self.assertEqual((status["done"], status["failed"], status["pending"]), (1, 1, 1))

    async def test_defer(self) -> None:
        await self.queue(1, 2)
        self.assertEqual(await self.store.defer_export_tasks(self.config.config_id, 1800), 2)
        self.assertEqual(await self.claim(), [])
        self.assertEqual((await self.status())["next_attempt"], NOW_MS + 1_800_000)
        self.clock.advance(1799.999)
        self.assertEqual(await self.claim(), [])
        self.clock.advance(0.001)
        self.assertEqual(len(await self.claim()), 2)

    async def test_reenabling_makes_deferred_tasks_due(self) -> None:
        await self.queue(1)
        await self.store.defer_export_tasks(self.config.config_id, 1800)
        await self.store.record_export_outcome(self.config.config_id, ExportOutcome(
            consecutive_failures=4, deferred_until=_at(NOW_MS + 1_800_000), enabled=False,
            disabled_reason="down", last_error="refused"))
        await self.store.create_or_update_export_configuration(self.config)
        self.assertEqual(len(await self.claim()), 1)
        status = await self.store.get_export_status(self.config.config_id)
        self.assertEqual((status.consecutive_failures, status.deferred_until,
                          status.disabled_reason), (0, None, None))

    async def test_task_of_deleted_entity_is_dropped(self) -> None:
        gone, kept = await self.queue(1, 2)
        await self.store.run(_delete_event, gone)
        self.assertEqual([t.entity_id for t in await self.claim()], [kept])
        self.assertEqual(await self.store.run(_count_tasks), 1)

    async def test_negative_bytes_refused(self) -> None:
        await self.queue(1)
        (task,) = await self.claim()
        with self.assertRaises(ValueError):
            await self.store.complete_export_task(task.task_id, -1)
        self.assertEqual((await self.status())["pending"], 1)

    async def test_unknown_task(self) -> None:
        for call in (self.store.complete_export_task(404, 1),
                     self.store.fail_export_task(404, "no"),
                     self.store.release_export_task(404)):
            with self.assertRaises(EntityNotFound):
                await call

    async def test_status_of_a_new_configuration(self) -> None:
        status = await self.store.get_export_status(self.config.config_id)
        self.assertEqual(status, ExportStatus(config_id=self.config.config_id, enabled=True))
        self.assertEqual(status.to_dict(), {
            "config_id": self.config.config_id, "enabled": True, "pending": 0, "done": 0,
            "failed": 0, "consecutive_failures": 0, "bytes_sent": 0})

    async def test_deleting_a_configuration_deletes_its_tasks(self) -> None:
        await self.queue(1, 2)
        self.assertTrue(await self.store.delete_export_configuration(self.config.config_id))
        self.assertEqual(await self.store.run(_count_tasks), 0)
        self.assertIsNone(await self.store.get_export_configuration(self.config.config_id))

    async def test_changing_the_type_drops_tasks_of_the_other_kind(self) -> None:
        await self.queue(1)
        await self.store.create_or_update_export_configuration(
            attrs.evolve(self.config, type="file", search=FileRecordSearch()))
        self.assertEqual(await self.store.run(_count_tasks), 0)

    async def test_concurrent_claimers_never_share_a_task(self) -> None:
        store = await self.open_store(pool_size=4)
        store.clock = self.clock
        await self.add_events(*range(1, 21))
        await store.mark_entities_to_export(self.config)
        results = await DeferredList(
            [store.claim_export_tasks(self.config.config_id, 5, 60) for _ in range(4)],
            fireOnOneErrback=True, consumeErrors=True)
        claimed = [[t.task_id for t in tasks] for _, tasks in results]
        self.assertEqual([len(ids) for ids in claimed], [5, 5, 5, 5])
        self.assertEqual(len({task_id for ids in claimed for task_id in ids}), 20)


class NodeTests:
    def _node(self, node_id: str, **changes) -> dict:
        node = {"node_id": node_id, "name": "roof camera", "roles": ["camera", "hub"],
                "address": "192.168.1.20", "http_port": 8080, "scheme": "http",
                "version": "0.1.0", "first_seen": NOW_MS, "last_seen": NOW_MS + 5000,
                "interval": 10.0, "status": "online"}
        node.update(changes)
        return node

    async def test_round_trip_and_update(self) -> None:
        first, second = self._node("bbbbbbbbbbbb"), self._node("aaaaaaaaaaaa", roles=[])
        await self.store.save_node(first)
        await self.store.save_node(second)
        self.assertEqual(await self.store.load_nodes(), [second, first])
        moved = self._node("bbbbbbbbbbbb", address="192.168.1.21", last_seen=NOW_MS + 9000,
                           interval=2.5, status="offline")
        await self.store.save_node(moved)
        loaded = await self.store.load_nodes()
        self.assertEqual(loaded, [second, moved])
        self.assertIs(type(loaded[1]["interval"]), float)
        self.assertIs(type(loaded[1]["http_port"]), int)

    async def test_missing_key_refused(self) -> None:
        node = self._node("aaaaaaaaaaaa")
        del node["scheme"]
        with self.assertRaises(InvalidEntity) as caught:
            await self.store.save_node(node)
        self.assertEqual(caught.exception.key, "scheme")


class SQLiteUserTests(SQLiteStoreMixin, UserTests, TestCase):
    pass


class PostgresUserTests(PostgresStoreMixin, UserTests, TestCase):
    pass


class SQLiteExportConfigurationTests(SQLiteStoreMixin, ExportConfigurationTests, TestCase):
    pass


class PostgresExportConfigurationTests(PostgresStoreMixin, ExportConfigurationTests, TestCase):
    pass


class SQLiteNodeTests(SQLiteStoreMixin, NodeTests, TestCase):
    pass


class PostgresNodeTests(PostgresStoreMixin, NodeTests, TestCase):
    pass


class SQLiteExportTaskTests(ExportTaskTests, SQLiteStoreMixin, TestCase):
    pass


class PostgresExportTaskTests(ExportTaskTests, PostgresStoreMixin, TestCase):
    pass


class PasswordWorkTests(TestCase):
    """Password checks queue for the thread pool instead of all running at once."""

    async def test_at_most_two_password_computations_at_once(self) -> None:
        store = build_store("sqlite:///" + os.path.abspath(self.mktemp()), self.mktemp())
        self.addCleanup(store.close)
        started: list[Deferred] = []

        def held(reactor, pool, f, *args):
            started.append(Deferred())
            return started[-1]

        self.patch(store_sql, "deferToThreadPool", held)
        work = [store.in_thread(len, "x") for _ in range(5)]
        self.assertEqual(len(started), CPU_WORK_CONCURRENCY)
        for finished in range(5):
            running = [d for d in started if not d.called]
            self.assertLessEqual(len(running), CPU_WORK_CONCURRENCY)
            running[0].callback(finished)
        self.assertEqual(await gatherResults(work), [0, 1, 2, 3, 4])
