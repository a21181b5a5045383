"""
Assembly of a meteord node: ``make_service(config)`` turns a configuration into a
``MultiService`` of small services (HTTP site, and the store, discovery and exporter as they
are enabled). It is the one entry point for twistd and for programs embedding meteord.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from twisted.application.service import MultiService, Service
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    fail,
    maybeDeferred,
    succeed,
)
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IReactorTime, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.web.server import Request, Site

from meteord import __version__
from meteord.config import ACCESS_LOG_CHOICES, Config, mask_url
from meteord.logs import ACCESS_NAMESPACE
from meteord.web._request import StreamingRequest
from meteord.web.ops import OperationsAPI
from meteord.web.responses import write_json_error
from meteord.web.root import APIRoot

log = Logger()
_access_log = Logger(namespace=ACCESS_NAMESPACE)

HTTP_STOP_GRACE_SECONDS = 10.0


class _TrackedRequest(StreamingRequest):
    """
    A request that registers itself with its site while it is being answered, and is answered
    503 if it has not started its response within the site's request timeout. (Upload bodies
    stream to the site's body receivers before processing starts, so the timeout covers the
    handling, not the transfer; a download that has started is never cut off.)
    """

    def process(self) -> None:
        site = self.channel.site
        site.track(self)
        self.notifyFinish().addBoth(lambda _: site.untrack(self))
        super().process()

    timed_out = False

    def time_out(self) -> None:
        """
        Answer 503 unless the response is done or under way, or the client is gone. What the
        handler writes when it ends after all is dropped.
        """
        if self.finished or self._disconnected or self.startedWriting:
            return
        log.warn("{method} {path} timed out", method=self.method.decode("ascii", "replace"),
                 path=self.path.decode("utf-8", "replace"))
        body = write_json_error(self, 503, "Request timed out")
        self.write(body)
        self.finish()
        self.timed_out = True

    def write(self, data: bytes) -> None:
        if not self.timed_out:
            super().write(data)


class MeteordSite(Site):
    """
    A ``Site`` that knows its requests in flight, so a stop can wait for them, and answers 503
    to requests that take longer than ``request_timeout`` seconds on ``clock``. Its access log
    (``[http] access_log``) goes to the daemon's log (``"log"``), nowhere (``"off"``) or,
    appended by twisted.web itself, to a file (a path).
    """

    requestFactory = _TrackedRequest

    def __init__(self, resource: Any, clock: IReactorTime, request_timeout: float = 60.0,
                 access_log: str = "log", **kwargs: Any) -> None:
        if access_log not in ACCESS_LOG_CHOICES:
            kwargs["logPath"] = access_log
        super().__init__(resource, **kwargs)
        self.clock = clock
        self.request_timeout = request_timeout
        self.in_flight: set[Request] = set()
        self._access_log = access_log
        # Deadlines of the requests in flight, oldest first (the timeout is the same for all),
        # and the one timer due at the oldest: a busy site schedules a timer now and then
        # rather than one per request.
        self._deadlines: dict[Request, float] = {}
        self._deadline_call: Any = None

    def track(self, request: Request) -> None:
        """``request`` is being answered; it times out ``request_timeout`` seconds from now."""
        self.in_flight.add(request)
        self._deadlines[request] = self.clock.seconds() + self.request_timeout
        if self._deadline_call is None:
            self._deadline_call = self.clock.callLater(self.request_timeout, self._time_out)

    def untrack(self, request: Request) -> None:
        """``request`` is done with; with nothing left in flight, no timer stays pending."""
        self.in_flight.discard(request)
        self._deadlines.pop(request, None)
        if not self._deadlines and self._deadline_call is not None:
            self._deadline_call.cancel()
            self._deadline_call = None

    def _time_out(self) -> None:
        """
        Time out the requests whose deadline has passed, once the timer for the next one is
        set: answering one can start the next request pipelined on its connection, which is
        tracked (and must find that timer) there and then.
        """
        now = self.clock.seconds()
        expired = []
        for request, deadline in self._deadlines.items():
            if deadline > now:
                break
            expired.append(request)
        for request in expired:
            del self._deadlines[request]
        self._deadline_call = None
        for deadline in self._deadlines.values():
            self._deadline_call = self.clock.callLater(deadline - now, self._time_out)
            break
        for request in expired:
            request.time_out()

    def log(self, request: Request) -> None:
        if self._access_log == "log":
            _access_log.info("{line}", line=self._logFormatter(self._logDateTime, request))
        elif self._access_log != "off":
            super().log(request)

    def _openLogFile(self, path: Any) -> Any:
        """
        The access log file. One that cannot be opened (the configuration was checked as
        another user than the one that runs the node) sends the lines to the daemon's log.
        """
        try:
            return super()._openLogFile(path)
        except OSError as e:
            log.error("[http] access_log: cannot open {path} ({error}); access lines go to "
                      "the daemon's log instead", path=path, error=e.strerror or e)
            self._access_log = "log"
            return None

    def stopFactory(self) -> None:
        """
        Closes the access log once the requests in flight have finished (a stop lets them
        finish after the port has closed), so that their lines are written too.
        """
        pending = [request.notifyFinish() for request in self.in_flight]
        if not pending:
            super().stopFactory()
            return
        DeferredList(pending, consumeErrors=True).addCallback(self._stop_when_idle)

    def _stop_when_idle(self, _: object) -> None:
        if self.numPorts == 0:
            super().stopFactory()


class HTTPService(Service):
    """
    Listens on an endpoint with a ``MeteordSite``. Stopping closes the listening port at once,
    lets requests in flight finish for up to ``grace`` seconds, then drops their connections.
    """

    def __init__(
        self, endpoint: IStreamServerEndpoint, site: MeteordSite, clock: IReactorTime,
        grace: float = HTTP_STOP_GRACE_SECONDS,
        wait_for: Callable[[], Deferred[Any]] | None = None,
    ) -> None:
        self._wait_for = wait_for
        self._endpoint = endpoint
        self.site = site
        self._clock = clock
        self._grace = grace
        self.port: IListeningPort | None = None
        self._listening: Deferred[IListeningPort] | None = None
        self._listen_failure: Any = None

    def startService(self) -> None:
        super().startService()
        if self._wait_for is None:
            self._listening = self._endpoint.listen(self.site)
        else:
            self._listening = self._wait_for().addCallback(
                lambda _: self._endpoint.listen(self.site))

        def listening(port: IListeningPort) -> IListeningPort:
            self.port = port
            return port

        self._listening.addCallback(listening)
        self._listening.addErrback(self._not_listening)

    def _not_listening(self, failure: Any) -> None:
        if not failure.check(CancelledError):
            log.failure("HTTP could not listen", failure)
        self._listen_failure = failure

    def when_listening(self) -> Deferred[IListeningPort]:
        """The listening port, once it is bound (fails if binding failed)."""
        if self.port is not None:
            return succeed(self.port)
        if self._listen_failure is not None:
            return fail(self._listen_failure)
        d: Deferred[IListeningPort] = Deferred()
        assert self._listening is not None, "service not started"
        self._listening.addBoth(lambda _: d.callback(self.port) if self.port is not None
                                else d.errback(self._listen_failure))
        return d

    async def _stop(self) -> None:
        if self._listening is not None and not self._listening.called:
            self._listening.cancel()
        if self.port is not None:
            await self.port.stopListening()
            self.port = None
        pending = [r.notifyFinish() for r in list(self.site.in_flight)]
        if not pending:
            return
        waiting = DeferredList(pending, consumeErrors=True)
        timer = self._clock.callLater(self._grace, waiting.cancel)
        # A cancelled DeferredList fires (with its members' CancelledErrors), so whether the
        # grace ran out is the timer's to say.
        await waiting
        if timer.active():
            timer.cancel()
            return
        for request in list(self.site.in_flight):
            request.channel.transport.abortConnection()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())


class StartAfter(MultiService):
    """
    Children that need something first (the store, above all): they start once ``wait_for()``
    fires, and never if the node stops before that.
    """

    def __init__(self, wait_for: Callable[[], Deferred[Any]]) -> None:
        super().__init__()
        self._wait_for = wait_for
        self._waiting: Deferred[Any] | None = None

    def startService(self) -> None:
        Service.startService(self)
        self._waiting = self._wait_for()
        self._waiting.addCallback(self._start_children)
        self._waiting.addErrback(self._not_started)

    def _start_children(self, _: object) -> None:
        """Start each child; one that cannot start (its port taken, say) is logged, not fatal."""
        for child in self:
            try:
                child.startService()
            except Exception:
                log.failure("{name} could not start", name=child.name or child)

    def _not_started(self, failure: Any) -> None:
        if not failure.check(CancelledError):
            log.failure("waiting to start {names} failed", failure,
                        names=", ".join(str(child.name or child) for child in self))

    def stopService(self) -> Deferred[Any]:
        if self._waiting is not None and not self._waiting.called:
            self._waiting.cancel()
            Service.stopService(self)
            return succeed(None)
        return super().stopService()


class MeteordNode(MultiService):
    """
    The whole node; logs what it runs with when it starts. It stops its children one after
    the other, last started first, so HTTP and the exporter are done with the store before the
    store closes.
    """

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

    async def _stop_in_order(self) -> None:
        for child in reversed(list(self)):
            try:
                await maybeDeferred(child.stopService)
            except Exception:
                log.failure("stopping {name} failed", name=child.name)

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        return Deferred.fromCoroutine(self._stop_in_order())


def build_site(config: Config, store: Any, reactor: Any,
               nodes: Callable[[], Deferred[list[dict[str, Any]]]] | None = None) -> MeteordSite:
    """
    The HTTP site with the APIs that ``[http] apis`` names, under ``[http] prefix``; one
    authenticator serves them all, so a user changed through the admin API is forgotten
    everywhere at once.
    """
    from meteord.web.auth import Authenticator

    authenticator = Authenticator(store, reactor)
    apis: list[Any] = []
    receivers = []
    if "query" in config.http.apis:
        from meteord.web.query import QueryAPI

        apis.append(QueryAPI(store, authenticator, public=config.http.public_query, nodes=nodes))
    if "admin" in config.http.apis:
        from meteord.web.admin import AdminAPI

        apis.append(AdminAPI(store, authenticator, reactor))
    if "import" in config.http.apis:
        from meteord.web.importer import ImportAPI

        importer = ImportAPI(store, authenticator, reactor,
                             max_upload_bytes=config.files.max_upload_bytes)
        apis.append(importer)
        receivers.append(importer.body_receiver(config.http.prefix))
    ops = OperationsAPI(store_check=store.check, documented=apis, prefix=config.http.prefix)
    site = MeteordSite(APIRoot(config.http.prefix, [ops, *apis]), reactor,
                       request_timeout=config.http.request_timeout,
                       access_log=config.http.access_log)
    site.body_receivers = receivers
    return site


def _registry_nodes(discovery: Any) -> Callable[[], Deferred[list[dict[str, Any]]]]:
    """The live registry of this node's discovery service."""

    def nodes() -> Deferred[list[dict[str, Any]]]:
        return succeed(discovery.nodes())

    return nodes


def _stored_nodes(store: Any, clock: Any) -> Callable[[], Deferred[list[dict[str, Any]]]]:
    """The registry as last saved, for a node that does not run discovery itself."""

    def nodes() -> Deferred[list[dict[str, Any]]]:
        from meteord.protocols.registry import record_from_stored

        now_ms = int(clock.seconds() * 1000)
        return store.load_nodes().addCallback(
            lambda stored: [record_from_stored(n).to_json(now_ms) for n in stored])

    return nodes


def make_service(config: Config, reactor: Any = None) -> MeteordNode:
    """
    Build the node's service tree from ``config``. Components that are off (discovery, the
    exporter, each of the query, admin and import APIs) are not constructed, and their modules
    not imported.
    """
    if reactor is None:
        from twisted.internet import reactor
    from meteord.store.service import StoreService
    from meteord.store.sql import build_store

    node = MeteordNode(config)
    store = build_store(config.database.url, config.files.path, default_camera_id=config.node.id,
                        pool_size=config.database.pool_size, reactor=reactor)
    store_service = StoreService(store, config.node.data_dir, reactor)
    store_service.setServiceParent(node)
    nodes = _stored_nodes(store, reactor)
    http_port = _announced_port(config, reactor)
    if config.discovery.enabled and http_port is None:
        log.warn("discovery left out: HTTP is off or on an ephemeral port, nothing to announce")
    elif config.discovery.enabled:
        discovery = _make_discovery(config, store, http_port, reactor)
        nodes = _registry_nodes(discovery)
        after_store = StartAfter(store_service.when_ready)
        after_store.setName("discovery")
        discovery.setServiceParent(after_store)
        after_store.setServiceParent(node)
    if config.exporter.enabled:
        from meteord.exporter.service import make_exporter_service

        after_store = StartAfter(store_service.when_ready)
        after_store.setName("exporter")
        make_exporter_service(config, store, reactor).setServiceParent(after_store)
        after_store.setServiceParent(node)
    if config.http.endpoint != "none":
        http = HTTPService(serverFromString(reactor, config.http.endpoint),
                           build_site(config, store, reactor, nodes), reactor,
                           wait_for=store_service.when_ready)
        http.setName("http")
        http.setServiceParent(node)
    return node


def node_roles(config: Config) -> list[str]:
    """
    What this node offers, as discovery announces it: its mounted APIs, ``hub`` when it
    imports, ``camera`` when it exports.
    """
    roles = list(config.http.apis) if config.http.endpoint != "none" else []
    if "import" in roles:
        roles.append("hub")
    if config.exporter.enabled:
        roles.append("camera")
    return roles


def _announced_port(config: Config, reactor: Any) -> int | None:
    """The TCP port of the HTTP endpoint, or None when there is none to announce."""
    if config.http.endpoint == "none":
        return None
    return getattr(serverFromString(reactor, config.http.endpoint), "_port", None) or None


def _make_discovery(config: Config, store: Any, http_port: int, reactor: Any) -> Service:
    from meteord.protocols.discovery import DiscoveryService

    return DiscoveryService(
        reactor=reactor, node_id=config.node.id, name=config.node.name,
        roles=node_roles(config), http_port=http_port,
        scheme="https" if config.http.endpoint.startswith("ssl:") else "http",
        port=config.discovery.port, interval=config.discovery.interval,
        targets=config.discovery.targets, secret=config.discovery.secret or None,
        max_nodes=config.discovery.max_nodes,
        max_datagrams_per_second=config.discovery.max_datagrams_per_second, store=store,
    )
