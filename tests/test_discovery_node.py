"""
Discovery inside a whole node: the daemon announces itself, serves its live registry at
``GET /api/nodes``, and a flood of junk datagrams leaves the registry clean and the HTTP API
answering.
"""

from __future__ import annotations

import json
import socket

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from meteord.config import load_config
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
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sender.close)
        sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        for i in range(10_000):
            try:
                sender.sendto(JUNK[i % len(JUNK)], ("127.0.0.1", self.udp_port))
            except BlockingIOError:
                pass
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
        # Besides the junk, the node hears its own probe, which it drops as its own.
        junk = {reason: n for reason, n in discovery.counters.dropped.items() if reason != "own_id"}
        self.assertEqual(set(junk), {
            "not_utf8", "not_json", "not_object", "wrong_proto", "missing_key", "oversize"})
