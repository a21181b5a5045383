"""
Tests for meteord.protocols.discovery: the protocol and service on real UDP sockets on
127.0.0.1 with task.Clock driving announcements and expiry, the registry store interface, and
real broadcast between two network namespaces joined by a veth pair (root only).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import termios
from typing import Any, Callable

import attrs
from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

import meteord
from meteord.config import parse_target
from meteord.interfaces import INodeRegistryStore
from meteord.protocols.beacon import (
    DEFAULT_PORT,
    KIND_ANNOUNCE,
    KIND_PROBE,
    REASON_BAD_SIGNATURE,
    REASON_NOT_JSON,
    REASON_OWN_ID,
    REASON_REGISTRY_FULL,
    REASON_REPLAY,
    REASON_SOCKET_BUFFER_FULL,
    decode_beacon,
    encode_beacon,
)
from meteord.protocols.discovery import (
    BROADCAST_ADDRESS,
    LOG_PERIOD,
    READS_PER_WAKEUP,
    RESUME_AFTER,
    BudgetedPort,
    DatagramBudget,
    DiscoveryCounters,
    DiscoveryProtocol,
    DiscoveryService,
    MemoryNodeRegistryStore,
    NodeIdentity,
)
from meteord.protocols.registry import NodeRegistry
from tests._process import ChildProcess
from tests._waiting import wait_until
from tests.test_beacon import make_beacon

T0 = 1_700_000_000
WAIT_SECONDS = 5.0


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class NodeRegistryStoreTestsMixin:
    """
    The behaviour every L{INodeRegistryStore} must have; mix into a C{TestCase} that defines
    C{make_store()}.
    """

    make_store: Callable[[], INodeRegistryStore]
    assertEqual: Callable[..., None]
    assertTrue: Callable[..., None]

    def node(self, node_id: str, **changes: Any) -> dict[str, Any]:
        node = {
            "node_id": node_id,
            "name": "Camera on the roof",
            "roles": ["camera", "query"],
            "address": "192.0.2.7",
            "http_port": 8080,
            "scheme": "http",
            "version": "0.1.0",
            "first_seen": T0 * 1000,
            "last_seen": T0 * 1000 + 10_000,
            "status": "online",
            "interval": 10.0,
        }
        node.update(changes)
        return node

    def test_provides_interface(self) -> None:
        self.assertTrue(verifyObject(INodeRegistryStore, self.make_store()))

    @defer.inlineCallbacks
    def test_empty(self) -> Any:
        nodes = yield self.make_store().load_nodes()
        self.assertEqual(nodes, [])

    @defer.inlineCallbacks
    def test_save_then_load(self) -> Any:
        store = self.make_store()
        yield store.save_node(self.node("a"))
        yield store.save_node(self.node("b", roles=[], status="offline", interval=2.5))
        nodes = yield store.load_nodes()
        self.assertEqual(
            sorted(nodes, key=lambda n: n["node_id"]),
            [self.node("a"), self.node("b", roles=[], status="offline", interval=2.5)],
        )

    @defer.inlineCallbacks
    def test_save_replaces_by_node_id(self) -> Any:
        store = self.make_store()
        yield store.save_node(self.node("a"))
        yield store.save_node(self.node("a", name="Renamed", last_seen=T0 * 1000 + 99))
        nodes = yield store.load_nodes()
        self.assertEqual(nodes, [self.node("a", name="Renamed", last_seen=T0 * 1000 + 99)])


class MemoryNodeRegistryStoreTests(NodeRegistryStoreTestsMixin, TestCase):
    """The in-memory store passes the store suite."""

    def make_store(self) -> INodeRegistryStore:
        return MemoryNodeRegistryStore()


@implementer(INodeRegistryStore)
@attrs.define
class RecordingStore(MemoryNodeRegistryStore):
    """A memory store that remembers every save, and can be told to fail them."""

    saves: list[dict[str, Any]] = attrs.field(factory=list)
    failing: bool = False

    def save_node(self, node: dict[str, Any]) -> Deferred[None]:
        self.saves.append(dict(node))
        if self.failing:
            return defer.fail(OSError("disk full"))
        return super().save_node(node)


class ParseTargetTests(SynchronousTestCase):
    """C{[discovery] targets} entries."""

    def test_forms(self) -> None:
        self.assertEqual(parse_target("192.168.1.255"), ("192.168.1.255", None))
        self.assertEqual(parse_target("hub.local:47700"), ("hub.local", 47700))
        self.assertEqual(parse_target(" 10.0.0.2:1 "), ("10.0.0.2", 1))

    def test_refused(self) -> None:
        for text in ("", ":80", "host:0", "host:65536", "host:x", "::1", "[::1]:80", "a b"):
            self.assertRaises(ValueError, parse_target, text)

    def test_service_refuses_bad_settings(self) -> None:
        def build(**changes: Any) -> DiscoveryService:
            settings: dict[str, Any] = {
                "reactor": Clock(),
                "node_id": "me",
                "name": "Me",
                "roles": ["hub"],
                "http_port": 8080,
            }
            settings.update(changes)
            return DiscoveryService(**settings)

        build()
        for changes in (
            {"name": "n" * 65},
            {"roles": ["printer"]},
            {"http_port": 0},
            {"interval": 0},
            {"targets": ["host:0"]},
            {"max_datagrams_per_second": 0},
        ):
            self.assertRaises(ValueError, build, **changes)


class DatagramBudgetTests(SynchronousTestCase):
    """The token bucket, on a clock under test control."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.budget = DatagramBudget(self.clock, rate=40, burst=10)

    def test_starts_full_and_refills_at_its_rate(self) -> None:
        self.assertEqual(self.budget.available(), 10)
        self.budget.spend(10)
        self.assertEqual(self.budget.available(), 0)
        self.assertEqual(self.budget.seconds_until(10), 0.25)
        self.clock.advance(0.125)
        self.assertEqual(self.budget.available(), 5)
        self.budget.spend(3)
        self.assertEqual(self.budget.available(), 2)
        self.assertEqual(self.budget.seconds_until(2), 0.0)

    def test_refill_of_exactly_the_time_asked_allows_the_datagrams(self) -> None:
        """Float refills a hair short of a whole datagram still count it."""
        budget = DatagramBudget(self.clock, rate=3, burst=1)
        for _ in range(5):
            budget.available()
            budget.spend()
            self.clock.advance(budget.seconds_until(1))
            self.assertEqual(budget.available(), 1)

    def test_refill_stops_at_the_burst(self) -> None:
        self.budget.spend(10)
        self.clock.advance(3600)
        self.assertEqual(self.budget.available(), 10)

    def test_clock_jumping_back_neither_refills_nor_stalls(self) -> None:
        self.budget.spend(10)
        self.clock.advance(-3600)
        self.assertEqual(self.budget.available(), 0)
        self.assertEqual(self.budget.seconds_until(1), 0.025)
        self.clock.advance(0.125)
        self.assertEqual(self.budget.available(), 5)


@attrs.define
class FakeTransport:
    """A UDP transport that records datagrams and refuses some destinations."""

    refused: set[str] = attrs.field(factory=set)
    written: list[tuple[bytes, tuple[str, int]]] = attrs.field(factory=list)

    def write(self, datagram: bytes, addr: tuple[str, int]) -> None:
        if addr[0] in self.refused:
            raise OSError(errno.ENETUNREACH, "Network is unreachable")
        self.written.append((datagram, addr))


def make_protocol(
    clock: Clock, secret: bytes | None = None, max_nodes: int = 1024
) -> DiscoveryProtocol:
    """A protocol for node C{me} on a fake transport."""
    identity = NodeIdentity(
        node_id="me",
        name="Me",
        roles=("hub",),
        http_port=8080,
        scheme="http",
        version=meteord.__version__,
        interval=10.0,
    )
    protocol = DiscoveryProtocol(
        identity,
        NodeRegistry(max_nodes=max_nodes),
        RecordingStore(),
        clock,
        DiscoveryCounters(),
        secret,
    )
    protocol.transport = FakeTransport()
    return protocol


class ProtocolTests(SynchronousTestCase):
    """The protocol without sockets: sending, send errors, counting, log rate limits."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.protocol = make_protocol(self.clock)

    def test_each_datagram_has_the_next_seq(self) -> None:
        first = self.protocol.seq
        destinations = [("192.0.2.1", 47623), ("192.0.2.2", 47623)]
        self.assertEqual(self.protocol.send(KIND_ANNOUNCE, destinations), 2)
        transport = self.protocol.transport
        beacons = [decode_beacon(data, T0 * 1000) for data, _ in transport.written]
        self.assertEqual([beacon.seq for beacon in beacons], [first + 1, first + 2])
        self.assertEqual({beacon.boot for beacon in beacons}, {self.protocol.boot})
        self.assertEqual(beacons[0].sent_at, T0 * 1000)

    def test_seq_and_boot_are_random_per_instance(self) -> None:
        other = make_protocol(self.clock)
        self.assertNotEqual(
            (self.protocol.boot, self.protocol.seq), (other.boot, other.seq)
        )
        self.assertLess(self.protocol.seq, 2**32)

    def test_send_error_is_counted_and_others_still_sent(self) -> None:
        self.protocol.transport.refused.add(BROADCAST_ADDRESS)
        sent = self.protocol.send(
            KIND_ANNOUNCE, [(BROADCAST_ADDRESS, 47623), ("192.0.2.1", 47623)]
        )
        self.assertEqual(sent, 1)
        self.assertEqual(
            (self.protocol.counters.sent, self.protocol.counters.send_errors), (1, 1)
        )
        self.assertEqual(self.protocol.transport.written[0][1], ("192.0.2.1", 47623))

    def test_drops_are_counted_by_reason(self) -> None:
        for data in (b"junk", b"{", encode_beacon(make_beacon(node_id="me"))):
            self.protocol.datagramReceived(data, ("192.0.2.1", 47623))
        self.assertEqual(
            dict(self.protocol.counters.dropped), {REASON_NOT_JSON: 2, REASON_OWN_ID: 1}
        )
        self.assertEqual(self.protocol.counters.accepted, 0)

    def test_replay_and_full_registry_are_counted(self) -> None:
        protocol = make_protocol(self.clock, max_nodes=1)
        known = encode_beacon(make_beacon(node_id="known", seq=1))
        for data in (known, known, encode_beacon(make_beacon(node_id="stranger", seq=1))):
            protocol.datagramReceived(data, ("192.0.2.1", 47623))
        self.assertEqual(protocol.counters.accepted, 1)
        self.assertEqual(
            dict(protocol.counters.dropped), {REASON_REPLAY: 1, REASON_REGISTRY_FULL: 1}
        )

    def test_drop_logs_are_rate_limited_per_reason(self) -> None:
        events: list[dict[str, Any]] = []
        self.protocol.log = Logger(observer=events.append)
        for _ in range(5):
            self.protocol.datagramReceived(b"junk", ("192.0.2.1", 47623))
        self.protocol.datagramReceived(b"[]", ("192.0.2.1", 47623))
        self.assertEqual(len(events), 2)
        self.clock.advance(LOG_PERIOD)
        self.protocol.datagramReceived(b"junk", ("192.0.2.1", 47623))
        self.assertEqual(len(events), 3)
        self.assertEqual(events[-1]["held"], 4)
        self.assertEqual(events[-1]["log_level"].name, "debug")

    def test_kernel_drops_are_counted_and_logged_rate_limited(self) -> None:
        events: list[dict[str, Any]] = []
        self.protocol.log = Logger(observer=events.append)
        self.protocol.kernel_dropped(7)
        self.protocol.kernel_dropped(5)
        self.assertEqual(dict(self.protocol.counters.dropped), {REASON_SOCKET_BUFFER_FULL: 12})
        self.assertEqual([event["count"] for event in events], [7])

    def test_failed_save_is_counted_and_retried(self) -> None:
        self.protocol.store.failing = True
        self.protocol.datagramReceived(encode_beacon(make_beacon(seq=1)), ("192.0.2.1", 1))
        self.assertEqual(self.protocol.counters.store_errors, 1)
        self.assertEqual(len(self.protocol.registry.due_saves(T0 * 1000 + 5_000)), 1)
        self.assertEqual(self.successResultOf(self.protocol.saves_done()), None)


class Arrivals:
    """Lets a test wait, without sleeping, until datagrams have brought a condition about."""

    def __init__(self) -> None:
        self._waiting: list[tuple[Callable[[], bool], Deferred[None]]] = []

    def watch(self, protocol: DatagramProtocol) -> None:
        """Check the waiting conditions after each datagram C{protocol} handles."""
        receive = protocol.datagramReceived

        def received(datagram: bytes, addr: tuple[str, int]) -> None:
            receive(datagram, addr)
            self._check()

        protocol.datagramReceived = received  # type: ignore[method-assign]

    def _check(self) -> None:
        for entry in list(self._waiting):
            condition, waiting = entry
            if condition():
                self._waiting.remove(entry)
                waiting.callback(None)

    def until(self, condition: Callable[[], bool], what: str) -> Deferred[None]:
        """Fires once C{condition()} holds; fails after L{WAIT_SECONDS} naming C{what}."""
        if condition():
            return defer.succeed(None)
        waiting: Deferred[None] = Deferred()
        entry = (condition, waiting)
        self._waiting.append(entry)

        def timed_out(failure: Failure) -> Failure:
            if entry in self._waiting:
                self._waiting.remove(entry)
            failure.trap(defer.TimeoutError)
            raise AssertionError(f"gave up waiting {WAIT_SECONDS} s for {what}")

        waiting.addTimeout(WAIT_SECONDS, reactor)
        return waiting.addErrback(timed_out)


class Collector(DatagramProtocol):
    """A bare UDP socket for crafted datagrams; remembers what it receives."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, tuple[str, int]]] = []

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        self.received.append((datagram, addr))


def eventually(condition: Callable[[], bool], what: str) -> Deferred[None]:
    """Fires once C{condition()} holds, checked every few ms; fails after L{WAIT_SECONDS}."""
    return Deferred.fromCoroutine(wait_until(condition, what, WAIT_SECONDS, 0.002))


def listening(service: DiscoveryService) -> BudgetedPort:
    """The port C{service} reads from, found among the reactor's readers."""
    [port] = [
        reader
        for reader in reactor.getReaders()
        if isinstance(reader, BudgetedPort) and reader.getHost().port == service.listening_port
    ]
    return port


def read_count(service: DiscoveryService) -> int:
    """How many datagrams C{service} has read from its socket."""
    counters = service.counters
    kernel = counters.dropped[REASON_SOCKET_BUFFER_FULL]
    return counters.accepted + sum(counters.dropped.values()) - kernel


def queued_bytes(port: BudgetedPort) -> int:
    """The size of the next datagram waiting in C{port}'s socket, 0 when none waits."""
    size = fcntl.ioctl(port.socket.fileno(), termios.FIONREAD, struct.pack("i", 0))
    queued: int = struct.unpack("i", size)[0]
    return queued


def knows(service: DiscoveryService, node_id: str, status: str = "online") -> Callable[[], bool]:
    """A condition: C{service} lists C{node_id} with C{status}."""

    def condition() -> bool:
        return any(
            node["node_id"] == node_id and node["status"] == status for node in service.nodes()
        )

    return condition


class UDPTests(TestCase):
    """Discovery services on real sockets on 127.0.0.1, with clocks under test control."""

    def setUp(self) -> None:
        self.arrivals = Arrivals()

    def start_node(
        self,
        node_id: str,
        clock: Clock,
        port: int = 0,
        **settings: Any,
    ) -> DiscoveryService:
        """Start a discovery service on 127.0.0.1 (no broadcast) and stop it after the test."""
        settings.setdefault("name", f"Node {node_id}")
        settings.setdefault("roles", ["camera"])
        settings.setdefault("http_port", 8080)
        service = DiscoveryService(
            reactor=reactor,
            clock=clock,
            node_id=node_id,
            port=port,
            interface="127.0.0.1",
            broadcast=False,
            **settings,
        )
        service.startService()
        assert service.protocol is not None
        self.arrivals.watch(service.protocol)
        self.addCleanup(self.stop_node, service)
        return service

    def stop_node(self, service: DiscoveryService) -> Deferred[None]:
        if service.running:
            return service.stopService()
        return defer.succeed(None)

    def clock(self) -> Clock:
        clock = Clock()
        clock.advance(T0)
        return clock

    @defer.inlineCallbacks
    def test_two_nodes_learn_each_other_from_announcements(self) -> Any:
        clock = self.clock()
        port_a, port_b = free_udp_port(), free_udp_port()
        store_a = RecordingStore()
        a = self.start_node("aaaa", clock, port_a, targets=[f"127.0.0.1:{port_b}"], store=store_a)
        b = self.start_node(
            "bbbb", clock, port_b, targets=[f"127.0.0.1:{port_a}"], roles=["hub", "import"]
        )
        clock.advance(10)
        yield self.arrivals.until(knows(a, "bbbb"), "a to hear b")
        yield self.arrivals.until(knows(b, "aaaa"), "b to hear a")
        [node] = a.nodes()
        self.assertEqual(
            node,
            {
                "node_id": "bbbb",
                "name": "Node bbbb",
                "roles": ["hub", "import"],
                "address": "127.0.0.1",
                "http_port": 8080,
                "scheme": "http",
                "version": meteord.__version__,
                "first_seen": node["first_seen"],
                "last_seen": (T0 + 10) * 1000,
                "status": "online",
            },
        )
        self.assertEqual(store_a.nodes["bbbb"]["address"], "127.0.0.1")
        self.assertEqual(b.listening_port, port_b)

    @defer.inlineCallbacks
    def test_unchanged_announcements_are_not_saved_again(self) -> Any:
        clock = self.clock()
        store_a = RecordingStore()
        a = self.start_node("aaaa", clock, store=store_a)
        self.start_node("bbbb", clock, targets=[f"127.0.0.1:{a.listening_port}"])
        for tick in range(1, 6):
            clock.advance(10)
            yield self.arrivals.until(
                lambda tick=tick: a.registry.get("bbbb") is not None
                and a.registry.get("bbbb").last_seen == (T0 + 10 * tick) * 1000,
                f"announcement {tick}",
            )
        self.assertEqual([save["node_id"] for save in store_a.saves], ["bbbb"])

    @defer.inlineCallbacks
    def test_offline_after_three_missed_intervals(self) -> Any:
        clock_a, clock_b = self.clock(), self.clock()
        a = self.start_node("aaaa", clock_a)
        b = self.start_node("bbbb", clock_b, targets=[f"127.0.0.1:{a.listening_port}"])
        yield self.arrivals.until(knows(a, "bbbb"), "a to hear b's probe")
        yield self.arrivals.until(knows(b, "aaaa"), "b to hear a's reply")
        clock_a.advance(29)
        self.assertTrue(knows(a, "bbbb", "online")())
        clock_a.advance(2)
        self.assertTrue(knows(a, "bbbb", "offline")())
        clock_b.advance(10)
        yield self.arrivals.until(knows(a, "bbbb", "online"), "b to come back")

    @defer.inlineCallbacks
    def test_bye_makes_node_offline_at_once(self) -> Any:
        clock = self.clock()
        store_a = RecordingStore()
        a = self.start_node("aaaa", clock, store=store_a)
        b = self.start_node("bbbb", clock, targets=[f"127.0.0.1:{a.listening_port}"])
        yield self.arrivals.until(knows(a, "bbbb"), "a to hear b")
        yield b.stopService()
        self.assertIsNone(b.listening_port)
        yield self.arrivals.until(knows(a, "bbbb", "offline"), "b's bye")
        self.assertEqual(store_a.nodes["bbbb"]["status"], "online")
        clock.advance(10)
        self.assertEqual(store_a.nodes["bbbb"]["status"], "offline")

    @defer.inlineCallbacks
    def test_stopping_saves_what_is_pending(self) -> Any:
        clock = self.clock()
        store_a = RecordingStore()
        a = self.start_node("aaaa", clock, store=store_a)
        b = self.start_node("bbbb", clock, targets=[f"127.0.0.1:{a.listening_port}"])
        yield self.arrivals.until(knows(a, "bbbb"), "a to hear b")
        yield b.stopService()
        yield self.arrivals.until(knows(a, "bbbb", "offline"), "b's bye")
        yield a.stopService()
        self.assertEqual(store_a.nodes["bbbb"]["status"], "offline")

    @defer.inlineCallbacks
    def test_stopping_waits_for_the_registry_load_and_cancels_lookups(self) -> Any:
        loading: Deferred[list] = Deferred()
        lookups: list[Deferred[str]] = []

        class SlowStore(RecordingStore):
            def load_nodes(self) -> Deferred[list]:
                return loading

        def resolve(name: str, timeout: Any = None) -> Deferred[str]:
            lookups.append(Deferred())
            return lookups[-1]

        self.patch(reactor, "resolve", resolve)
        a = self.start_node("aaaa", self.clock(), store=SlowStore(),
                            targets=["hub.invalid:47000"])
        port = a._listening
        stopped = a.stopService()
        self.assertEqual(len(lookups), 1)
        self.assertTrue(lookups[0].called)  # cancelled
        yield port.d  # the port has closed; the stop still waits for the load
        self.assertFalse(stopped.called)
        loading.callback([])
        yield stopped
        self.assertEqual(a.counters.resolve_errors, 0)

    @defer.inlineCallbacks
    def test_probe_gets_immediate_reply_rate_limited(self) -> Any:
        clock = self.clock()
        a = self.start_node("aaaa", clock)
        collector = Collector()
        self.arrivals.watch(collector)
        client = reactor.listenUDP(0, collector, interface="127.0.0.1")
        self.addCleanup(client.stopListening)
        destination = ("127.0.0.1", a.listening_port)

        def probe(seq: int) -> None:
            beacon = make_beacon(kind=KIND_PROBE, node_id="prober", seq=seq, sent_at=T0 * 1000)
            client.write(encode_beacon(beacon), destination)

        probe(1)
        yield self.arrivals.until(lambda: len(collector.received) == 1, "a reply")
        reply = decode_beacon(collector.received[0][0], T0 * 1000)
        self.assertEqual((reply.kind, reply.node_id), (KIND_ANNOUNCE, "aaaa"))
        probe(2)
        yield self.arrivals.until(lambda: a.counters.probe_replies_limited == 1, "rate limit")
        clock.advance(1)
        probe(3)
        yield self.arrivals.until(lambda: len(collector.received) == 2, "a second reply")
        self.assertEqual((a.counters.probe_replies, a.counters.accepted), (2, 3))

    @defer.inlineCallbacks
    def test_starting_node_learns_others_from_probe_replies(self) -> Any:
        clock = self.clock()
        a = self.start_node("aaaa", clock)
        b = self.start_node("bbbb", clock, targets=[f"127.0.0.1:{a.listening_port}"])
        yield self.arrivals.until(knows(b, "aaaa"), "the reply to b's probe")
        self.assertTrue(knows(a, "bbbb")())

    @defer.inlineCallbacks
    def test_signed_network(self) -> Any:
        clock = self.clock()
        a = self.start_node("aaaa", clock, secret="s3cret")
        self.start_node("bbbb", clock, secret="s3cret", targets=[f"127.0.0.1:{a.listening_port}"])
        self.start_node("cccc", clock, secret="other", targets=[f"127.0.0.1:{a.listening_port}"])
        yield self.arrivals.until(knows(a, "bbbb"), "the signed probe")
        yield self.arrivals.until(
            lambda: a.counters.dropped[REASON_BAD_SIGNATURE] >= 1, "the wrongly signed probe"
        )
        self.assertEqual([node["node_id"] for node in a.nodes()], ["bbbb"])

    @defer.inlineCallbacks
    def test_registry_survives_restart(self) -> Any:
        clock = self.clock()
        store = RecordingStore()
        a = self.start_node("aaaa", clock, store=store)
        self.start_node("bbbb", clock, targets=[f"127.0.0.1:{a.listening_port}"])
        yield self.arrivals.until(knows(a, "bbbb"), "a to hear b")
        yield a.stopService()
        again = self.start_node("aaaa", clock, store=store)
        self.assertTrue(knows(again, "bbbb")())
        clock.advance(31)
        self.assertTrue(knows(again, "bbbb", "offline")())

    @defer.inlineCallbacks
    def test_host_name_targets_are_resolved(self) -> Any:
        @attrs.define
        class NamingReactor:
            def __getattr__(self, name: str) -> Any:
                return getattr(reactor, name)

            def resolve(self, name: str) -> Deferred[str]:
                if name == "hub.example":
                    return defer.succeed("127.0.0.1")
                return defer.fail(OSError(f"no such host {name}"))

        clock = self.clock()
        a = self.start_node("aaaa", clock)
        b = DiscoveryService(
            reactor=NamingReactor(),
            clock=clock,
            node_id="bbbb",
            name="B",
            roles=[],
            http_port=80,
            port=0,
            interface="127.0.0.1",
            broadcast=False,
            targets=[f"hub.example:{a.listening_port}", "nowhere.example"],
        )
        b.startService()
        self.addCleanup(self.stop_node, b)
        yield self.arrivals.until(knows(a, "bbbb"), "b's probe to a resolved name")
        self.assertEqual(b.counters.resolve_errors, 1)

    def test_failing_round_does_not_stop_announcements(self) -> None:
        clock = self.clock()
        a = self.start_node("aaaa", clock)

        def broken(kind: str, destinations: Any) -> int:
            raise RuntimeError("broken transport")

        self.patch(a.protocol, "send", broken)
        clock.advance(10)
        clock.advance(10)
        self.assertEqual(a.counters.loop_errors, 2)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)

    @defer.inlineCallbacks
    def test_flood_of_junk_leaves_registry_clean(self) -> Any:
        clock = self.clock()
        # The budget is not what this test is about: large enough for the whole flood.
        a = self.start_node("aaaa", clock, secret="s3cret", max_datagrams_per_second=1_000_000)
        client = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
        self.addCleanup(client.stopListening)
        destination = ("127.0.0.1", a.listening_port)
        junk = list(junk_datagrams(random.Random(47623)))
        batch = 50
        for start in range(0, len(junk), batch):
            for data in junk[start : start + batch]:
                client.write(data, destination)
            sent = min(start + batch, len(junk))
            yield self.arrivals.until(
                lambda sent=sent: sum(a.counters.dropped.values()) >= sent, f"{sent} drops"
            )
        self.assertEqual(sum(a.counters.dropped.values()), 10_000)
        self.assertEqual((a.counters.accepted, len(a.registry), a.nodes()), (0, 0, []))
        self.assertGreaterEqual(len(a.counters.dropped), 10)
        beacon = make_beacon(node_id="good", seq=1, sent_at=T0 * 1000)
        client.write(encode_beacon(beacon, b"s3cret"), destination)
        yield self.arrivals.until(knows(a, "good"), "a valid beacon after the flood")

    def client(self) -> Any:
        """A UDP socket on 127.0.0.1 to send crafted datagrams from."""
        client = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
        self.addCleanup(client.stopListening)
        return client

    @defer.inlineCallbacks
    def test_budget_pauses_reading_until_the_clock_refills_it(self) -> Any:
        clock = self.clock()
        a = self.start_node("aaaa", clock, max_datagrams_per_second=40)
        port = listening(a)
        self.assertEqual((port.budget.rate, port.budget.burst), (40, 10))
        client = self.client()
        for i in range(25):
            client.write(b"junk %d" % i, ("127.0.0.1", a.listening_port))
        for read, pauses in [(10, 1), (20, 2)]:
            yield eventually(lambda: a.counters.read_pauses == pauses, f"pause {pauses}")
            self.assertNotIn(port, reactor.getReaders())
            self.assertEqual(read_count(a), read)
            clock.advance(0.125)
            self.assertNotIn(port, reactor.getReaders())
            clock.advance(0.125)
            self.assertIn(port, reactor.getReaders())
        yield eventually(lambda: read_count(a) == 25, "the last 5 datagrams")
        self.assertIn(port, reactor.getReaders())
        self.assertEqual(
            (a.counters.read_pauses, dict(a.counters.dropped)), (2, {REASON_NOT_JSON: 25})
        )

    @defer.inlineCallbacks
    def test_a_paused_port_schedules_one_resumption(self) -> Any:
        clock = self.clock()
        a = self.start_node("aaaa", clock, max_datagrams_per_second=4)
        port = listening(a)
        port.budget.spend(port.budget.available())
        port.doRead()
        port.doRead()

        def resumptions() -> list[Any]:
            return [call for call in clock.getDelayedCalls() if call.func == port._resume]

        self.assertEqual((len(resumptions()), a.counters.read_pauses), (1, 1))
        yield a.stopService()
        self.assertEqual(resumptions(), [])

    @defer.inlineCallbacks
    def test_paused_port_waits_until_the_budget_allows_a_batch(self) -> Any:
        clock = self.clock()
        a = self.start_node("aaaa", clock, max_datagrams_per_second=1024)
        port = listening(a)
        self.assertEqual(port.budget.burst, 256)
        client = self.client()
        # In steps that the socket buffer holds whole.
        for sent in (100, 200, 257):
            for i in range(sent - read_count(a)):
                client.write(b"junk %d" % i, ("127.0.0.1", a.listening_port))
            yield eventually(lambda: read_count(a) == min(sent, 256), f"{sent} datagrams")
        yield eventually(lambda: a.counters.read_pauses == 1, "the budget to be spent")
        clock.advance(RESUME_AFTER / 1024 / 2)
        self.assertNotIn(port, reactor.getReaders())
        clock.advance(RESUME_AFTER / 1024 / 2)
        self.assertIn(port, reactor.getReaders())
        yield eventually(lambda: read_count(a) == 257, "the last datagram")

    @defer.inlineCallbacks
    def test_one_wakeup_reads_at_most_a_batch(self) -> Any:
        clock = self.clock()
        a = self.start_node("aaaa", clock)
        port = listening(a)
        batches: list[int] = []
        do_read = port.doRead

        def counting_read() -> None:
            before = read_count(a)
            do_read()
            batches.append(read_count(a) - before)

        self.patch(port, "doRead", counting_read)
        client = self.client()
        for i in range(100):
            client.write(b"junk %d" % i, ("127.0.0.1", a.listening_port))
        yield eventually(lambda: read_count(a) == 100, "100 datagrams")
        self.assertEqual(max(batches), READS_PER_WAKEUP)
        self.assertEqual(a.counters.read_pauses, 0)

    @defer.inlineCallbacks
    def test_datagrams_the_kernel_drops_are_counted(self) -> Any:
        if not sys.platform.startswith("linux"):
            raise SkipTest("kernel drops are only counted on Linux (SO_RXQ_OVFL)")
        clock = self.clock()
        a = self.start_node("aaaa", clock, max_datagrams_per_second=40)
        port = listening(a)
        # The smallest buffer the kernel allows: a few datagrams.
        port.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
        client = self.client()
        destination = ("127.0.0.1", a.listening_port)
        sent = 0
        for i in range(11):
            client.write(b"junk %d" % i, destination)
            sent += 1
            yield eventually(lambda: read_count(a) == min(sent, 10), f"datagram {sent}")
        yield eventually(lambda: a.counters.read_pauses == 1, "the budget to be spent")
        for i in range(200):
            client.write(b"flood %d" % i, destination)
            sent += 1
        clock.advance(0.25)
        yield eventually(lambda: queued_bytes(port) == 0, "the socket buffer to be read")
        # The kernel tells the drops with the next datagram read.
        client.write(encode_beacon(make_beacon(node_id="after", seq=1)), destination)
        sent += 1
        yield eventually(lambda: a.counters.accepted == 1, "the datagram after the flood")
        kernel = a.counters.dropped[REASON_SOCKET_BUFFER_FULL]
        self.assertGreater(kernel, 150)
        self.assertEqual(read_count(a) + kernel, sent)
        self.assertEqual([node["node_id"] for node in a.nodes()], ["after"])

    @defer.inlineCallbacks
    def test_valid_beacon_after_a_flood_is_registered(self) -> Any:
        clock = self.clock()
        a = self.start_node("aaaa", clock, secret="s3cret", max_datagrams_per_second=40)
        client = self.client()
        destination = ("127.0.0.1", a.listening_port)
        for data in junk_datagrams(random.Random(1), 40):
            client.write(data, destination)
        yield eventually(lambda: a.counters.read_pauses == 1, "the budget to be spent")
        self.assertEqual(read_count(a), 10)
        beacon = make_beacon(node_id="good", seq=1, sent_at=T0 * 1000)
        client.write(encode_beacon(beacon, b"s3cret"), destination)
        for step in range(1, 6):
            clock.advance(0.25)
            yield eventually(
                lambda: knows(a, "good")() or a.counters.read_pauses == step + 1,
                f"reading after refill {step}",
            )
            if knows(a, "good")():
                break
        self.assertEqual((a.counters.accepted, [n["node_id"] for n in a.nodes()]), (1, ["good"]))
        self.assertEqual((read_count(a), a.counters.read_pauses), (41, 4))


def junk_datagrams(rng: random.Random, count: int = 10_000) -> Any:
    """C{count} datagrams of every kind a listener with secret C{s3cret} must drop."""
    valid = make_beacon(seq=1, sent_at=T0 * 1000).to_json()
    makers: list[Callable[[int], bytes]] = [
        lambda i: rng.randbytes(rng.randrange(0, 1200)),
        lambda i: b"x" * 1300,
        lambda i: b"\xff\xfe" + str(i).encode(),
        lambda i: b"[" * 1000,
        lambda i: json.dumps([i]).encode(),
        lambda i: json.dumps(dict(valid, proto="other")).encode(),
        lambda i: json.dumps({k: v for k, v in valid.items() if k != "seq"}).encode(),
        lambda i: json.dumps(dict(valid, http_port=str(i))).encode(),
        lambda i: json.dumps(dict(valid, http_port=70_000 + i)).encode(),
        lambda i: encode_beacon(make_beacon(node_id="aaaa", seq=i), b"s3cret"),
        lambda i: encode_beacon(make_beacon(node_id=f"n{i}", seq=i)),
        lambda i: encode_beacon(make_beacon(node_id=f"n{i}", seq=i), b"guess"),
        lambda i: encode_beacon(make_beacon(node_id=f"n{i}", seq=i, sent_at=0), b"s3cret"),
    ]
    for i in range(count):
        yield makers[i % len(makers)](i)


# Runs one discovery service in a namespace. "listen" prints the registry as JSON as soon as it
# lists the other node and exits; "announce" runs until SIGTERM, then prints its counters.
NAMESPACE_NODE = """
import json, sys
from twisted.internet import reactor, task
from meteord.protocols.discovery import DiscoveryService
role, node_id, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
service = DiscoveryService(reactor=reactor, node_id=node_id, name=role, roles=["camera"],
                           http_port=8080, port=port, interval=0.2)
service.startService()
def report():
    if role == "announce":
        counters = service.counters
        print(json.dumps({"sent": counters.sent, "send_errors": counters.send_errors}))
    return service.stopService()
reactor.addSystemEventTrigger("before", "shutdown", report)
def check():
    if role == "listen" and service.nodes():
        print(json.dumps(service.nodes()), flush=True)
        reactor.stop()
task.LoopingCall(check).start(0.05)
reactor.callLater(10, reactor.stop)
reactor.run()
"""


class BroadcastAcrossNamespacesTests(TestCase):
    """
    Real broadcast between two hosts: two network namespaces joined by a veth pair, a node in
    each, no targets configured. Needs root and iproute2; skips with the reason otherwise.
    """

    def setUp(self) -> None:
        if os.geteuid() != 0:
            raise SkipTest("network namespaces need root")
        if shutil.which("ip") is None:
            raise SkipTest("network namespaces need the ip command (iproute2)")
        tag = f"{os.getpid() % 100000}"
        self.ns_a, self.ns_b = f"meteord-test-a-{tag}", f"meteord-test-b-{tag}"
        veth_a, veth_b = f"mdt{tag}a", f"mdt{tag}b"
        self.address_a, address_b = "10.231.47.1", "10.231.47.2"
        for namespace in (self.ns_a, self.ns_b):
            self.addCleanup(self.ip, "netns", "delete", namespace, check=False)
        # Only left behind if moving it into its namespace failed.
        self.addCleanup(self.ip, "link", "delete", veth_a, check=False)
        steps = [
            ("netns", "add", self.ns_a),
            ("netns", "add", self.ns_b),
            ("link", "add", veth_a, "type", "veth", "peer", "name", veth_b),
            ("link", "set", veth_a, "netns", self.ns_a),
            ("link", "set", veth_b, "netns", self.ns_b),
        ]
        for namespace, veth, address in ((self.ns_a, veth_a, self.address_a),
                                         (self.ns_b, veth_b, address_b)):
            steps += [
                ("-n", namespace, "addr", "add", f"{address}/24", "dev", veth),
                ("-n", namespace, "link", "set", veth, "up"),
                ("-n", namespace, "link", "set", "lo", "up"),
                # 255.255.255.255 needs a route, as a LAN host's default route provides.
                ("-n", namespace, "route", "add", "default", "dev", veth),
            ]
        try:
            for step in steps:
                self.ip(*step)
        except (OSError, subprocess.SubprocessError) as e:
            raise SkipTest(f"cannot build network namespaces here: {e}")

    def ip(self, *args: str, check: bool = True) -> None:
        """Run one ip command; setup commands are short, so blocking on them is harmless."""
        result = subprocess.run(["ip", *args], capture_output=True, timeout=10)
        if check and result.returncode != 0:
            raise subprocess.SubprocessError(
                f"ip {' '.join(args)}: {result.stderr.decode(errors='replace').strip()}"
            )

    def spawn(self, namespace: str, *args: str) -> ChildProcess:
        """Run L{NAMESPACE_NODE} in C{namespace}; it is stopped and awaited after the test."""
        process = ChildProcess()
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(meteord.__file__)))
        env = dict(os.environ, PYTHONPATH=package_root)
        command = ["ip", "netns", "exec", namespace, sys.executable, "-c", NAMESPACE_NODE, *args]
        reactor.spawnProcess(process, "ip", command, env=env)
        self.addCleanup(lambda: process.ended)
        self.addCleanup(self.terminate, process)
        return process

    def terminate(self, process: ChildProcess) -> None:
        if not process.ended.called:
            process.transport.signalProcess("TERM")

    @defer.inlineCallbacks
    def test_broadcast_reaches_the_other_namespace(self) -> Any:
        listener = self.spawn(self.ns_b, "listen", "bbbbbbbbbbbb", str(DEFAULT_PORT))
        announcer = self.spawn(self.ns_a, "announce", "aaaaaaaaaaaa", str(DEFAULT_PORT))
        code, out, err = yield listener.ended
        self.assertEqual(code, 0, err.decode(errors="replace"))
        nodes = json.loads(out.decode().splitlines()[-1])
        [node] = [node for node in nodes if node["node_id"] == "aaaaaaaaaaaa"]
        self.assertEqual((node["address"], node["status"]), (self.address_a, "online"))
        self.terminate(announcer)
        code, out, err = yield announcer.ended
        counters = json.loads(out.decode().splitlines()[-1])
        self.assertGreater(counters["sent"], 0)
        self.assertEqual(counters["send_errors"], 0, err.decode(errors="replace"))
