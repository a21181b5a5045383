"""
Fixtures for the store conformance suite: each store test module defines a mixin of tests
against ``self.store`` and runs it twice, with `SQLiteStoreMixin` and `PostgresStoreMixin`.
"""

from __future__ import annotations

import os

from twisted.internet import reactor

from meteord.store.sql import SQLStore, open_store
from tests._postgres import fresh_postgres_url

CAMERA = "0123456789ab"


class _StoreFixture:
    """Opens ``self.store`` in setUp (an async setUp, as trial allows) and closes it after."""

    backend = ""

    def database_url(self) -> str:
        raise NotImplementedError

    async def open_store(self, **kwargs) -> SQLStore:
        store = await open_store(self.database_url(), os.path.abspath(self.mktemp()),
                                 default_camera_id=CAMERA, reactor=reactor, **kwargs)
        self.addCleanup(store.close)
        return store

    async def setUp(self) -> None:
        self.store = await self.open_store()


class SQLiteStoreMixin(_StoreFixture):
    backend = "sqlite"

    def database_url(self) -> str:
        if not hasattr(self, "_url"):
            self._url = "sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite3"
        return self._url


class PostgresStoreMixin(_StoreFixture):
    backend = "postgresql"

    def database_url(self) -> str:
        if not hasattr(self, "_url"):
            self._url = fresh_postgres_url()
        return self._url
