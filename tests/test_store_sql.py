"""
Tests of the store's SQL foundation on both databases: migrations create the schema once and
refuse a newer database, transactions roll back as a whole, driver errors come out typed; and
the store provides every interface it claims (the discovery registry's suite runs on it too).
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from zope.interface.verify import verifyObject

from meteord.errors import ConstraintViolation, SchemaTooNew, StoreUnavailable
from meteord.interfaces import IFileStore, IMeteorStore
from meteord.store._sql import SQLITE, Query, migrate, migrations
from meteord.store.sql import CLOSE_GRACE_SECONDS, SQLStore
from tests._stores import PostgresStoreMixin, SQLiteStoreMixin
from tests.test_discovery import NodeRegistryStoreTestsMixin


def _version():
    rows = yield Query("SELECT max(version) FROM schema_version")
    return rows[0][0]


def _set_version(version):
    yield Query("INSERT INTO schema_version (version) VALUES (?)", (version,))


def _insert_two_marks_failing():
    yield Query("INSERT INTO high_water_marks (camera_id, mark) VALUES (?, ?)", ("cam", 1))
    yield Query("INSERT INTO high_water_marks (camera_id, mark) VALUES (?, ?)", ("cam", 2))


def _count_marks():
    rows = yield Query("SELECT count(*) FROM high_water_marks")
    return rows[0][0]


def _modulo():
    rows = yield Query("SELECT (? - 7) % 5", (20,))
    return rows[0][0]


class SQLFoundationTests:
    async def test_schema_is_at_newest_version(self) -> None:
        newest = migrations(self.store.dialect)[-1][0]
        self.assertEqual(await self.store.run(_version), newest)

    async def test_migrating_again_changes_nothing(self) -> None:
        version = await self.store.run(migrate, self.store.dialect)
        self.assertEqual(version, await self.store.run(_version))

    async def test_newer_database_refused(self) -> None:
        await self.store.run(_set_version, 9999)
        with self.assertRaises(SchemaTooNew):
            await self.store.run(migrate, self.store.dialect)

    async def test_failed_transaction_rolls_back_whole(self) -> None:
        with self.assertRaises(ConstraintViolation):
            await self.store.run(_insert_two_marks_failing)
        self.assertEqual(await self.store.run(_count_marks), 0)

    async def test_modulo_operator_survives_placeholder_rewriting(self) -> None:
        self.assertEqual(await self.store.run(_modulo), 3)

    async def test_check_answers(self) -> None:
        self.assertTrue(await self.store.check())

    async def test_close_lets_transactions_under_way_finish(self) -> None:
        running = self.store.run(_modulo)
        left = self.store.run(_modulo)
        left.cancel()  # its client went away; the transaction goes on
        self.failureResultOf(left, CancelledError)
        await self.store.close()
        self.assertEqual(self.successResultOf(running), 3)

    async def test_close_waits_for_reads_gathered_behind_those_under_way(self) -> None:
        """
        Event reads gathered behind the two under way when the store closes are answered
        before it closes; anything run after fails as unavailable instead of waiting on a
        closed database.
        """
        reads = [self.store.get_event_wire("%032x" % n) for n in range(4)]
        await self.store.close()
        self.assertEqual([self.successResultOf(read) for read in reads], [None] * 4)
        with self.assertRaises(StoreUnavailable):
            await self.store.run(_modulo)
        with self.assertRaises(StoreUnavailable):
            await self.store.get_event_wire("1" * 32)


class CloseGraceTests(SynchronousTestCase):
    def test_close_waits_for_a_stuck_transaction_no_longer_than_the_grace(self) -> None:
        class StuckDatabase:
            dialect = SQLITE
            closed = False

            def run(self, operation, *args) -> Deferred:
                return Deferred()

            def close(self) -> None:
                self.closed = True

        clock = Clock()
        database = StuckDatabase()
        store = SQLStore(database, None, "0123456789ab", clock)
        store.run(_modulo)
        closing = store.close()
        clock.advance(CLOSE_GRACE_SECONDS - 0.1)
        self.assertFalse(database.closed)
        clock.advance(0.1)
        self.assertTrue(database.closed)
        self.successResultOf(closing)


class SQLiteFoundationTests(SQLiteStoreMixin, SQLFoundationTests, TestCase):
    pass


class PostgresFoundationTests(PostgresStoreMixin, SQLFoundationTests, TestCase):
    pass


class InterfaceTests:
    def test_provides_the_store_interfaces(self) -> None:
        self.assertTrue(verifyObject(IMeteorStore, self.store))
        self.assertTrue(verifyObject(IFileStore, self.store.file_store))

    def make_store(self):
        return self.store


class SQLiteInterfaceTests(SQLiteStoreMixin, InterfaceTests, NodeRegistryStoreTestsMixin, TestCase):
    pass


class PostgresInterfaceTests(PostgresStoreMixin, InterfaceTests, NodeRegistryStoreTestsMixin,
                             TestCase):
    pass
