"""
UDP discovery: the datagram protocol and the service that announces this node and keeps the
registry of the others.

The beacon codec (`meteord.protocols.beacon`) and the registry (`meteord.protocols.registry`)
decide everything; this module feeds them datagrams and the clock, sends what they call for,
counts every outcome for the metrics layer, and persists the registry through an injected
`INodeRegistryStore`.

Choices where the specification is silent:

- The first announcement goes out one interval after the start: the start-up `probe` already
  describes the node, and listeners record it.
- Every datagram gets its own `seq`, so an announcement sent to the broadcast address and to
  two targets uses three consecutive numbers. A listener that hears two copies out of order
  drops the older one as a `replay`, which is harmless.
- Targets are IPv4 addresses or host names; names are resolved at the start (the probe goes to
  each name once it resolves) and again at every announcement, and the `bye` at shutdown goes
  to the addresses last resolved. The listening socket is IPv4.
- Probe replies are limited per source address and port (several nodes may share a host), at
  most one a second each.
- Log lines about dropped datagrams (debug) and about send, store and resolve errors and
  paused reading (warnings) are limited to one per reason per `LOG_PERIOD` seconds, and say
  how many were not logged in between.
- Sending to 255.255.255.255 needs a route for it (on Linux, a default route or a route to
  255.255.255.255); without one every announcement there fails, is counted in `send_errors`,
  and the unicast targets still get theirs.
- "A flood must not starve the HTTP API" is met by not reading one: the port reads at most
  `max_datagrams_per_second` (default 1,000; 1,024 nodes announcing every 10 s send about
  100/s), a quarter second's worth at once, at most 8 per reactor wake-up (about 0.2 ms of
  work, so HTTP requests wait little behind them). Past that budget it stops reading until the
  budget holds 32 again (a sustained flood costs about 30 pauses a second; shorter pauses cost
  more CPU), and the excess waits in, or overflows, the kernel's socket buffer at no cost to the
  reactor. The trade-off, chosen so that the HTTP API keeps priority: during a flood valid
  beacons are lost like the junk, so nodes may go offline (3 missed intervals) until it ends.
  On Linux the datagrams the kernel dropped are counted as `socket_buffer_full` (SO_RXQ_OVFL)
  when the next datagram is read.
"""

from __future__ import annotations

import secrets
import socket
import sys
from collections import Counter
from typing import Any, Iterable, Sequence

import attrs
from twisted.application.service import Service
from twisted.internet import defer, udp
from twisted.internet.abstract import isIPAddress
from twisted.internet.defer import Deferred
from twisted.internet.error import MessageLengthError
from twisted.internet.interfaces import IDelayedCall, IReactorFDSet, IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from meteord import __version__
from meteord.config import parse_target
from meteord.interfaces import INodeRegistryStore
from meteord.protocols.beacon import (
    DEFAULT_PORT,
    KIND_ANNOUNCE,
    KIND_BYE,
    KIND_PROBE,
    MAX_DATAGRAM_BYTES,
    REASON_SOCKET_BUFFER_FULL,
    Beacon,
    BeaconRejected,
    decode_beacon,
    encode_beacon,
)
from meteord.protocols.registry import DEFAULT_MAX_NODES, NodeRegistry

BROADCAST_ADDRESS = "255.255.255.255"
DEFAULT_INTERVAL = 10.0
#: Seconds between two replies to probes from the same source address and port.
PROBE_REPLY_GAP = 1.0
#: Seconds between two debug log lines about the same kind of problem.
LOG_PERIOD = 60.0
DEFAULT_MAX_DATAGRAMS_PER_SECOND = 1000
#: The burst the datagram budget allows, in seconds of its rate.
BURST_SECONDS = 0.25
#: Most datagrams read in one reactor wake-up, so that other sockets get their turn.
READS_PER_WAKEUP = 8
#: Datagrams the budget must allow again before a port paused by it reads again.
RESUME_AFTER = 32
_PROBE_TABLE_LIMIT = 1024
# SO_RXQ_OVFL (Linux >= 2.6.33) makes every datagram carry the socket's drop count; Python's
# socket module may not define the constant.
_SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40) if sys.platform.startswith("linux") else None
_DROP_COUNT_SPACE = socket.CMSG_SPACE(4) if _SO_RXQ_OVFL is not None else 0


@implementer(INodeRegistryStore)
@attrs.define
class MemoryNodeRegistryStore:
    """An L{INodeRegistryStore} in memory, for tests and until the real store provides one."""

    nodes: dict[str, dict[str, Any]] = attrs.field(factory=dict)

    def save_node(self, node: dict[str, Any]) -> Deferred[None]:
        """Keep a copy of C{node}."""
        self.nodes[node["node_id"]] = dict(node)
        return defer.succeed(None)

    def load_nodes(self) -> Deferred[list[dict[str, Any]]]:
        """Copies of every node kept."""
        return defer.succeed([dict(node) for node in self.nodes.values()])


@attrs.define
class DiscoveryCounters:
    """
    What discovery has done since the start, for the metrics layer.

    @ivar accepted: datagrams accepted into the registry.
    @ivar dropped: datagrams dropped, by reason (the C{REASON_*} constants of
        L{meteord.protocols.beacon}, all listed in its C{DROP_REASONS}), including those the
        kernel dropped before they were read (C{socket_buffer_full}, Linux only).
    @ivar read_pauses: times the port stopped reading because the datagram budget was spent.
    @ivar sent: datagrams sent.
    @ivar send_errors: datagrams that could not be sent (no route to 255.255.255.255, say).
    @ivar probe_replies: announcements sent in reply to a probe.
    @ivar probe_replies_limited: probes left unanswered by the rate limit.
    @ivar store_errors: registry loads and saves that failed.
    @ivar resolve_errors: target host names that could not be resolved.
    @ivar loop_errors: announcement rounds that failed unexpectedly.
    """

    accepted: int = 0
    dropped: Counter[str] = attrs.field(factory=Counter)
    sent: int = 0
    send_errors: int = 0
    probe_replies: int = 0
    probe_replies_limited: int = 0
    read_pauses: int = 0
    store_errors: int = 0
    resolve_errors: int = 0
    loop_errors: int = 0


@attrs.frozen
class NodeIdentity:
    """What this node says about itself in its beacons."""

    node_id: str
    name: str
    roles: tuple[str, ...]
    http_port: int
    scheme: str
    version: str
    interval: float

    def beacon(self, kind: str, seq: int, boot: str, sent_at: int) -> Beacon:
        """This node's beacon of C{kind}."""
        return Beacon(
            kind=kind,
            node_id=self.node_id,
            name=self.name,
            roles=self.roles,
            http_port=self.http_port,
            scheme=self.scheme,
            version=self.version,
            seq=seq,
            boot=boot,
            sent_at=sent_at,
            interval=self.interval,
        )


@attrs.define
class _LogLimiter:
    """Allows one log line per key per C{period} seconds and counts the ones held back."""

    clock: IReactorTime
    period: float
    _last: dict[str, float] = attrs.field(factory=dict)
    _held: Counter[str] = attrs.field(factory=Counter)

    def allow(self, key: str) -> int | None:
        """C{None} to stay silent, else how many lines were held back since the last one."""
        now = self.clock.seconds()
        last = self._last.get(key)
        if last is not None and now - last < self.period:
            self._held[key] += 1
            return None
        self._last[key] = now
        return self._held.pop(key, 0)


@attrs.define
class DatagramBudget:
    """
    A token bucket: on average C{rate} datagrams a second, at most C{burst} at once. Only
    arithmetic on C{clock.seconds()}; a clock that jumps back refills nothing.
    """

    clock: IReactorTime
    rate: float
    burst: float
    _tokens: float = attrs.field(init=False)
    _updated: float = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._tokens = self.burst
        self._updated = self.clock.seconds()

    def available(self) -> int:
        """How many datagrams may be read now."""
        now = self.clock.seconds()
        if now > self._updated:
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        # A thousandth of a datagram short counts as whole: refills are float arithmetic on a
        # clock of about 1.7e9 s, whose resolution is a few tenths of a microsecond.
        return int(self._tokens + 1e-3)

    def spend(self, count: int = 1) -> None:
        """Use up C{count} of the datagrams L{available} allowed."""
        self._tokens -= count

    def seconds_until(self, count: int) -> float:
        """Seconds from the last L{available} until C{count} datagrams are available."""
        return max(0.0, (count - self._tokens) / self.rate)


class DiscoveryProtocol(DatagramProtocol):
    """
    Receives beacons into a L{NodeRegistry}, answers probes, sends this node's beacons, and
    saves registry changes to the store. One instance per start: its C{boot} and C{seq} are
    fresh random values.
    """

    log = Logger()

    def __init__(
        self,
        identity: NodeIdentity,
        registry: NodeRegistry,
        store: INodeRegistryStore,
        clock: IReactorTime,
        counters: DiscoveryCounters,
        secret: bytes | None = None,
    ) -> None:
        self.identity = identity
        self.registry = registry
        self.store = store
        self.clock = clock
        self.counters = counters
        self.secret = secret or None
        self.boot = secrets.token_hex(8)
        self.seq = secrets.randbits(32)
        self._probe_replied: dict[tuple[str, int], float] = {}
        self._log_limiter = _LogLimiter(clock, LOG_PERIOD)
        self._saving: set[Deferred[None]] = set()

    def now_ms(self) -> int:
        """The clock in ms since the epoch."""
        return int(self.clock.seconds() * 1000)

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        """Judge one datagram: record its node, answer a probe, or count why it was dropped."""
        now_ms = self.now_ms()
        try:
            beacon = decode_beacon(datagram, now_ms, self.identity.node_id, self.secret)
            observation = self.registry.observe(beacon, addr[0], now_ms)
        except BeaconRejected as rejected:
            self.counters.dropped[rejected.reason] += 1
            held = self._log_limiter.allow(rejected.reason)
            if held is not None:
                self.log.debug(
                    "Discovery dropped a datagram from {address}: {why}"
                    " ({held} more of this kind not logged)",
                    address=addr[0],
                    why=str(rejected),
                    held=held,
                )
            return
        self.counters.accepted += 1
        if observation.new:
            self.log.info(
                "Discovered node {node_id} ({name}) at {address}",
                node_id=beacon.node_id,
                name=beacon.name,
                address=addr[0],
            )
        if observation.save is not None:
            self.save(observation.save)
        if beacon.kind == KIND_PROBE:
            self._answer_probe(addr)

    def kernel_dropped(self, count: int) -> None:
        """Count C{count} datagrams the kernel dropped before they could be read."""
        self.counters.dropped[REASON_SOCKET_BUFFER_FULL] += count
        held = self._log_limiter.allow(REASON_SOCKET_BUFFER_FULL)
        if held is not None:
            self.log.debug(
                "Discovery lost {count} datagrams in a full socket buffer"
                " ({held} more reports of this kind not logged)",
                count=count,
                held=held,
            )

    def reading_paused(self, rate: float) -> None:
        """Count and report that the port stopped reading to stay within C{rate} datagrams/s."""
        self.counters.read_pauses += 1
        self.log_problem(
            "budget",
            "Discovery receives more than {rate} datagrams/s: reading paused, excess dropped",
            rate=rate,
        )

    def _answer_probe(self, addr: tuple[str, int]) -> None:
        now = self.clock.seconds()
        last = self._probe_replied.get(addr)
        if last is not None and now - last < PROBE_REPLY_GAP:
            self.counters.probe_replies_limited += 1
            return
        if len(self._probe_replied) >= _PROBE_TABLE_LIMIT:
            self._probe_replied = {
                source: when
                for source, when in self._probe_replied.items()
                if now - when < PROBE_REPLY_GAP
            }
        self._probe_replied[addr] = now
        if self.send(KIND_ANNOUNCE, [addr]):
            self.counters.probe_replies += 1

    def send(self, kind: str, destinations: Iterable[tuple[str, int]]) -> int:
        """
        Send this node's beacon of C{kind} to each C{(ip, port)}, each with its own C{seq}.
        Send errors are counted and logged, never raised.

        @return: how many datagrams went out.
        """
        if self.transport is None:
            return 0
        sent = 0
        for destination in destinations:
            self.seq += 1
            beacon = self.identity.beacon(kind, self.seq, self.boot, self.now_ms())
            try:
                self.transport.write(encode_beacon(beacon, self.secret), destination)
            except (OSError, MessageLengthError) as e:
                self.counters.send_errors += 1
                self.log_problem(
                    "send",
                    "Discovery could not send to {destination}: {error}",
                    destination=f"{destination[0]}:{destination[1]}",
                    error=str(e),
                )
            else:
                sent += 1
        self.counters.sent += sent
        return sent

    def log_problem(self, key: str, text: str, **fields: object) -> None:
        """Log a warning, at most one per C{key} per L{LOG_PERIOD} seconds."""
        held = self._log_limiter.allow(key)
        if held is not None:
            self.log.warn(text + " ({held} more not logged)", held=held, **fields)

    def save(self, node: dict[str, Any]) -> None:
        """Write one node to the store; a failure is counted, logged and retried later."""
        saving = defer.maybeDeferred(self.store.save_node, node)
        self._saving.add(saving)

        def failed(failure: Failure) -> None:
            self.counters.store_errors += 1
            self.registry.save_failed(node["node_id"])
            self.log_problem(
                "store",
                "Discovery could not save node {node_id}: {error}",
                node_id=node["node_id"],
                error=failure.getErrorMessage(),
            )

        saving.addErrback(failed)
        saving.addBoth(lambda _: self._saving.discard(saving))

    def saves_done(self) -> Deferred[None]:
        """Fires when every save started so far has finished."""
        waiting = defer.DeferredList(list(self._saving))
        return waiting.addCallback(lambda _: None)


class BudgetedPort(udp.Port):
    """
    A UDP port for a L{DiscoveryProtocol} that reads at most L{READS_PER_WAKEUP} datagrams per
    wake-up and never more than its L{DatagramBudget} allows. When the budget is spent it stops
    reading until the budget allows L{RESUME_AFTER} again, leaving the excess to the kernel.
    On Linux, the datagrams the kernel dropped are reported to the protocol's C{kernel_dropped}
    when the next datagram is read; elsewhere they are not counted.
    """

    def __init__(
        self,
        port: int,
        protocol: DiscoveryProtocol,
        budget: DatagramBudget,
        clock: IReactorTime,
        reactor: IReactorFDSet,
        interface: str = "",
    ) -> None:
        super().__init__(port, protocol, interface, MAX_DATAGRAM_BYTES + 1, reactor)
        self.budget = budget
        self._clock = clock
        self._resume_at = min(RESUME_AFTER, max(1, int(budget.burst)))
        self._resuming: IDelayedCall | None = None
        self._counting_drops = False
        self._kernel_drops = 0

    def createInternetSocket(self) -> socket.socket:
        """The socket, asked to report its drop count where the system can."""
        skt: socket.socket = super().createInternetSocket()
        if _SO_RXQ_OVFL is not None:
            try:
                skt.setsockopt(socket.SOL_SOCKET, _SO_RXQ_OVFL, 1)
            except OSError:
                pass
            else:
                self._counting_drops = True
        return skt

    def doRead(self) -> None:
        """Hand the protocol what the budget allows, or pause until the budget has refilled."""
        allowed = min(READS_PER_WAKEUP, self.budget.available())
        if not allowed:
            self.stopReading()
            if self._resuming is None:
                self._resuming = self._clock.callLater(
                    self.budget.seconds_until(self._resume_at), self._resume
                )
                self.protocol.reading_paused(self.budget.rate)
            return
        for _ in range(allowed):
            try:
                data, addr = self._receive()
            except OSError as e:
                # As udp.Port.doRead: nothing left to read, or an ICMP error about a write.
                if e.errno in udp._sockErrReadIgnore or e.errno in udp._sockErrReadRefuse:
                    return
                raise
            self.budget.spend()
            try:
                self.protocol.datagramReceived(data, addr)
            except BaseException:
                self.protocol.log.failure("Discovery failed to handle a datagram")

    def _receive(self) -> tuple[bytes, tuple[str, int]]:
        if not self._counting_drops:
            data, addr = self.socket.recvfrom(self.maxPacketSize)
            return data, addr[:2]
        data, ancillary, _, addr = self.socket.recvmsg(self.maxPacketSize, _DROP_COUNT_SPACE)
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == _SO_RXQ_OVFL:
                total = int.from_bytes(value[:4], sys.byteorder)
                if total != self._kernel_drops:
                    # The count is the socket's total so far, an unsigned 32-bit number.
                    dropped, self._kernel_drops = (total - self._kernel_drops) % 2**32, total
                    try:
                        self.protocol.kernel_dropped(dropped)
                    except Exception:
                        self.protocol.log.failure("Discovery failed to count kernel drops")
        # (host, port) as udp.Port.doRead gives, without IPv6's flow and scope ids.
        return data, addr[:2]

    def _resume(self) -> None:
        self._resuming = None
        self.startReading()

    def stopListening(self) -> Deferred[None] | None:
        """Close the port, and forget a pending resumption of reading."""
        if self._resuming is not None:
            self._resuming.cancel()
            self._resuming = None
        stopped: Deferred[None] | None = super().stopListening()
        return stopped


class DiscoveryService(Service):
    """
    Announces this node on the LAN and keeps the registry of the nodes it hears.

    Attributes read by the rest of the daemon: C{registry} (a L{NodeRegistry}), C{counters}
    (a L{DiscoveryCounters}), L{nodes} for C{GET /api/nodes}, and L{listening_port}.
    """

    log = Logger()

    def __init__(
        self,
        *,
        reactor: IReactorFDSet,
        node_id: str,
        name: str,
        roles: Sequence[str],
        http_port: int,
        scheme: str = "http",
        version: str = __version__,
        port: int = DEFAULT_PORT,
        interval: float = DEFAULT_INTERVAL,
        targets: Sequence[str] = (),
        secret: str | bytes | None = None,
        max_nodes: int = DEFAULT_MAX_NODES,
        max_datagrams_per_second: int = DEFAULT_MAX_DATAGRAMS_PER_SECOND,
        clock: IReactorTime | None = None,
        store: INodeRegistryStore | None = None,
        interface: str = "",
        broadcast: bool = True,
    ) -> None:
        """
        @param reactor: runs the UDP socket (L{IReactorFDSet}) and provides C{resolve}; also
            the clock unless C{clock}.
        @param secret: the network secret; empty or C{None} turns signing off.
        @param max_datagrams_per_second: the budget of datagrams read, a quarter second's worth
            at once; the kernel drops the excess.
        @param interface: the IPv4 address to listen on, all by default.
        @param broadcast: whether to send to 255.255.255.255 as well as the targets.
        @raise ValueError: a setting that would produce beacons listeners drop, or a
            malformed target.
        """
        self.identity = NodeIdentity(
            node_id=node_id,
            name=name,
            roles=tuple(roles),
            http_port=http_port,
            scheme=scheme,
            version=version,
            interval=float(interval),
        )
        encode_beacon(self.identity.beacon(KIND_ANNOUNCE, 0, "0", 0))
        if max_datagrams_per_second < 1:
            raise ValueError("max_datagrams_per_second must be at least 1")
        self._max_datagrams_per_second = max_datagrams_per_second
        self._targets = [parse_target(target) for target in targets]
        if isinstance(secret, str):
            secret = secret.encode("utf-8")
        self._secret = secret or None
        self._reactor = reactor
        self._clock = clock if clock is not None else reactor
        self.store = store if store is not None else MemoryNodeRegistryStore()
        self._port = port
        self._interface = interface
        self._broadcast = broadcast
        self.registry = NodeRegistry(max_nodes=max_nodes)
        self.counters = DiscoveryCounters()
        self.protocol: DiscoveryProtocol | None = None
        self._listening: BudgetedPort | None = None
        self._loop: LoopingCall | None = None
        self._resolved: dict[str, str] = {}
        # What stopping waits for (the registry's load) or cancels (name lookups).
        self._loading: Deferred[None] | None = None
        self._resolving: set[Deferred[Any]] = set()

    @property
    def listening_port(self) -> int | None:
        """The UDP port actually bound (useful when configured as 0), or C{None} if stopped."""
        if self._listening is None:
            return None
        port: int = self._listening.getHost().port
        return port

    def nodes(self) -> list[dict[str, Any]]:
        """The registry in the shape of the C{"nodes"} list of C{GET /api/nodes}."""
        return self.registry.nodes_json(int(self._clock.seconds() * 1000))

    def startService(self) -> None:
        """Listen, load the saved registry, send a probe and start announcing."""
        protocol = DiscoveryProtocol(
            self.identity, self.registry, self.store, self._clock, self.counters, self._secret
        )
        rate = self._max_datagrams_per_second
        budget = DatagramBudget(self._clock, rate, max(1, int(rate * BURST_SECONDS)))
        listening = BudgetedPort(
            self._port, protocol, budget, self._clock, self._reactor, self._interface
        )
        listening.startListening()
        listening.setBroadcastAllowed(True)
        self._listening = listening
        self.protocol = protocol
        Service.startService(self)
        self._load_registry()
        protocol.send(KIND_PROBE, self._destinations())
        self._resolve_targets()
        self._loop = LoopingCall(self._announce)
        self._loop.clock = self._clock
        self._loop.start(self.identity.interval, now=False)

    def stopService(self) -> Deferred[None]:
        """Stop announcing, say C{bye}, save what is pending, close the port, wait for saves."""
        Service.stopService(self)
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        protocol, self.protocol = self.protocol, None
        listening, self._listening = self._listening, None
        if protocol is None or listening is None:
            return defer.succeed(None)
        protocol.send(KIND_BYE, self._destinations(listening.getHost().port))
        for node in self.registry.due_saves(protocol.now_ms(), everything=True):
            protocol.save(node)
        for resolving in list(self._resolving):
            resolving.cancel()
        closed = defer.maybeDeferred(listening.stopListening)
        waiting = defer.gatherResults(
            [closed, protocol.saves_done(), self._loading or defer.succeed(None)],
            consumeErrors=True)
        return waiting.addCallback(lambda _: None)

    def _load_registry(self) -> None:
        def loaded(stored_nodes: list[dict[str, Any]]) -> None:
            count, skipped = self.registry.load(stored_nodes)
            self.log.info(
                "Discovery registry loaded: {count} nodes, {skipped} skipped",
                count=count,
                skipped=skipped,
            )

        def failed(failure: Failure) -> None:
            self.counters.store_errors += 1
            self.log.failure("Discovery could not load the saved registry", failure)

        self._loading = defer.maybeDeferred(self.store.load_nodes).addCallbacks(loaded, failed)

    def _destinations(self, own_port: int | None = None) -> list[tuple[str, int]]:
        if own_port is None:
            own_port = self.listening_port or self._port
        destinations = [(BROADCAST_ADDRESS, own_port)] if self._broadcast else []
        for host, port in self._targets:
            address = host if isIPAddress(host) else self._resolved.get(host)
            if address is not None:
                destinations.append((address, port or own_port))
        return destinations

    def _resolve_targets(self) -> None:
        for host, port in self._targets:
            if isIPAddress(host):
                continue
            resolving = defer.maybeDeferred(self._reactor.resolve, host)
            self._resolving.add(resolving)
            resolving.addBoth(self._resolved_or_not, resolving)
            resolving.addCallbacks(
                self._remember,
                self._resolve_failed,
                callbackArgs=(host, port),
                errbackArgs=(host,),
            )

    def _resolved_or_not(self, outcome: Any, resolving: Deferred[Any]) -> Any:
        self._resolving.discard(resolving)
        return outcome

    def _remember(self, address: str, host: str, port: int | None) -> None:
        if not isIPAddress(address):
            return
        first = host not in self._resolved
        self._resolved[host] = address
        # The start-up probe could not wait for names to resolve: send it now.
        if first and self.protocol is not None:
            self.protocol.send(KIND_PROBE, [(address, port or self.listening_port or self._port)])

    def _resolve_failed(self, failure: Failure, host: str) -> None:
        if failure.check(defer.CancelledError):  # cancelled by a stop
            return
        self.counters.resolve_errors += 1
        if self.protocol is not None:
            self.protocol.log_problem(
                "resolve",
                "Discovery could not resolve target {host}: {error}",
                host=host,
                error=failure.getErrorMessage(),
            )

    def _announce(self) -> None:
        # A LoopingCall stops for good at its first exception: catch everything.
        try:
            protocol = self.protocol
            if protocol is None:
                return
            protocol.send(KIND_ANNOUNCE, self._destinations())
            for node in self.registry.due_saves(protocol.now_ms()):
                protocol.save(node)
            self._resolve_targets()
        except Exception:
            self.counters.loop_errors += 1
            self.log.failure("Discovery announcement round failed")
