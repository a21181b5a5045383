"""
The store as a child service of the node: started (connected, migrated) when the node starts,
closed when it stops. Until the store is ready, services that need it wait on `when_ready`, so
the HTTP port only opens once every request can be answered. A database that is down at start
is retried with growing delays; a schema newer than this meteord stops the daemon.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from meteord.errors import SchemaTooNew
from meteord.store.sql import SQLStore

log = Logger()

INITIAL_PASSWORD_FILE = "initial-admin-password"


def write_initial_password(data_dir: str, password: str) -> str:
    """Write the first admin password to a file only its owner can read; return the path."""
    path = os.path.join(data_dir, INITIAL_PASSWORD_FILE)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    # A file left there keeps its mode through O_TRUNC: restrict it before the password goes in.
    os.fchmod(descriptor, 0o600)
    with os.fdopen(descriptor, "w") as f:
        f.write(password + "\n")
    return path


class StoreService(Service):
    """Owns a `SQLStore`: starts it, creates the initial admin user, closes it."""

    name = "store"
    retry_delays = (1.0, 2.0, 5.0, 10.0, 30.0)

    def __init__(self, store: SQLStore, data_dir: str, reactor: Any) -> None:
        self.store = store
        self._data_dir = data_dir
        self._reactor = reactor
        self._ready = False
        self._waiting: list[Deferred[SQLStore]] = []
        self._retry: Any = None

    def when_ready(self) -> Deferred[SQLStore]:
        """Fires with the store once it is connected and migrated."""
        d: Deferred[SQLStore] = Deferred()
        if self._ready:
            d.callback(self.store)
        else:
            self._waiting.append(d)
        return d

    def startService(self) -> None:
        super().startService()
        self._attempt(0)

    def _attempt(self, failures: int) -> None:
        self._retry = None
        d = Deferred.fromCoroutine(self._open())
        d.addErrback(self._failed, failures)

    async def _open(self) -> None:
        await self.store.start()
        password = await self.store.ensure_initial_admin()
        if password is not None:
            path = write_initial_password(self._data_dir, password)
            log.warn("created user 'admin' with every role; its password is in {path}", path=path)
        self._ready = True
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(self.store)

    def _failed(self, failure: Any, failures: int) -> None:
        if failure.check(SchemaTooNew):
            log.critical("cannot open the store: {message}", message=str(failure.value))
            self._reactor.stop()
            return
        delay = self.retry_delays[min(failures, len(self.retry_delays) - 1)]
        log.error("cannot open the store ({message}); retrying in {delay:g} s",
                  message=str(failure.value), delay=delay)
        if self.running:
            self._retry = self._reactor.callLater(delay, self._attempt, failures + 1)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        return self.store.close()
