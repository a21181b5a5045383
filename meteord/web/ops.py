"""
The operations API: health and the OpenAPI document (and, later, metrics). Always mounted,
never behind a login, so load balancers and monitors can reach it.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Sequence

from klein import Klein
from twisted.web.iweb import IRequest

from meteord import __version__
from meteord.web.errors import install_error_handlers
from meteord.web.openapi import build_document
from meteord.web.responses import write_json
from meteord.web.root import MountableAPI


class OperationsAPI:
    """
    ``GET /healthz``. ``store_check`` is awaited to tell whether the store answers; without
    a store (HTTP-only embedding) health reflects the process alone.

    ``GET /openapi.json`` describes this API and the ``documented`` ones, as mounted under
    ``prefix``; the document is built on first request and kept.
    """

    app = Klein()
    install_error_handlers(app)

    def __init__(self, store_check: Callable[[], Awaitable[bool]] | None = None, *,
                 documented: Sequence[MountableAPI] = (), prefix: str = "/api") -> None:
        self._store_check = store_check
        self._documented = list(documented)
        self._prefix = prefix
        self._document: dict[str, Any] | None = None

    @app.route("/healthz", methods=["GET", "HEAD"])
    async def healthz(self, request: IRequest) -> bytes:
        body = {"status": "ok", "version": __version__}
        if self._store_check is None:
            return write_json(request, 200, body)
        healthy = await self._store_check()
        body["store"] = "ok" if healthy else "unavailable"
        if not healthy:
            body["status"] = "unavailable"
        return write_json(request, 200 if healthy else 503, body)

    @app.route("/openapi.json", methods=["GET"])
    def openapi_document(self, request: IRequest) -> bytes:
        if self._document is None:
            self._document = build_document([self, *self._documented], self._prefix)
        request.setHeader(b"Access-Control-Allow-Origin", b"*")
        return write_json(request, 200, self._document)
