"""
The operations API: health (and, later, metrics and the OpenAPI document). Always mounted,
never behind a login, so load balancers and monitors can reach it.
"""

from __future__ import annotations

from typing import Awaitable, Callable

from klein import Klein
from twisted.web.iweb import IRequest

from meteord import __version__
from meteord.web.responses import write_json


class OperationsAPI:
    """
    ``GET /healthz``. ``store_check`` is awaited to tell whether the store answers; without
    a store (HTTP-only embedding) health reflects the process alone.
    """

    app = Klein()

    def __init__(self, store_check: Callable[[], Awaitable[bool]] | None = None) -> None:
        self._store_check = store_check

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
