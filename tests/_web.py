"""
Fixtures for the HTTP API tests: a real SQLite store, APIs mounted under ``/api`` on a loopback
port, and a treq client that answers ``(response, body)`` with the body parsed as JSON when the
response says it is JSON.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Sequence

import treq
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.web.iweb import UNKNOWN_LENGTH
from twisted.trial.unittest import TestCase
from twisted.web.server import Site

from meteord.web.auth import Authenticator
from meteord.web.root import APIRoot, MountableAPI
from tests._stores import SQLiteStoreMixin

JSON_TYPE = "application/json; charset=utf-8"


def basic(user_id: str, password: str) -> dict[bytes, list[bytes]]:
    """An Authorization header for HTTP Basic."""
    token = base64.b64encode(f"{user_id}:{password}".encode("utf-8"))
    return {b"Authorization": [b"Basic " + token]}


class WebTestCase(SQLiteStoreMixin, TestCase):
    """
    ``self.store`` (SQLite), ``self.clock`` (a task.Clock driving ``self.auth``) and
    `serve` to mount APIs on a loopback port.
    """

    async def setUp(self) -> None:
        await super().setUp()
        self.clock = task.Clock()
        self.auth = Authenticator(self.store, self.clock)

    async def serve(self, apis: Sequence[MountableAPI], prefix: str = "/api") -> str:
        """Listen on an ephemeral loopback port; the base URL with the prefix."""
        port = reactor.listenTCP(0, Site(APIRoot(prefix, apis)), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.port_number = port.getHost().port
        self.base = f"http://127.0.0.1:{self.port_number}{prefix}"
        return self.base

    async def raw_request(self, text: str) -> bytes:
        """Send ``text`` over a new connection and give all that comes back until it closes."""
        received = Deferred()
        chunks: list[bytes] = []

        class Collect(Protocol):
            def connectionMade(self) -> None:
                self.transport.write(text.encode("latin-1"))

            def dataReceived(self, data: bytes) -> None:
                chunks.append(data)

            def connectionLost(self, reason: Any) -> None:
                received.callback(b"".join(chunks))

        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port_number)
        await connectProtocol(endpoint, Collect())
        return await received

    async def add_user(self, user_id: str, password: str, roles: Sequence[str]) -> None:
        await self.store.create_or_update_user(user_id, password, list(roles))

    async def call(self, method: str, path: str, *, body: Any = None, data: bytes | None = None,
                   headers: dict[bytes, list[bytes]] | None = None,
                   content_type: bytes | None = b"application/json") -> tuple[Any, Any]:
        """
        Send a request to ``self.base + path``; ``body`` is sent as JSON, ``data`` as is.
        Returns the response and the JSON body (the raw bytes when it is not JSON).
        """
        all_headers = dict(headers or {})
        if body is not None:
            data = json.dumps(body).encode("utf-8")
        if data is not None and content_type is not None:
            all_headers.setdefault(b"Content-Type", [content_type])
        response = await treq.request(method, (self.base + path).encode("ascii"), data=data,
                                      headers=all_headers, persistent=False,
                                      allow_redirects=False)
        content = await response.content()
        if content and response.headers.getRawHeaders("content-type") == [JSON_TYPE]:
            return response, json.loads(content)
        return response, content

    def header(self, response: Any, name: str) -> str | None:
        """One response header, or None (the client keeps Content-Length apart)."""
        if name.lower() == "content-length":
            return None if response.length is UNKNOWN_LENGTH else str(response.length)
        values = response.headers.getRawHeaders(name)
        return None if values is None else values[0]
