"""
Assembly of a meteord node: ``make_service(config)`` turns a configuration into a
``MultiService`` of small services (HTTP site, and the store, discovery and exporter as they
are enabled). It is the one entry point for twistd and for programs embedding meteord.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IReactorTime, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.web.server import Request, Site

from meteord import __version__
from meteord.config import Config, mask_url
from meteord.web.ops import OperationsAPI
from meteord.web.root import APIRoot

log = Logger()

HTTP_STOP_GRACE_SECONDS = 10.0


class _TrackedRequest(Request):
    """A request that registers itself with its site while it is being answered."""

    def process(self) -> None:
        in_flight = self.channel.site.in_flight
        in_flight.add(self)
        self.notifyFinish().addBoth(lambda _: in_flight.discard(self))
        super().process()


class MeteordSite(Site):
    """A ``Site`` that knows its requests in flight, so a stop can wait for them."""

    requestFactory = _TrackedRequest

    def __init__(self, resource: Any, **kwargs: Any) -> None:
        super().__init__(resource, **kwargs)
        self.in_flight: set[Request] = set()


class HTTPService(Service):
    """
    Listens on an endpoint with a ``MeteordSite``. Stopping closes the listening port at once,
    lets requests in flight finish for up to ``grace`` seconds, then drops their connections.
    """

    def __init__(
        self, endpoint: IStreamServerEndpoint, site: MeteordSite, clock: IReactorTime,
        grace: float = HTTP_STOP_GRACE_SECONDS,
    ) -> None:
        self._endpoint = endpoint
        self.site = site
        self._clock = clock
        self._grace = grace
        self.port: IListeningPort | None = None
        self._listening: Deferred[IListeningPort] | None = None

    def startService(self) -> None:
        super().startService()
        self._listening = self._endpoint.listen(self.site)

        def listening(port: IListeningPort) -> IListeningPort:
            self.port = port
            return port

        self._listening.addCallback(listening)
        self._listening.addErrback(
            lambda f: log.failure("HTTP could not listen", f) or f
        )

    def when_listening(self) -> Deferred[IListeningPort]:
        """The listening port, once it is bound (fails if binding failed)."""
        if self.port is not None:
            return succeed(self.port)
        d: Deferred[IListeningPort] = Deferred()
        assert self._listening is not None, "service not started"
        self._listening.addBoth(lambda result: d.callback(result) or result)
        return d

    async def _stop(self) -> None:
        if self.port is not None:
            await self.port.stopListening()
            self.port = None
        pending = [r.notifyFinish() for r in list(self.site.in_flight)]
        if not pending:
            return
        waiting = DeferredList(pending, consumeErrors=True)
        timer = self._clock.callLater(self._grace, waiting.cancel)
        try:
            await waiting
        except Exception:
            for request in list(self.site.in_flight):
                request.channel.transport.abortConnection()
        else:
            timer.cancel()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())


class MeteordNode(MultiService):
    """The whole node; logs what it runs with when it starts."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.setName("meteord")

    def startService(self) -> None:
        config = self.config
        log.info(
            "meteord {version} starting; config from {sources}; data dir {data_dir}; "
            "database {database}; HTTP {endpoint} ({apis}); components: {components}",
            version=__version__,
            sources=", ".join(config.describe_sources()),
            data_dir=os.path.abspath(config.node.data_dir),
            database=mask_url(config.database.url),
            endpoint=config.http.endpoint,
            apis=",".join(config.http.apis) or "ops only",
            components=", ".join(s.name for s in self) or "none",
        )
        os.makedirs(config.node.data_dir, exist_ok=True)
        super().startService()


def build_site(config: Config) -> MeteordSite:
    """The HTTP site with the APIs that ``[http] apis`` names, under ``[http] prefix``."""
    apis: list[Any] = [OperationsAPI()]
    return MeteordSite(APIRoot(config.http.prefix, apis))


def make_service(config: Config, reactor: Any = None) -> MeteordNode:
    """
    Build the node's service tree from ``config``. Components that are off are not
    constructed, and their modules not imported.
    """
    if reactor is None:
        from twisted.internet import reactor
    node = MeteordNode(config)
    if config.http.endpoint != "none":
        http = HTTPService(serverFromString(reactor, config.http.endpoint), build_site(config), reactor)
        http.setName("http")
        http.setServiceParent(node)
    return node
