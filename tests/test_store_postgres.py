"""
PostgreSQL-only behaviour of the store: it survives a restart of the database server. Requests
during the outage fail with StoreUnavailable (which the HTTP layer answers 503), and the same
store works again once the server is back, without being reopened.
"""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.defer import fail
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from meteord.errors import StoreUnavailable
from meteord.model import User
from meteord.store._sql import Operation, PostgresDatabase, Query, read_only
from tests._postgres import fresh_postgres_url, postgres_cluster
from tests._stores import PostgresStoreMixin

RECONNECT_ATTEMPTS = 100


@read_only
def _slow_read() -> Operation[int]:
    rows = yield Query("SELECT 7 FROM pg_sleep(60)")
    return rows[0][0]


@read_only
def _select_seven() -> Operation[int]:
    rows = yield Query("SELECT 7")
    return rows[0][0]


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def _terminate_slow_reads() -> int:
    """End the server sessions running `_slow_read`; how many there were."""
    import psycopg2

    connection = psycopg2.connect(**postgres_cluster().connect_kwargs())
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                           "WHERE query LIKE '%pg_sleep(60)%' AND pid <> pg_backend_pid()")
            return cursor.fetchone()[0]
    finally:
        connection.close()


class PostgresStartTests(TestCase):
    async def test_a_start_that_failed_part_way_can_be_retried(self) -> None:
        import psycopg2

        database = PostgresDatabase(fresh_postgres_url(), 3, reactor)
        self.addCleanup(database.close)
        unlucky = database._connections[2]
        connect = unlucky.connect
        attempts = []

        def fails_once(*args, **kwargs):
            attempts.append(1)
            if len(attempts) == 1:
                return fail(psycopg2.OperationalError("the server refused this one"))
            return connect(*args, **kwargs)

        self.patch(unlucky, "connect", fails_once)
        with self.assertRaises(StoreUnavailable):
            await database.start()
        # The two that connected the first time must not be "already connected" now.
        await database.start()
        self.assertEqual(await database.run(_select_seven), 7)
        self.assertEqual(len(attempts), 2)


class PostgresRestartTests(PostgresStoreMixin, TestCase):
    async def test_store_works_again_after_a_server_restart(self) -> None:
        await self.store.create_or_update_user("keeper", "secret-1", ["user"])
        descriptors = _open_descriptors()
        await deferToThread(postgres_cluster().restart)

        consecutive = 0
        for _ in range(RECONNECT_ATTEMPTS):
            try:
                users = await self.store.get_users()
            except StoreUnavailable:
                consecutive = 0
                # Waiting on the server coming back (real I/O), not on a timer under test.
                await deferLater(reactor, 0.1)
                continue
            consecutive += 1
            if consecutive == 8:
                break
        self.assertEqual(consecutive, 8)
        self.assertEqual(users, [User(user_id="keeper", roles=frozenset({"user"}))])
        self.assertTrue(await self.store.check())
        # Every connection back, none left behind: as many descriptors open as before.
        for _ in range(RECONNECT_ATTEMPTS):
            if not any(d.connectionIsDead for d in self.store.database._detectors):
                break
            await deferLater(reactor, 0.1)
        self.assertEqual(_open_descriptors(), descriptors)

    async def test_errors_during_the_outage_are_typed(self) -> None:
        cluster = postgres_cluster()
        await deferToThread(cluster._run, "pg_ctl", "-D", cluster.data_dir, "-m", "fast", "-w", "stop")
        self.addCleanup(lambda: deferToThread(cluster._run_pg_ctl, "start"))
        for _ in range(6):
            with self.assertRaises(StoreUnavailable):
                await self.store.get_users()
        self.assertFalse(await self.store.check())

    async def test_read_cut_off_by_the_server_fails_typed_and_the_store_recovers(
            self) -> None:
        await self.store.create_or_update_user("keeper", "secret-1", ["user"])
        slow = self.store.run(_slow_read)
        terminated = 0
        for _ in range(RECONNECT_ATTEMPTS):
            terminated = await deferToThread(_terminate_slow_reads)
            if terminated:
                break
            await deferLater(reactor, 0.05)
        self.assertEqual(terminated, 1)
        with self.assertRaises(StoreUnavailable):
            await slow
        for _ in range(RECONNECT_ATTEMPTS):
            try:
                users = await self.store.get_users()
                break
            except StoreUnavailable:
                await deferLater(reactor, 0.1)
        self.assertEqual(users, [User(user_id="keeper", roles=frozenset({"user"}))])
        self.assertTrue(await self.store.check())
