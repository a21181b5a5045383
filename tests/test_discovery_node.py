"""
Discovery inside a whole node: the daemon announces itself, serves its live registry at
``GET /api/nodes``, and a flood of junk datagrams leaves the registry clean and the HTTP API
answering, with every datagram either read or counted as dropped by the kernel.
"""

from __future__ import annotations

import json
import socket
import sys

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from meteord.config import load_config
from meteord.protocols.discovery import BudgetedPort
from meteord.service import make_service

JUNK = [
    b"\xff\xfe not utf-8",
    b"{not json",
    b"[1, 2, 3]",
    b'{"proto": "other/1"}',
    b'{"proto": "meteord-discovery/1", "kind": "announce"}',
    b"x" * 1300,
]


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DiscoveryInNodeTests(TestCase):
    async def start_node(self):
        self.http_port = free_port(socket.SOCK_STREAM)
        self.udp_port = free_port(socket.SOCK_DGRAM)
        config = load_config(environ={}, options={
            ("node", "data_dir"): self.mktemp(),
            ("node", "name"): "test-node",
            ("http", "endpoint"): f"tcp:{self.http_port}:interface=127.0.0.1",
            ("discovery", "port"): str(self.udp_port),
            ("discovery", "max_datagrams_per_second"): "500",
            ("exporter", "enabled"): "false",
        })
        node = make_service(config, reactor)
        node.startService()
        self.addCleanup(node.stopService)
        await node.getServiceNamed("http").when_listening()
        await node.getServiceNamed("store").when_ready()
        return node

    async def get_json(self, path: str):
        response = await treq.get(f"http://127.0.0.1:{self.http_port}/api/{path}", persistent=False)
        return response.code, json.loads(await response.content())

    async def test_flood_of_junk_leaves_registry_clean_and_http_answering(self) -> None:
        node = await self.start_node()
        discovery = node.getServiceNamed("discovery").services[0]
        [port] = [reader for reader in reactor.getReaders()
                  if isinstance(reader, BudgetedPort) and reader.getHost().port == self.udp_port]
        self.assertEqual(port.budget.rate, 500)
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sender.close)
        sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        sent = 0

        def send(datagram: bytes) -> None:
            nonlocal sent
            try:
                sender.sendto(datagram, ("127.0.0.1", self.udp_port))
            except BlockingIOError:
                return
            sent += 1

        for i in range(10_000):
            send(JUNK[i % len(JUNK)])
            if i % 500 == 0:
                # Let the reactor read what has arrived so far.
                pause: Deferred[None] = Deferred()
                reactor.callLater(0, pause.callback, None)
                await pause
        code, body = await self.get_json("healthz")
        self.assertEqual((code, body["status"]), (200, "ok"))
        code, body = await self.get_json("nodes")
        self.assertEqual((code, body), (200, {"nodes": []}))
        self.assertEqual(discovery.counters.accepted, 0)
        self.assertGreater(discovery.counters.read_pauses, 0)
        # Besides the junk, the node may hear its own probe, which it drops as its own.
        dropped = discovery.counters.dropped
        self.assertEqual(set(dropped) - {"own_id", "socket_buffer_full"}, {
            "not_utf8", "not_json", "not_object", "wrong_proto", "missing_key", "oversize"})
        if not sys.platform.startswith("linux"):
            return

        def accounted() -> int:
            return sum(n for reason, n in dropped.items() if reason != "own_id")

        # The kernel reports its drops with the next datagram read: send more junk until the
        # socket buffer has room again and the counts add up.
        for _ in range(100):
            if accounted() == sent:
                break
            send(JUNK[0])
            await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(accounted(), sent)
        self.assertGreater(dropped["socket_buffer_full"], 0)
