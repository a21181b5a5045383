"""
The database drivers under meteord's SQL store. A store operation is written once, as a
generator that yields `Query` objects and receives each one's `Result`; a driver runs the whole
generator in one transaction. The SQLite driver runs it synchronously on adbapi's single
database thread; the PostgreSQL driver runs it on a txpostgres connection, one round trip per
query. So operations share SQL text and logic, while neither driver blocks the reactor.

SQL is written with ``?`` placeholders and no ``%`` characters other than the modulo
operator; the PostgreSQL driver rewrites both for psycopg2.

Operations marked `read_only` run on PostgreSQL outside an explicit transaction, each
statement as a server-side prepared statement of the connection. That costs nothing in
consistency: under PostgreSQL's default READ COMMITTED isolation every statement sees its own
snapshot inside a transaction too, and the read operations that matter for speed are one
statement each. It saves the BEGIN and COMMIT round trips and the planning of every statement.
"""

from __future__ import annotations

import itertools
import os
import re
import sqlite3
from collections import OrderedDict
from importlib.resources import files
from typing import Any, Callable, Generator, Optional, Sequence, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import attrs
from twisted.internet.defer import Deferred, FirstError, maybeDeferred
from twisted.logger import Logger

from meteord.errors import ConstraintViolation, SchemaTooNew, StoreUnavailable

log = Logger()

T = TypeVar("T")


@attrs.frozen
class Query:
    """One statement with its bound parameters; ``many`` runs it once per parameter tuple."""

    sql: str
    params: Sequence[Any] = ()
    many: bool = False


class Result(list):
    """The rows a statement returned (empty for most writes), plus how many rows it changed."""

    rowcount: int = 0


Operation = Generator[Query, Result, T]

OperationFunction = TypeVar("OperationFunction", bound=Callable[..., Any])


def read_only(operation: OperationFunction) -> OperationFunction:
    """
    Mark an operation that never writes (and takes no locks), so that the PostgreSQL driver may
    run it without an explicit transaction and with prepared statements.
    """
    operation.read_only = True  # type: ignore[attr-defined]
    return operation


@attrs.frozen
class Dialect:
    """What differs between the two databases, in the few places where it does."""

    name: str
    skip_locked: str  # appended to SELECT ... FOR UPDATE claims; empty on SQLite


SQLITE = Dialect(name="sqlite", skip_locked="")
POSTGRESQL = Dialect(name="postgresql", skip_locked=" FOR UPDATE SKIP LOCKED")


def _postgres_sql(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


# Prepared statements kept per connection; the least recently used is deallocated beyond this.
_PREPARED_PER_CONNECTION = 200


class _PreparedStatements:
    """
    The statements one PostgreSQL session has prepared, by SQL text, least recently used
    first. `statement` turns a query into the text to send: ``EXECUTE`` of a known statement,
    or ``PREPARE`` and ``EXECUTE`` in one round trip the first time. Names are never reused,
    so a statement forgotten after an error can never be confused with a later one.
    """

    def __init__(self, size: int = _PREPARED_PER_CONNECTION) -> None:
        self._size = size
        self._names: OrderedDict[str, Optional[str]] = OrderedDict()
        self._numbers = itertools.count(1)

    def statement(self, sql: str, count: int) -> tuple[Optional[str], bool]:
        """
        The psycopg2 text running ``sql`` (with ``count`` ``?`` placeholders) as a prepared
        statement, and whether it prepares it; None when it is not to be prepared.
        """
        if sql in self._names:
            self._names.move_to_end(sql)
            name = self._names[sql]
            if name is None:
                return None, False
            return f"EXECUTE {name}{_execute_arguments(count)}", False
        name = f"meteord_{next(self._numbers)}"
        prefix = ""
        if len(self._names) >= self._size:
            _, old = self._names.popitem(last=False)
            if old is not None:
                prefix = f"DEALLOCATE {old}; "
        self._names[sql] = name
        numbers = itertools.count(1)
        numbered = re.sub(r"\?", lambda _: f"${next(numbers)}", sql.replace("%", "%%"))
        return (f"{prefix}PREPARE {name} AS {numbered}; "
                f"EXECUTE {name}{_execute_arguments(count)}"), True

    def forget(self, sql: str) -> None:
        """Prepare ``sql`` afresh next time (its statement may be gone after an error)."""
        self._names.pop(sql, None)

    def refuse(self, sql: str) -> None:
        """Run ``sql`` unprepared from now on: the server would not prepare it."""
        self._names[sql] = None


def _execute_arguments(count: int) -> str:
    return f" ({', '.join(['%s'] * count)})" if count else ""


class SQLiteDatabase:
    """
    SQLite through ``twisted.enterprise.adbapi`` with exactly one connection (and so one
    thread): WAL journal, foreign keys on, a busy timeout for other processes' writers.
    """

    dialect = SQLITE

    def __init__(self, path: str, reactor: Any = None) -> None:
        from twisted.enterprise import adbapi

        if reactor is None:
            from twisted.internet import reactor
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self._pool = adbapi.ConnectionPool(
            "sqlite3", path, check_same_thread=False, isolation_level=None,
            cp_min=1, cp_max=1, cp_openfun=self._configure, cp_reactor=reactor,
        )

    @staticmethod
    def _configure(connection: sqlite3.Connection) -> None:
        for pragma in ("journal_mode = WAL", "foreign_keys = ON", "busy_timeout = 10000",
                       "synchronous = NORMAL"):
            connection.execute(f"PRAGMA {pragma}")

    def run(self, operation: Callable[..., Operation[T]], *args: Any) -> Deferred[T]:
        """Run ``operation(*args)`` in one transaction on the database thread."""
        d = self._pool.runInteraction(self._drive, operation, args)
        return d.addErrback(_translate_failure)

    @staticmethod
    def _drive(transaction: Any, operation: Callable[..., Operation[T]], args: tuple) -> T:
        transaction.execute("BEGIN")
        generator = operation(*args)
        try:
            query = next(generator)
            while True:
                if query.many:
                    transaction.executemany(query.sql, query.params)
                else:
                    transaction.execute(query.sql, query.params)
                result = Result(transaction.fetchall() if transaction.description else ())
                result.rowcount = transaction.rowcount
                query = generator.send(result)
        except StopIteration as stop:
            return stop.value

    def close(self) -> None:
        self._pool.close()


def _translate_failure(failure: Any) -> Any:
    """Driver exceptions become meteord's typed errors."""
    import psycopg2

    if failure.check(sqlite3.IntegrityError, psycopg2.IntegrityError):
        raise ConstraintViolation(str(failure.value).strip())
    if failure.check(sqlite3.OperationalError):
        message = str(failure.value)
        if "locked" in message or "unable to open" in message or "disk I/O" in message:
            raise StoreUnavailable(f"database unavailable: {message}")
    if failure.check(psycopg2.OperationalError, psycopg2.InterfaceError):
        raise StoreUnavailable(f"database unavailable: {str(failure.value).strip()}")
    from txpostgres.reconnection import ConnectionDead

    if failure.check(ConnectionDead):
        raise StoreUnavailable("database unavailable: reconnecting")
    return failure


def postgres_connect_kwargs(url: str) -> dict[str, Any]:
    """psycopg2 connection keywords for ``postgresql://user:pass@host:port/db?host=/dir``."""
    parts = urlsplit(url)
    kwargs: dict[str, Any] = {"dbname": unquote(parts.path.lstrip("/"))}
    if parts.hostname:
        kwargs["host"] = unquote(parts.hostname)
    if parts.port:
        kwargs["port"] = parts.port
    if parts.username:
        kwargs["user"] = unquote(parts.username)
    if parts.password:
        kwargs["password"] = unquote(parts.password)
    for key, values in parse_qs(parts.query).items():
        kwargs[key] = values[-1]
    return kwargs


class PostgresDatabase:
    """
    PostgreSQL through a txpostgres ``ConnectionPool`` whose connections each carry a
    ``DeadConnectionDetector``, so the pool reconnects by itself after a server restart;
    operations attempted meanwhile fail with `StoreUnavailable`.
    """

    dialect = POSTGRESQL

    def __init__(self, url: str, pool_size: int, reactor: Any = None) -> None:
        import psycopg2
        from txpostgres import reconnection, txpostgres

        if reactor is None:
            from twisted.internet import reactor

        self._closed = False

        def reconnection_delays() -> Any:
            delay = 0.2
            while not self._closed:
                yield delay
                delay = min(delay * 2, 5.0)

        def connection_died(failure: Any) -> bool:
            return not self._closed and reconnection.defaultDeathChecker(failure)

        class _Connection(txpostgres.Connection):
            """A connection that can run an interaction outside a transaction."""

            statements = _PreparedStatements()
            _read_cursor: Any = None

            def connect(self, *args: Any, **kwargs: Any) -> Deferred[Any]:
                # Prepared statements belong to the server session, which ends with the
                # connection: a reconnected one starts without any.
                self.statements = _PreparedStatements()
                self._read_cursor = None
                return super().connect(*args, **kwargs)

            def runWithoutTransaction(self, interaction: Callable[..., Any],
                                      *args: Any) -> Deferred[Any]:
                # The pool hands a connection to one caller at a time, so the lock that
                # runInteraction takes (for callers sharing a connection) is not needed, and
                # one cursor serves every read of the session; the dead connection detector
                # still watches each call.
                if self._read_cursor is None:
                    self._read_cursor = self.cursor()
                return self.detector.callChecking(
                    interaction, self._read_cursor, self.statements, *args)

            def doRead(self) -> Any:
                # An idle connection whose server went away: hand the error to the reactor as
                # the reason the connection was lost (the detector then reconnects) instead of
                # raising it, which the reactor would log as an unhandled error.
                try:
                    return super().doRead()
                except psycopg2.OperationalError as e:
                    return e
                except ValueError as e:
                    # txpostgres re-registers a socket psycopg2 has just closed (descriptor
                    # -1): the same lost connection, named so that the detector reconnects.
                    return psycopg2.OperationalError(f"connection lost: {e}")

        class _Detector(reconnection.DeadConnectionDetector):
            """
            Reconnects a dead connection with growing delays on the reactor's clock. Unlike
            txpostgres's own retrying (which cannot be cancelled while a connection attempt
            is under way), a pending attempt is a plain delayed call that `stop` cancels.
            """

            _pending: Any = None
            _delays: Any = iter(())

            def startReconnecting(self, f: Any) -> None:
                self._delays = reconnection_delays()
                self._schedule()

            def _schedule(self, _: Any = None) -> None:
                delay = next(self._delays, None)
                if delay is not None:
                    self._pending = self.reactor.callLater(delay, self._attempt)

            def _attempt(self) -> None:
                self._pending = None
                d = maybeDeferred(self.reconnect)
                d.addCallbacks(lambda _: self.connectionRecovered(), self._schedule)

            def stop(self) -> None:
                if self._pending is not None and self._pending.active():
                    self._pending.cancel()

        detectors = self._detectors = []
        connections = self._connections = []

        class _Pool(txpostgres.ConnectionPool):
            def connectionFactory(self, pool_reactor: Any, cooperator: Any) -> Any:
                detector = _Detector(
                    deathChecker=connection_died, reconnectionIterator=reconnection_delays,
                    reactor=pool_reactor)
                detectors.append(detector)
                connection = _Connection(pool_reactor, cooperator, detector=detector)
                connections.append(connection)
                return connection

            def runWithoutTransaction(self, interaction: Callable[..., Any],
                                      *args: Any) -> Deferred[Any]:
                """Like runInteraction, without BEGIN and COMMIT."""
                return self._semaphore.run(self._runWithoutTransaction, interaction, *args)

            def _runWithoutTransaction(self, interaction: Callable[..., Any],
                                       *args: Any) -> Deferred[Any]:
                connection = self.connections.pop()
                d = connection.runWithoutTransaction(interaction, *args)
                return d.addBoth(self._putBackAndPassthrough, connection)

        _Pool.reactor = reactor
        self._pool = _Pool(None, min=pool_size, **postgres_connect_kwargs(url))

    def start(self) -> Deferred[None]:
        """
        Open every connection of the pool. A start that fails closes the connections it
        opened (or is still opening), so that the next start begins afresh rather than
        finding them already connected.
        """
        d = self._pool.start()
        d.addCallbacks(lambda _: None, self._abandon_start)
        return d.addErrback(_translate_failure)

    def _abandon_start(self, failure: Any) -> Any:
        for connection in self._connections:
            pollable = connection.pollable()
            if pollable is not None and not pollable.closed:
                connection.close()
        if failure.check(FirstError):
            return failure.value.subFailure  # the connection's own error, not the pool's wrapper
        return failure

    def run(self, operation: Callable[..., Operation[T]], *args: Any) -> Deferred[T]:
        """
        Run ``operation(*args)`` in one transaction on a pooled connection, or, if it is
        `read_only`, with prepared statements and no explicit transaction.
        """
        if getattr(operation, "read_only", False):
            d = self._pool.runWithoutTransaction(
                lambda cursor, statements: Deferred.fromCoroutine(
                    self._drive_prepared(cursor, statements, operation, args)))
        else:
            d = self._pool.runInteraction(
                lambda cursor: Deferred.fromCoroutine(self._drive(cursor, operation, args)))
        return d.addErrback(_translate_failure)

    @staticmethod
    async def _drive_prepared(cursor: Any, statements: _PreparedStatements,
                              operation: Callable[..., Operation[T]], args: tuple) -> T:
        import psycopg2

        generator = operation(*args)
        try:
            query = next(generator)
            while True:
                if query.many:
                    raise TypeError("a read-only operation cannot run executemany queries")
                params = tuple(query.params)
                text, preparing = statements.statement(query.sql, len(params))
                try:
                    await cursor.execute(text or _postgres_sql(query.sql), params)
                except psycopg2.ProgrammingError:
                    if not preparing:
                        statements.forget(query.sql)
                        raise
                    # The server would not prepare it (it cannot infer a parameter's type,
                    # say): run it as it is, now and from now on. Reads have no side effects,
                    # so running the statement again is safe.
                    statements.refuse(query.sql)
                    await cursor.execute(_postgres_sql(query.sql), params)
                except Exception:
                    statements.forget(query.sql)
                    raise
                result = Result(cursor.fetchall() if cursor.description else ())
                result.rowcount = cursor.rowcount
                query = generator.send(result)
        except StopIteration as stop:
            return stop.value

    @staticmethod
    async def _drive(cursor: Any, operation: Callable[..., Operation[T]], args: tuple) -> T:
        generator = operation(*args)
        try:
            query = next(generator)
            while True:
                sql = _postgres_sql(query.sql)
                if query.many:
                    # One round trip per parameter tuple: txpostgres has no executemany.
                    rowcount = 0
                    for params in query.params:
                        await cursor.execute(sql, params)
                        rowcount += max(cursor.rowcount, 0)
                    result = Result()
                    result.rowcount = rowcount
                else:
                    await cursor.execute(sql, tuple(query.params))
                    result = Result(cursor.fetchall() if cursor.description else ())
                    result.rowcount = cursor.rowcount
                query = generator.send(result)
        except StopIteration as stop:
            return stop.value

    def close(self) -> None:
        """Close every connection; connections that died are not reconnected any more."""
        self._closed = True
        for detector in self._detectors:
            detector.stop()
        # Every connection, not only the pool's idle ones: a connection busy with a query
        # when the node stops would otherwise stay open.
        for connection in self._connections:
            if connection.pollable() is not None:  # None: never asked to connect
                connection.close()


# --- migrations

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def migrations(dialect: Dialect) -> list[tuple[int, str]]:
    """The numbered schema files of a dialect, in order, as ``(number, sql)``."""
    directory = files("meteord.store").joinpath("migrations", dialect.name)
    found = []
    for entry in directory.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.read_text(encoding="utf-8")))
    return sorted(found)


def _statements(script: str) -> list[str]:
    """Split a schema file at lines ending with ``;`` (no procedural code in our schema)."""
    statements, current = [], []
    for line in script.splitlines():
        if line.strip().startswith("--"):
            continue
        current.append(line)
        if line.rstrip().endswith(";"):
            statements.append("\n".join(current).strip().rstrip(";"))
            current = []
    if "".join(current).strip():
        statements.append("\n".join(current).strip())
    return statements


def migrate(dialect: Dialect) -> Operation[int]:
    """
    Bring the schema up to date in one transaction and return its version. On PostgreSQL an
    advisory lock makes concurrent starts of several processes wait for one another.
    """
    if dialect is POSTGRESQL:
        yield Query("SELECT pg_advisory_xact_lock(7170616)")
    yield Query("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    rows = yield Query("SELECT max(version) FROM schema_version")
    current = rows[0][0] or 0
    known = migrations(dialect)
    newest = known[-1][0] if known else 0
    if current > newest:
        raise SchemaTooNew(
            f"the database schema is version {current}, newer than this meteord "
            f"understands ({newest}); upgrade meteord"
        )
    for number, script in known:
        if number <= current:
            continue
        for statement in _statements(script):
            yield Query(statement)
        yield Query("INSERT INTO schema_version (version) VALUES (?)", (number,))
        log.info("database schema migrated to version {version}", version=number)
        current = number
    return current
