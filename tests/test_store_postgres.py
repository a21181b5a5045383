"""
PostgreSQL-only behaviour of the store: it survives a restart of the database server. Requests
during the outage fail with StoreUnavailable (which the HTTP layer answers 503), and the same
store works again once the server is back, without being reopened.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from meteord.errors import StoreUnavailable
from meteord.model import User
from tests._postgres import postgres_cluster
from tests._stores import PostgresStoreMixin

RECONNECT_ATTEMPTS = 100


class PostgresRestartTests(PostgresStoreMixin, TestCase):
    async def test_store_works_again_after_a_server_restart(self) -> None:
        await self.store.create_or_update_user("keeper", "secret-1", ["user"])
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

    async def test_errors_during_the_outage_are_typed(self) -> None:
        cluster = postgres_cluster()
        await deferToThread(cluster._run, "pg_ctl", "-D", cluster.data_dir, "-m", "fast", "-w", "stop")
        self.addCleanup(lambda: deferToThread(cluster._run_pg_ctl, "start"))
        for _ in range(6):
            with self.assertRaises(StoreUnavailable):
                await self.store.get_users()
        self.assertFalse(await self.store.check())
