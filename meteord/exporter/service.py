"""
The exporter: a `LoopingCall` that marks what each export configuration selects and pushes the
queued tasks to the target's import API with treq, each entity driven through `ExportProtocol`,
with failure accounting, back-off, disabling, time windows and the byte-rate cap of
replication.md. The store, the clock and the HTTP client are passed in.

Choices where the specification is silent:

- Each worker claims one task at a time (`claim_export_tasks(config_id, 1, lease)`), so a
  task's lease starts when its work starts. A round sends at most `batch_size` tasks per
  configuration, then ends; since it did work, the next round starts at once, re-marking and
  re-checking windows, deferral and enabled state in between.
- A task's lease (default one hour) is renewed every half lease while its export goes on, so
  a long upload (a large file under a low rate cap) is never cut short by it. No request
  outlives the lease it holds, less a margin of 5 s: when a renewal is refused (the lease ran
  out, or the task was claimed again or finished meanwhile) the export stops at once, and
  when renewals cannot reach the database it stops as the lease runs out. Either way the
  task is left as it is, neither failed nor released, since it may be another exporter's
  now; it is counted in `leases_lost`. So two exporters on one database never send the
  same task at the same time.
- A configuration whose stored back-off (`deferred_until`) lies in the future, or that is
  outside its windows, still has new matches marked but sends nothing. A configuration stops
  claiming for the rest of the round after its first transport failure; entities already in
  flight finish. Every transport failure defers the configuration's pending tasks to the
  stored back-off, even one not counted because the configuration was already deferred, so a
  released task is never retried at once.
- A success resets the stored failure count as the store marks the task done, in the same
  transaction, so a success in one process resets a count raised by another. A transport
  failure's count is stored only if no success, other failure or operator changed the count
  or the enabled flag since they were read; otherwise it is read and decided again, so two
  exporters failing together count the outage once and an operator's disabling stands.
- A worker that takes another task marks the one it finished done and claims the next in one
  transaction (`complete_and_claim_export_tasks`), one trip to the database instead of two.
  Each claim counts against the round's `batch_size` before it is made.
- A file that cannot be opened or read when its upload starts (no bytes, a disk error) is an
  entity failure saying so: this node's disk is not the importer's fault.
- Request timeouts: `request_timeout()` for a message, `request_timeout(file size)` for an
  upload, covering sending, the reply's headers and reading its body. Time spent waiting on
  the configuration's own rate cap is added, because the importer is not the one being slow.
  Replies are read up to 1 MiB; a longer one is cut off and judged by the protocol as what it
  then is, not JSON.
- A POST that fails because the connection was lost before any response (a persistent
  connection the importer had closed, or a cut during the upload) is sent once more on a new
  connection; the import protocol is idempotent, so this is safe. A refused TLS handshake is
  not sent again.
- Files are streamed in 256 KiB chunks read and hashed in the file store's threads, a chunk
  ahead of what is sent (the file is opened and its first chunk read in one trip there); the
  last chunk is held back until the file has ended there and the digest is known, so the
  bytes of a file that no longer matches its record are never sent whole, and a size that
  differs from the record fails the entity before any byte is sent. Either is an entity
  failure saying so. The bytes are checked against the record's sha256
  (more than twice as fast as md5 here), or its md5 when the record has no sha256; the md5 in
  the upload's URL is the recorded one either way, and the importer checks the bytes with it.
- `bytes_sent` counts every request body (entities, statuses and file bytes) of a completed
  task, including bodies sent again.
- TLS: each configuration's requests are verified as its ``ca_file`` and
  ``pinned_certificates`` say (`meteord.exporter.tls`). A configuration with neither uses the
  service's default: the system's roots, or the service's `ca_file` (PEM, one or more
  certificates) in their place. A pin mismatch, a certificate that does not verify and a CA
  file that cannot be read are all transport failures of that configuration. A CA file is read
  (in a thread) when a combination is first needed, so a file changed in place takes effect
  at the next start; the service-wide one is read when the service starts.
- Connections: one persistent `HTTPConnectionPool` and treq client per distinct combination of
  ``ca_file`` and pins (the default one included), each keeping at most `concurrency` idle
  connections per host, all closed when the service stops; in-flight connections are bounded
  by `concurrency` per configuration.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from typing import Any, Awaitable, Callable, Optional, Union

import attrs
from hyperlink import EncodedURL
from twisted.application.service import Service
from twisted.internet.defer import (
    CancelledError, Deferred, DeferredList, DeferredLock, maybeDeferred, succeed)
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.internet.task import LoopingCall, deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import (
    URI, Agent, HTTPConnectionPool, PotentialDataLoss, RequestGenerationFailed, RequestNotSent,
    RequestTransmissionFailed, ResponseDone, ResponseNeverReceived)
from twisted.web.error import SchemeNotSupported
from twisted.web.iweb import IAgentEndpointFactory, IBodyProducer, IPolicyForHTTPS, IResponse
from zope.interface import implementer

from meteord.exporter.policy import (
    FailureAccount, FailureDecision, FailurePolicy, RateLimiter, request_timeout)
from meteord.exporter.protocol import (
    MAX_ROUND_TRIPS, Done, EntityFailed, ExportProtocol, SendCachedEntity, SendEntity,
    SendStatus, TransportFailed, UploadFile)
from meteord.exporter.tls import TLS_REFUSALS, CAFileUnreadable, https_policy
from meteord.model import (
    ExportConfiguration, ExportStatus, ExportTask, FileRecord, datetime_to_ms,
    ms_to_datetime)
from meteord.store.files import FileNotStored
from meteord.wire import ENTITY_HEADER

log = Logger()

DEFAULT_LEASE_SECONDS = 3600.0
LEASE_MARGIN_SECONDS = 5.0
REPLY_LIMIT_BYTES = 1024 * 1024
UPLOAD_CHUNK_BYTES = 256 * 1024


@attrs.define
class ExportCounters:
    """What one export configuration's exports did since this service started."""

    attempts: int = 0
    successes: int = 0
    entity_failures: int = 0
    transport_failures: int = 0
    bytes_sent: int = 0
    round_trips: int = 0
    retried_requests: int = 0
    leases_lost: int = 0


class _EntityProblem(Exception):
    """Something on this node stops this entity from being exported (an entity failure)."""


class _TransportProblem(Exception):
    """A round trip failed in transport: connection, timeout or a cut-off exchange."""


class _Stopping(Exception):
    """The service is stopping; the task goes back unchanged."""


class _LeaseLost(Exception):
    """The task's lease ran out or was refused: the task is left to whoever holds it now."""


class _StaleConnection(Exception):
    """The connection was lost before any response; worth one more try."""


class _CorruptFile(Exception):
    """A stored file's bytes do not match its record."""


@implementer(IBodyProducer)
class _BytesBody:
    """A request body already in memory (a JSON message)."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer: Any) -> Deferred[None]:
        consumer.write(self._data)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


@implementer(IBodyProducer)
class _FileBody:
    """
    Streams the file of `record` from `file_store`, reading and hashing it in the file store's
    threads a chunk ahead of what it sends, and checking it against the record's sha256, or its
    md5 when it has none, as it goes (the last chunk is sent only once the file has ended there
    and the digest matches), throttled by `limiter` on `clock`; `on_throttle` is told every
    wait, so the request's timeout can be extended by it. `open` comes first.
    """

    def __init__(self, file_store: Any, record: FileRecord, clock: IReactorTime,
                 limiter: Optional[RateLimiter], on_throttle: Callable[[float], None]) -> None:
        self._file: Any = None
        self._first: tuple[bytes, bool] = (b"", False)
        self._file_store = file_store
        self._producing = False
        self._record = record
        self.length = record.file_size
        self._clock = clock
        self._limiter = limiter
        self._on_throttle = on_throttle
        self._paused: Optional[Deferred[None]] = None
        self._waiting: Optional[Deferred[Any]] = None
        self._stopped = False
        if record.sha256 is not None:
            self._algorithm, self._expected = "sha256", record.sha256
            self._digest = hashlib.sha256()
        else:
            self._algorithm, self._expected = "md5", record.md5
            self._digest = hashlib.md5(usedforsecurity=False)
        self.sent = 0

    async def open(self) -> int:
        """
        Open the file and read its first chunk, in one trip to the file store's threads;
        returns the file's size on disk. Fails with `FileNotStored` when the store has
        no bytes for it, or with `OSError` when the disk refuses them.
        """
        size = self._chunk_size(0)
        self._file, on_disk, chunk = await self._file_store.open_and_read(
            self._record.file_id, size, self._digest)
        self._first = (chunk, len(chunk) < size)
        return on_disk

    def startProducing(self, consumer: Any) -> Deferred[None]:
        finished: Deferred[None] = Deferred()

        def done(result: Any) -> None:
            # After stopProducing, the Deferred must never fire (IBodyProducer).
            if self._stopped:
                return
            if isinstance(result, Failure):
                finished.errback(result)
            else:
                finished.callback(None)

        Deferred.fromCoroutine(self._produce(consumer)).addBoth(done)
        return finished

    async def _produce(self, consumer: Any) -> None:
        self._producing = True
        reading: Deferred[tuple[bytes, bool]] = succeed(self._first)
        # Not held once sent: a chunk kept by each of 16 uploads under way is 4 MiB.
        self._first = (b"", False)
        try:
            while True:
                chunk, at_end = await reading
                if self._stopped:
                    return
                end = self.sent + len(chunk)
                # A short read ends at the end of the file. Otherwise the next chunk is read
                # while this one is sent; after the recorded length, it must find the end.
                last = at_end or end >= self.length
                if not at_end:
                    reading = self._read(end)
                if last:
                    if not at_end:
                        end += len((await reading)[0])
                    self._check(end)
                    if not chunk:
                        return
                await self._throttle(len(chunk))
                if self._paused is not None:
                    await self._wait(self._paused)
                if self._stopped:
                    return
                consumer.write(chunk)
                self.sent += len(chunk)
                if last:
                    return
        finally:
            # Closed once no read is under way in a thread.
            reading.addBoth(lambda _: self._file.close())

    def _chunk_size(self, position: int) -> int:
        """
        The bytes to ask for at `position`: no more than one beyond the recorded length, so a
        small file's buffer is no larger than the file.
        """
        return min(UPLOAD_CHUNK_BYTES, max(self.length - position, 0) + 1)

    def _read(self, position: int) -> Deferred[tuple[bytes, bool]]:
        """
        The chunk at `position` (where the previous one ended), added to the digest, and
        whether it was short, which ends the file.
        """
        size = self._chunk_size(position)
        return self._file_store.read(self._file, size, self._digest).addCallback(
            lambda chunk: (chunk, len(chunk) < size))

    def _check(self, size: int) -> None:
        record = self._record
        digest = self._digest.hexdigest()
        if size != record.file_size or digest != self._expected.lower():
            raise _CorruptFile(
                f"file {record.file_id} on this node no longer matches its record "
                f"({self._algorithm} {digest}, {size} bytes; recorded {self._algorithm} "
                f"{self._expected}, {record.file_size} bytes); not sent")

    async def _throttle(self, nbytes: int) -> None:
        if self._limiter is None:
            return
        delay = self._limiter.delay_for(nbytes, self._clock.seconds())
        if delay > 0:
            self._on_throttle(delay)
            await self._wait(deferLater(self._clock, delay))

    async def _wait(self, d: Deferred[Any]) -> None:
        self._waiting = d
        try:
            await d
        finally:
            self._waiting = None

    def pauseProducing(self) -> None:
        if self._paused is None:
            self._paused = Deferred()

    def resumeProducing(self) -> None:
        paused, self._paused = self._paused, None
        if paused is not None:
            paused.callback(None)

    def stopProducing(self) -> None:
        self._stopped = True
        if self._waiting is not None:
            self._waiting.cancel()

    def close(self) -> None:
        """
        Stop, and close the file whether or not producing ever started (once a read in a
        thread is over, if one is under way).
        """
        self.stopProducing()
        if not self._producing:
            self._file.close()


class _ReplyReader(Protocol):
    """Reads a reply body up to `limit` bytes; cancelling `finished` drops the connection."""

    def __init__(self, limit: int) -> None:
        self.finished: Deferred[bytes] = Deferred(self._cancel)
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0

    def dataReceived(self, data: bytes) -> None:
        if self.finished.called:
            return
        self._chunks.append(data[:self._limit - self._size])
        self._size += len(data)
        if self._size >= self._limit:
            self.transport.stopProducing()
            self.finished.callback(b"".join(self._chunks))

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        if self.finished.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(b"".join(self._chunks))
        else:
            self.finished.errback(reason)

    def _cancel(self, d: Deferred[bytes]) -> None:
        if self.transport is not None:
            self.transport.stopProducing()


def _read_reply(response: IResponse, limit: int = REPLY_LIMIT_BYTES) -> Deferred[bytes]:
    reader = _ReplyReader(limit)
    response.deliverBody(reader)
    return reader.finished


class _Lease:
    """
    The lease of `task`, claimed for `seconds`, while it is exported: `end` is when it runs
    out on `clock`, less the margin. Every half lease `store` is asked for another full lease;
    when it gives one, `end` moves and the `deadline` of the request under way with it, and
    when it refuses, `end` is now. `release` stops the renewals once the export is over.
    """

    def __init__(self, clock: IReactorTime, store: Any, task: ExportTask,
                 seconds: float) -> None:
        self._clock = clock
        self._store = store
        self._task = task
        self._seconds = seconds
        self.end = clock.seconds() + seconds - LEASE_MARGIN_SECONDS
        self.deadline: Optional[_Deadline] = None
        self._held = True
        self._call = clock.callLater(seconds / 2, self._renewing)

    def _renewing(self) -> None:
        asked = self._clock.seconds()
        renewed = maybeDeferred(self._store.renew_export_task, self._task.task_id,
                                self._task.attempts, self._seconds)
        renewed.addCallbacks(self._renewed, self._not_renewed, callbackArgs=(asked,))

    def _renewed(self, extended: bool, asked: float) -> None:
        if not self._held:
            return
        if extended:
            self.end = asked + self._seconds - LEASE_MARGIN_SECONDS
            self._call = self._clock.callLater(self._seconds / 2, self._renewing)
        else:
            # The lease is not this exporter's any more: stop now.
            self.end = self._clock.seconds()
        if self.deadline is not None:
            self.deadline.reschedule()

    def _not_renewed(self, failure: Failure) -> None:
        if not self._held:
            return
        task = self._task
        log.failure("export {config_id}: {kind} {entity_id}: the lease renewal failed",
                    failure, config_id=task.config_id, kind=task.kind,
                    entity_id=task.entity_id)
        remaining = self.end - self._clock.seconds()
        if remaining > 2.0:
            self._call = self._clock.callLater(remaining / 2, self._renewing)

    def release(self) -> None:
        self._held = False
        if self._call.active():
            self._call.cancel()


class _Deadline:
    """
    The timer of one request: it cancels `watched` when the timeout (extendable by
    throttling) or the task's `lease` runs out, whichever comes first, and says which it was.
    """

    def __init__(self, clock: IReactorTime, timeout: float, lease: _Lease) -> None:
        self._clock = clock
        self.watched: Optional[Deferred[Any]] = None
        self.timeout = timeout
        self._timeout_at = clock.seconds() + timeout
        self._lease = lease
        self.expired: Optional[str] = None
        self._call = clock.callLater(self._remaining(), self._expire)

    def _remaining(self) -> float:
        return max(0.0, min(self._timeout_at, self._lease.end) - self._clock.seconds())

    def extend(self, seconds: float) -> None:
        self.timeout += seconds
        self._timeout_at += seconds
        self.reschedule()

    def reschedule(self) -> None:
        """Move the timer to the timeout or the lease's end, whichever is now sooner."""
        if self._call.active():
            self._call.reset(self._remaining())

    def _expire(self) -> None:
        self.expired = "lease" if self._lease.end <= self._timeout_at else "timeout"
        if self.watched is not None:
            self.watched.cancel()

    def cancel(self) -> None:
        if self._call.active():
            self._call.cancel()


@implementer(IAgentEndpointFactory)
class _Endpoints:
    """
    The endpoint of each importer, made once and kept: `Agent` otherwise makes one for every
    request, IDNA-encoding the host name each time, which cost an exporting camera node about
    a twentieth of its CPU time. HTTPS endpoints verify TLS as `policy` says.
    """

    def __init__(self, reactor: Any, policy: IPolicyForHTTPS) -> None:
        self._reactor = reactor
        self._policy = policy
        self._endpoints: dict[tuple[bytes, bytes, int], Any] = {}

    def endpointForURI(self, uri: URI) -> Any:
        key = (uri.scheme, uri.host, uri.port)
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            if uri.scheme not in (b"http", b"https"):
                raise SchemeNotSupported(f"Unsupported scheme: {uri.scheme!r}")
            try:
                host = uri.host.decode("ascii")
            except UnicodeDecodeError:
                raise ValueError(f"the host of {uri.toBytes()!r} is not ASCII") from None
            endpoint = HostnameEndpoint(self._reactor, host, uri.port)
            if uri.scheme == b"https":
                endpoint = wrapClientTLS(self._policy.creatorForNetloc(uri.host, uri.port),
                                         endpoint)
            self._endpoints[key] = endpoint
        return endpoint


def build_http_client(reactor: Any, max_persistent_per_host: int,
                      policy: IPolicyForHTTPS) -> tuple[Any, HTTPConnectionPool]:
    """
    A treq `HTTPClient` over its own persistent `HTTPConnectionPool` (returned too, for its
    owner to close), verifying TLS by `policy` (see `meteord.exporter.tls.https_policy`).
    """
    from treq.client import HTTPClient

    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = max_persistent_per_host
    agent = Agent.usingEndpointFactory(reactor, _Endpoints(reactor, policy), pool=pool)
    return HTTPClient(agent), pool


class _URI(EncodedURL):
    """
    A URL whose text is in URI form already, so that it is its own `to_uri`: treq asks each
    request's URL for its URI form, and hyperlink works it out anew every time (70 µs here,
    four times an event).
    """

    def to_uri(self) -> _URI:
        return self


@functools.lru_cache(maxsize=64)
def _target(target_url: str) -> Union[str, EncodedURL]:
    """A configuration's `target_url` as treq is given it: a `_URI` when it is in URI form."""
    try:
        url = EncodedURL.from_text(target_url)
        if url.to_uri() == url:
            return _URI.from_text(target_url)
    except ValueError:
        pass
    return target_url


def _is_stale_connection(error: Exception) -> bool:
    """
    Whether a request failed because its connection went away before any response. Not when
    the TLS handshake was refused: a new connection would meet the same certificate.
    """
    if isinstance(error, RequestGenerationFailed):
        return False
    if any(isinstance(reason, Failure) and reason.check(*TLS_REFUSALS)
           for reason in getattr(error, "reasons", ())):
        return False
    return isinstance(error, (ResponseNeverReceived, RequestNotSent, RequestTransmissionFailed))


def _corrupt_file(error: Exception) -> Optional[_CorruptFile]:
    for reason in getattr(error, "reasons", ()):
        if isinstance(reason, Failure) and reason.check(_CorruptFile):
            return reason.value
    return None


def _describe(error: Exception) -> str:
    reasons = getattr(error, "reasons", None)
    if reasons:
        inner = "; ".join(r.getErrorMessage() if isinstance(r, Failure) else str(r)
                          for r in reasons)
        return f"{type(error).__name__}: {inner}"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _basic_auth(user_id: str, password: str) -> bytes:
    token = base64.b64encode(f"{user_id}:{password}".encode("utf-8"))
    return b"Basic " + token


def _ms(value: Any) -> Optional[int]:
    return None if value is None else datetime_to_ms(value)


@attrs.define
class _ConfigRound:
    """One configuration's part of a round: what it may still claim, and whether it halted."""

    config: ExportConfiguration
    remaining: int
    lock: DeferredLock
    halted: bool = False
    claimed: int = 0


Body = Union[_BytesBody, _FileBody]

# The TLS settings of a configuration, as (ca_file, pinned_certificates); one client each.
_TLSKey = tuple[Optional[str], Optional[tuple[str, ...]]]
_DEFAULT_TLS: _TLSKey = (None, None)


def _tls_key(config: ExportConfiguration) -> _TLSKey:
    return (config.ca_file, config.pinned_certificates)


class ExporterService(Service):
    """
    Pushes every enabled export configuration's tasks to its importer (replication.md).

    `clock` is the reactor (or a `task.Clock` in tests). `http_client`, when given, serves the
    configurations without TLS settings of their own and belongs to its caller; every other
    client is built by the service over its own connection pool on `clock` (the default one
    verifying against `ca_file` when given) and closed when it stops. `counters` holds an
    `ExportCounters` per configuration id; `rounds` and `round_errors` count rounds and the
    failures a round caught.
    """

    name = "exporter"

    def __init__(self, store: Any, clock: IReactorTime, http_client: Any = None, *,
                 mark_interval: float = 300.0, concurrency: int = 4, batch_size: int = 100,
                 failure_policy: FailurePolicy = FailurePolicy(),
                 lease_seconds: float = DEFAULT_LEASE_SECONDS,
                 max_round_trips: int = MAX_ROUND_TRIPS, ca_file: Optional[str] = None) -> None:
        if concurrency < 1 or batch_size < 1:
            raise ValueError("concurrency and batch_size must be at least 1")
        if lease_seconds <= 2 * LEASE_MARGIN_SECONDS:
            # Renewed at half its length, a lease must then still have its margin to run.
            raise ValueError(f"lease_seconds must exceed {2 * LEASE_MARGIN_SECONDS:g}")
        self.store = store
        self._clock = clock
        self._injected_client = http_client
        self._clients: dict[_TLSKey, Any] = {}
        self._pools: dict[_TLSKey, HTTPConnectionPool] = {}
        self.mark_interval = mark_interval
        self.concurrency = concurrency
        self.batch_size = batch_size
        self.failure_policy = failure_policy
        self.lease_seconds = lease_seconds
        self.max_round_trips = max_round_trips
        self._ca_file = ca_file
        self.counters: dict[str, ExportCounters] = {}
        self.rounds = 0
        self.round_errors = 0
        self._limiters: dict[str, RateLimiter] = {}
        self._loop: Optional[LoopingCall] = None
        self._loop_done: Optional[Deferred[Any]] = None
        self._in_flight: set[Deferred[Any]] = set()
        self._stopping = False

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        if self._injected_client is not None:
            self._clients[_DEFAULT_TLS] = self._injected_client
        else:
            self._add_client(_DEFAULT_TLS, https_policy(self._ca_file))
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self._clock
        self._loop_done = self._loop.start(self.mark_interval, now=True)

    async def _stop(self) -> None:
        self._stopping = True
        for d in list(self._in_flight):
            d.cancel()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._loop_done is not None:
            await self._loop_done
        pools = list(self._pools.values())
        self._pools.clear()
        self._clients.clear()
        await DeferredList([pool.closeCachedConnections() for pool in pools],
                           consumeErrors=True)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    def _add_client(self, key: _TLSKey, policy: IPolicyForHTTPS) -> Any:
        client, self._pools[key] = build_http_client(self._clock, self.concurrency, policy)
        self._clients[key] = client
        return client

    async def _client_for(self, config: ExportConfiguration) -> Any:
        """
        The client verifying TLS as `config` asks, made the first time (its CA file read in a
        thread); an unreadable CA file fails in transport.
        """
        key = _tls_key(config)
        client = self._clients.get(key)
        if client is not None:
            return client
        try:
            policy = await deferToThread(https_policy, *key)
        except CAFileUnreadable as e:
            raise _TransportProblem(str(e)) from None
        if self._stopping:
            raise _Stopping()
        # Another entity of the configuration may have made it meanwhile.
        return self._clients.get(key) or self._add_client(key, policy)

    def totals(self) -> ExportCounters:
        """The counters of every configuration added up."""
        total = ExportCounters()
        for counters in self.counters.values():
            for field in attrs.fields(ExportCounters):
                setattr(total, field.name,
                        getattr(total, field.name) + getattr(counters, field.name))
        return total

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    # rounds

    def _tick(self) -> Deferred[None]:
        d = Deferred.fromCoroutine(self._rounds())
        d.addErrback(self._round_failed, None)
        return d

    def _round_failed(self, failure: Failure, config_id: Optional[str]) -> int:
        self.round_errors += 1
        if config_id is None:
            log.failure("export round failed", failure)
        else:
            log.failure("export round failed for config {config_id}", failure,
                        config_id=config_id)
        return 0

    async def _rounds(self) -> None:
        while not self._stopping:
            self.rounds += 1
            if not await self._round():
                return

    async def _round(self) -> int:
        """One round over every enabled configuration; returns the tasks claimed."""
        configs = await self.store.get_export_configurations()
        runs = []
        for config in configs:
            if config.enabled:
                d = Deferred.fromCoroutine(self._config_round(config))
                runs.append(d.addErrback(self._round_failed, config.config_id))
        results = await DeferredList(runs, consumeErrors=True)
        return sum(claimed for ok, claimed in results if ok)

    async def _config_round(self, config: ExportConfiguration) -> int:
        config_id = config.config_id
        marked = await self.store.mark_entities_to_export(config)
        if marked:
            log.info("export {config_id}: {marked} new tasks", config_id=config_id,
                     marked=marked)
        status: Optional[ExportStatus] = await self.store.get_export_status(config_id)
        if status is None or not status.enabled:
            return 0
        now_ms = self._now_ms()
        deferred_until = _ms(status.deferred_until)
        if deferred_until is not None and now_ms < deferred_until:
            return 0
        if not config.in_window(now_ms):
            return 0
        run = _ConfigRound(config=config, remaining=self.batch_size, lock=DeferredLock())
        self.counters.setdefault(config_id, ExportCounters())
        workers = [Deferred.fromCoroutine(self._worker(run)) for _ in range(self.concurrency)]
        results = await DeferredList(workers, consumeErrors=True)
        for ok, result in results:
            if not ok:
                self._round_failed(result, config_id)
        return run.claimed

    async def _worker(self, run: _ConfigRound) -> None:
        config = run.config
        task: Optional[ExportTask] = None
        while True:
            if task is None:
                if not self._take_claim(run):
                    return
                task = self._claimed(run, await self.store.claim_export_tasks(
                    config.config_id, 1, self.lease_seconds))
                if task is None:
                    return
            try:
                task = await self._export(run, task)
            except Exception:
                self.round_errors += 1
                log.failure("export {config_id}: {kind} {entity_id} could not be finished",
                            config_id=config.config_id, kind=task.kind,
                            entity_id=task.entity_id)
                task = None

    def _take_claim(self, run: _ConfigRound) -> bool:
        """
        Whether a worker of `run` claims another task now; if so, it is counted against the
        round's batch at once, before the claim is made, so workers claiming together never
        go beyond it.
        """
        if (run.remaining > 0 and not run.halted and not self._stopping
                and run.config.in_window(self._now_ms())):
            run.remaining -= 1
            return True
        return False

    def _claimed(self, run: _ConfigRound, tasks: list[ExportTask]) -> Optional[ExportTask]:
        """The task a claim found; None, and no more claims this round, when it found none."""
        if not tasks:
            run.remaining = 0
            return None
        run.claimed += 1
        return tasks[0]

    # one entity

    async def _export(self, run: _ConfigRound, task: ExportTask) -> Optional[ExportTask]:
        """Export one task; the next task of `run`, when one was claimed as this one ended."""
        counters = self.counters[run.config.config_id]
        counters.attempts += 1
        protocol = ExportProtocol(task.kind, task.entity.to_dict(), self.max_round_trips)
        sent = 0
        action = protocol.start()
        lease = _Lease(self._clock, self.store, task, self.lease_seconds)
        try:
            while not isinstance(action, (Done, EntityFailed, TransportFailed)):
                try:
                    code, body, nbytes = await self._carry_out(run, task, action, lease)
                except _EntityProblem as e:
                    action = EntityFailed(str(e))
                    break
                except _TransportProblem as e:
                    action = protocol.on_transport_error(str(e))
                    continue
                sent += nbytes
                action = protocol.on_reply(code, body)
        except _Stopping:
            lease.release()
            await self.store.release_export_task(task.task_id)
            log.info("export {config_id}: {kind} {entity_id} given back, the exporter is "
                     "stopping", config_id=run.config.config_id, kind=task.kind,
                     entity_id=task.entity_id)
            return None
        except _LeaseLost:
            counters.leases_lost += 1
            log.warn("export {config_id}: {kind} {entity_id}: its lease ran out or was "
                     "refused; left to whoever holds it now", config_id=run.config.config_id,
                     kind=task.kind, entity_id=task.entity_id)
            return None
        finally:
            lease.release()
            counters.round_trips += protocol.round_trips
        if isinstance(action, Done):
            return await self._succeeded(run, task, sent, protocol.round_trips)
        if isinstance(action, EntityFailed):
            await self._entity_failed(run, task, action.reason)
        else:
            await self._transport_failed(run, task, action.reason)
        return None

    async def _carry_out(self, run: _ConfigRound, task: ExportTask, action: Any,
                         lease: _Lease) -> tuple[int, bytes, int]:
        """Send what `action` asks for; returns the reply's status, body and bytes sent."""
        config = run.config
        if isinstance(action, (SendEntity, SendCachedEntity)):
            data = json.dumps(action.body, separators=(",", ":")).encode("utf-8")
            return await self._post_json(run, task, data, lease)
        if isinstance(action, SendStatus):
            status = await self.store.get_camera_status_by_id(action.status_id)
            if status is None:
                raise _EntityProblem(
                    f"camera status {action.status_id} is not stored on this node")
            data = json.dumps({"type": "status", "status": status.to_dict()},
                              separators=(",", ":")).encode("utf-8")
            return await self._post_json(run, task, data, lease)
        assert isinstance(action, UploadFile)
        record = _file_record(task, action.file_id)
        url: Union[str, EncodedURL] = (
            f"{config.target_url.rstrip('/')}/data/{action.file_id}/{action.md5}")
        if isinstance(_target(config.target_url), _URI):
            url = _URI.from_text(url)

        async def open_body(deadline_extend: Callable[[float], None]) -> Body:
            body = _FileBody(self.store.file_store, record, self._clock,
                             self._limiter(config), deadline_extend)
            try:
                size = await body.open()
            except FileNotStored:
                raise _EntityProblem(
                    f"file {action.file_id} has no bytes on this node") from None
            except OSError as e:
                raise _EntityProblem(
                    f"file {action.file_id} cannot be read on this node "
                    f"({e.strerror or e})") from None
            if size != record.file_size:
                body.close()
                raise _EntityProblem(
                    f"file {action.file_id} on this node has {size} bytes, its record "
                    f"{record.file_size}; not sent")
            return body

        code, body = await self._post(run, task, url, b"application/octet-stream", open_body,
                                      request_timeout(record.file_size), lease,
                                      entity_id=task.entity_id)
        return code, body, record.file_size

    async def _post_json(self, run: _ConfigRound, task: ExportTask, data: bytes,
                         lease: _Lease) -> tuple[int, bytes, int]:
        async def open_body(deadline_extend: Callable[[float], None]) -> Body:
            return _BytesBody(data)

        code, body = await self._post(run, task, _target(run.config.target_url),
                                      b"application/json",
                                      open_body, request_timeout(), lease)
        return code, body, len(data)

    async def _post(self, run: _ConfigRound, task: ExportTask, url: Union[str, EncodedURL],
                    content_type: bytes,
                    open_body: Callable[[Callable[[float], None]], Awaitable[Body]],
                    timeout: float, lease: _Lease,
                    entity_id: Optional[str] = None) -> tuple[int, bytes]:
        """
        POST with a timeout, once more if the connection was lost before any response; an
        upload names the entity it is for (`entity_id`) in the `ENTITY_HEADER`.
        """
        headers = {b"Content-Type": [content_type],
                   b"Authorization": [_basic_auth(run.config.user_id, run.config.password)]}
        if entity_id is not None:
            headers[ENTITY_HEADER.encode("ascii")] = [entity_id.encode("ascii")]
        try:
            return await self._exchange(run, url, headers, open_body, timeout, lease)
        except _StaleConnection as e:
            self.counters[run.config.config_id].retried_requests += 1
            log.info("export {config_id}: {kind} {entity_id}: {reason}; sending again",
                     config_id=run.config.config_id, kind=task.kind, entity_id=task.entity_id,
                     reason=str(e))
        try:
            return await self._exchange(run, url, headers, open_body, timeout, lease)
        except _StaleConnection as e:
            raise _TransportProblem(str(e)) from None

    async def _exchange(self, run: _ConfigRound, url: Union[str, EncodedURL],
                        headers: dict[bytes, list[bytes]],
                        open_body: Callable[[Callable[[float], None]], Awaitable[Body]],
                        timeout: float, lease: _Lease) -> tuple[int, bytes]:
        if self._stopping:
            raise _Stopping()
        config = run.config
        http = await self._client_for(config)
        deadlines: list[_Deadline] = []
        body = await open_body(lambda seconds: deadlines[0].extend(seconds))
        lost = lease.end <= self._clock.seconds()
        if self._stopping or lost:
            if isinstance(body, _FileBody):
                body.close()
            raise _LeaseLost() if lost else _Stopping()
        deadline = _Deadline(self._clock, timeout, lease)
        deadlines.append(deadline)
        lease.deadline = deadline

        async def round_trip() -> tuple[int, bytes]:
            # Not buffered: _read_reply reads the body, bounded. No redirects: the importer's
            # URL is configured as it is, and a streamed upload could not be sent again.
            response = await http.post(url, data=body, headers=headers, allow_redirects=False,
                                       unbuffered=True)
            return response.code, await _read_reply(response)

        d = Deferred.fromCoroutine(round_trip())
        deadline.watched = d
        self._in_flight.add(d)
        try:
            return await d
        except Exception as e:
            if deadline.expired == "lease":
                raise _LeaseLost() from None
            if deadline.expired == "timeout":
                raise _TransportProblem(
                    f"no complete reply within {deadline.timeout:g} s") from None
            if self._stopping:
                raise _Stopping() from None
            corrupt = _corrupt_file(e)
            if corrupt is not None:
                raise _EntityProblem(str(corrupt)) from None
            if isinstance(e, CancelledError):
                raise
            if _is_stale_connection(e):
                raise _StaleConnection(
                    f"connection lost before any response ({_describe(e)})") from None
            raise _TransportProblem(_describe(e)) from None
        finally:
            deadline.cancel()
            lease.deadline = None
            self._in_flight.discard(d)
            if isinstance(body, _FileBody):
                body.close()

    def _limiter(self, config: ExportConfiguration) -> Optional[RateLimiter]:
        rate = config.max_bytes_per_second
        if rate is None:
            self._limiters.pop(config.config_id, None)
            return None
        limiter = self._limiters.get(config.config_id)
        if limiter is None or limiter.rate != rate:
            limiter = self._limiters[config.config_id] = RateLimiter(rate)
        return limiter

    # outcomes

    async def _succeeded(self, run: _ConfigRound, task: ExportTask, sent: int,
                         round_trips: int) -> Optional[ExportTask]:
        """
        Mark the task done (which resets the stored failure count), with the claim of the
        worker's next task in the same trip to the store when it takes one; that task.
        """
        config_id = run.config.config_id
        next_task = None
        if self._take_claim(run):
            next_task = self._claimed(run, await self.store.complete_and_claim_export_tasks(
                task.task_id, sent, config_id, 1, self.lease_seconds))
        else:
            await self.store.complete_export_task(task.task_id, sent)
        counters = self.counters[config_id]
        counters.successes += 1
        counters.bytes_sent += sent
        log.debug("export {config_id}: {kind} {entity_id} complete after {round_trips} round "
                  "trips, {sent} bytes", config_id=config_id, kind=task.kind,
                  entity_id=task.entity_id, round_trips=round_trips, sent=sent)
        return next_task

    async def _entity_failed(self, run: _ConfigRound, task: ExportTask, reason: str) -> None:
        config_id = run.config.config_id
        self.counters[config_id].entity_failures += 1
        await self.store.fail_export_task(task.task_id, reason)
        log.warn("export {config_id}: {kind} {entity_id} failed: {reason}",
                 config_id=config_id, kind=task.kind, entity_id=task.entity_id, reason=reason)

    async def _transport_failed(self, run: _ConfigRound, task: ExportTask, reason: str) -> None:
        config_id = run.config.config_id
        self.counters[config_id].transport_failures += 1
        run.halted = True
        async with run.lock:
            counted = await self._count_transport_failure(run, reason)
            if counted is None:
                await self.store.release_export_task(task.task_id)
                return
            decision, now_ms = counted
            await self.store.release_export_task(task.task_id)
            await self.store.defer_export_tasks(
                config_id, max(0.0, (decision.defer_until_ms - now_ms) / 1000))
        if decision.disable:
            log.error("export {config_id} disabled: {reason}", config_id=config_id,
                      reason=decision.reason)
        elif decision.counted:
            log.warn("export {config_id}: {kind} {entity_id}: transport failure "
                     "{failures} of {limit} ({reason}); tasks deferred until {until}",
                     config_id=config_id, kind=task.kind, entity_id=task.entity_id,
                     failures=decision.account.consecutive_failures,
                     limit=self.failure_policy.max_failures_before_disable, reason=reason,
                     until=ms_to_datetime(decision.defer_until_ms).isoformat())
        else:
            log.info("export {config_id}: {kind} {entity_id}: transport failure during the "
                     "same outage ({reason})", config_id=config_id, kind=task.kind,
                     entity_id=task.entity_id, reason=reason)

    async def _count_transport_failure(self, run: _ConfigRound, reason: str
                                       ) -> Optional[tuple[FailureDecision, int]]:
        """
        Decide on a transport failure from the stored accounting and store what it comes
        to, if neither the count nor the enabled flag changed since they were read (else
        read and decide again: each time, another writer's change went through, so this
        ends). The decision and the time it was made at; None if the configuration is gone.
        """
        config_id = run.config.config_id
        while True:
            now_ms = self._now_ms()
            status = await self.store.get_export_status(config_id)
            if status is None:
                return None
            account = FailureAccount(status.consecutive_failures, _ms(status.deferred_until))
            decision = account.transport_failure(self.failure_policy, reason, now_ms)
            if not decision.counted:
                return decision, now_ms
            outcome = attrs.evolve(
                status.outcome(),
                consecutive_failures=decision.account.consecutive_failures,
                deferred_until=ms_to_datetime(decision.defer_until_ms),
                enabled=status.enabled and not decision.disable,
                disabled_reason=decision.reason if decision.disable else status.disabled_reason,
                last_error=reason, last_success=None)
            if await self.store.record_export_outcome(
                    config_id, outcome, if_unchanged=status.outcome()):
                return decision, now_ms


def _file_record(task: ExportTask, file_id: str) -> FileRecord:
    files = task.entity.files if task.kind == "event" else (task.entity,)
    for record in files:
        if record.file_id == file_id:
            return record
    raise _EntityProblem(f"file {file_id} is not part of this entity")


def make_exporter_service(config: Any, store: Any, reactor: Any) -> ExporterService:
    """The exporter as `[exporter]` of `config` describes it, for `make_service`."""
    section = config.exporter
    return ExporterService(
        store, reactor,
        mark_interval=section.mark_interval,
        concurrency=section.concurrency,
        batch_size=section.batch_size,
        failure_policy=FailurePolicy(
            defer_on_failure=section.defer_on_failure,
            max_failures_before_disable=section.max_failures_before_disable),
    )
