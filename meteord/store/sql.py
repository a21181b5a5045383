"""
`SQLStore`, meteord's one implementation of IMeteorStore, over either database driver of
``_sql``. The operations themselves live in mixins by subject (``_records``: files, events,
statuses, searches, imports; ``_accounts``: users, exports, nodes); this module holds what they
share: the driver, the file store, the clock, the thread pool for hashing, and opening.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, TypeVar

from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore, fail
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThreadPool
from zope.interface import implementer

from meteord.errors import StoreUnavailable
from meteord.interfaces import IMeteorStore, INodeRegistryStore
from meteord.model import ms_to_datetime
from meteord.store._accounts import AccountOperations
from meteord.store._records import RecordOperations
from meteord.store._shield import shielded
from meteord.store._sql import Operation, PostgresDatabase, Query, SQLiteDatabase, migrate
from meteord.store.files import FileStore

T = TypeVar("T")

CHECK_TIMEOUT_SECONDS = 5.0
CLOSE_GRACE_SECONDS = 5.0
CPU_WORK_CONCURRENCY = 2


@implementer(IMeteorStore, INodeRegistryStore)
class SQLStore(RecordOperations, AccountOperations):
    """
    The store: ``database`` is a `SQLiteDatabase` or `PostgresDatabase`; ``default_camera_id``
    is this installation's id, used where a camera id is omitted.
    """

    def __init__(self, database: Any, file_store: FileStore, default_camera_id: str,
                 reactor: Any) -> None:
        self.database = database
        self.dialect = database.dialect
        self.file_store = file_store
        self.default_camera_id = default_camera_id
        self.clock: IReactorTime = reactor
        self._reactor = reactor
        self._cpu_work = DeferredSemaphore(CPU_WORK_CONCURRENCY)
        self._running: set[Deferred[Any]] = set()
        self._closing: Deferred[None] | None = None
        self._closed = False

    def run(self, operation: Callable[..., Operation[T]], *args: Any) -> Deferred[T]:
        """
        Run one transaction (a generator operation) on the database. Cancelling the result
        (an HTTP client went away) leaves the transaction to finish on its own: cancelling a
        query half-way would leave the connection in an unknown state. Once the database is
        closed, fails with StoreUnavailable.
        """
        if self._closed:
            return fail(StoreUnavailable("the store is closed"))
        running = self.database.run(operation, *args)
        self._running.add(running)
        running.addBoth(self._ran, running)
        return shielded(running)

    def _ran(self, result: Any, running: Deferred[Any]) -> Any:
        self._running.discard(running)
        return result

    def in_thread(self, f: Callable[..., T], *args: Any) -> Deferred[T]:
        """
        Run CPU-heavy work (password hashing) on the reactor's thread pool, at most
        ``CPU_WORK_CONCURRENCY`` at a time: each argon2 check holds 19 MiB while it runs, so a
        burst of first logins must queue rather than multiply the node's memory.
        """
        return self._cpu_work.run(
            deferToThreadPool, self._reactor, self._reactor.getThreadPool(), f, *args)

    def now(self) -> datetime:
        """The clock's time as an aware UTC datetime with millisecond precision."""
        return ms_to_datetime(self.now_ms())

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    async def _start(self) -> None:
        if isinstance(self.database, PostgresDatabase):
            await self.database.start()
        await self.run(migrate, self.dialect)
        await self.file_store.start()

    def start(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._start())

    def close(self) -> Deferred[None]:
        """
        Close the database once the transactions under way (and those they lead to) have
        ended, or after ``CLOSE_GRACE_SECONDS``; `run` then fails with StoreUnavailable. A
        request whose client went away leaves its transaction running (see `run`), and
        closing under it would fail it half-way. Closing again waits for the first close.
        """
        if self._closing is None:
            self._closing = Deferred.fromCoroutine(self._close())
        return shielded(self._closing)

    async def _close(self) -> None:
        # Transactions that those under way start (reads gathered behind them) are waited
        # for too, within the same grace.
        deadline = self.clock.seconds() + CLOSE_GRACE_SECONDS
        while self._running and self.clock.seconds() < deadline:
            waiting = DeferredList([shielded(running) for running in self._running],
                                   consumeErrors=True)
            await waiting.addTimeout(deadline - self.clock.seconds(), self.clock)
        self._closed = True
        self.database.close()

    async def _check(self) -> bool:
        try:
            rows = await self.run(_select_one).addTimeout(CHECK_TIMEOUT_SECONDS, self.clock)
        except Exception:
            return False
        return rows == 1

    def check(self) -> Deferred[bool]:
        return Deferred.fromCoroutine(self._check())


def _select_one() -> Operation[int]:
    rows = yield Query("SELECT 1")
    return rows[0][0]


def build_store(url: str, files_path: str, *, default_camera_id: str = "000000000000",
                pool_size: int = 4, reactor: Any = None) -> SQLStore:
    """
    The store named by a database URL (``sqlite:///relative/path``, ``sqlite:////absolute/path``
    or ``postgresql://...``) with its file store at ``files_path``, not yet started: nothing is
    connected or migrated until ``start()``.
    """
    if reactor is None:
        from twisted.internet import reactor
    if url.startswith("sqlite:///"):
        database: Any = SQLiteDatabase(url[len("sqlite:///"):], reactor)
    elif url.startswith(("postgresql:", "postgres:")):
        database = PostgresDatabase(url, pool_size, reactor)
    else:
        raise ValueError(f"unsupported database URL {url!r}")
    return SQLStore(database, FileStore(files_path, reactor=reactor), default_camera_id, reactor)


def open_store(url: str, files_path: str, *, default_camera_id: str = "000000000000",
               pool_size: int = 4, reactor: Any = None) -> Deferred[SQLStore]:
    """`build_store`, then start it: connect, migrate, clean the file store's temporary files."""
    store = build_store(url, files_path, default_camera_id=default_camera_id,
                        pool_size=pool_size, reactor=reactor)
    return store.start().addCallback(lambda _: store)
