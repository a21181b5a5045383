"""
Tests for meteord.testing.node: a whole node in process answers every API with its admin user,
serves the stored discovery registry at /nodes, and stops cleanly.
"""

from __future__ import annotations

import json

import treq
from twisted.internet.error import ConnectionRefusedError
from twisted.trial.unittest import TestCase

from meteord.testing.node import start_node


class InProcessNodeTests(TestCase):
    async def test_node_answers_with_its_admin(self) -> None:
        node = await start_node(self.mktemp())
        self.addCleanup(node.stop)
        response = await treq.get(node.url("login"), auth=node.admin_auth, persistent=False)
        self.assertEqual(response.code, 200)
        body = json.loads(await response.content())
        self.assertEqual(body["user"]["user_id"], "admin")
        self.assertEqual(sorted(body["user"]["roles"]), ["camera_admin", "import", "user"])

    async def test_nodes_route_serves_the_stored_registry(self) -> None:
        node = await start_node(self.mktemp())
        self.addCleanup(node.stop)
        await node.store.save_node({
            "node_id": "aabbccddeeff", "name": "cam-1", "roles": ["camera", "query"],
            "address": "192.0.2.7", "http_port": 8080, "scheme": "http", "version": "0.1.0",
            "first_seen": 1000, "last_seen": 2000, "interval": 10.0, "status": "online",
        })
        response = await treq.get(node.url("nodes"), persistent=False)
        body = json.loads(await response.content())
        self.assertEqual(body, {"nodes": [{
            "node_id": "aabbccddeeff", "name": "cam-1", "roles": ["camera", "query"],
            "address": "192.0.2.7", "http_port": 8080, "scheme": "http", "version": "0.1.0",
            "first_seen": 1000, "last_seen": 2000, "status": "offline",
        }]})

    async def test_unmounted_api_answers_404(self) -> None:
        node = await start_node(self.mktemp(), apis=("query",))
        self.addCleanup(node.stop)
        response = await treq.get(node.url("users"), auth=node.admin_auth, persistent=False)
        self.assertEqual(response.code, 404)
        self.assertEqual(json.loads(await response.content()), {"message": "Not found"})
        response = await treq.get(node.url("cameras"), persistent=False)
        self.assertEqual(response.code, 200)

    async def test_stop_closes_the_port(self) -> None:
        node = await start_node(self.mktemp())
        await node.stop()
        with self.assertRaises(ConnectionRefusedError):
            await treq.get(node.url("healthz"), persistent=False)
