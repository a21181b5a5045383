"""
Tests for the service assembly: the node starts on an ephemeral port under the real reactor,
answers health over a real socket, tolerates slashes, answers JSON 404/405, and stops cleanly
(port closed, requests in flight allowed to finish).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from typing import Any

import treq
from klein import Klein
from twisted.application.service import Service
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web._newclient import ResponseFailed
from twisted.web.server import NOT_DONE_YET, Request

from meteord import __version__
from meteord.config import load_config
from meteord.errors import StoreUnavailable
from meteord.service import HTTP_STOP_GRACE_SECONDS, StartAfter, make_service
from meteord.store.service import INITIAL_PASSWORD_FILE, write_initial_password
from tests._waiting import wait_until


def node_config(data_dir: str, options=None):
    settings = {("node", "data_dir"): data_dir, ("http", "endpoint"): "tcp:0:interface=127.0.0.1",
                ("discovery", "enabled"): "false", ("exporter", "enabled"): "false"}
    settings.update(options or {})
    return load_config(environ={}, options=settings, ephemeral_ports=True)


def slow_resource() -> tuple[Resource, Deferred[None], Deferred[None]]:
    """
    A resource that answers every request with ``{}`` once ``release`` fires; ``started``
    fires when the first request reaches it.
    """
    release: Deferred[None] = Deferred()
    started: Deferred[None] = Deferred()

    class Slow(Resource):
        isLeaf = True

        def render(self, request):
            started.callback(None)
            release.addCallback(lambda _: (request.write(b"{}"), request.finish()))
            return NOT_DONE_YET

    return Slow(), started, release


class ServiceTests(TestCase):
    async def start_node(self, options=None):
        node = make_service(node_config(self.mktemp(), options), reactor)
        node.startService()
        self.addCleanup(lambda: node.stopService() if node.running else None)
        port = await node.getServiceNamed("http").when_listening()
        self.base = f"http://127.0.0.1:{port.getHost().port}"
        return node

    async def get_json(self, path: str, method: str = "GET"):
        response = await treq.request(method, self.base + path, persistent=False)
        body = await response.content()
        return response, json.loads(body)

    async def test_healthz_over_a_real_socket(self) -> None:
        await self.start_node()
        response, body = await self.get_json("/api/healthz")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-type"),
                         ["application/json; charset=utf-8"])
        self.assertEqual(body["status"], "ok")
        self.assertEqual(body["version"], __version__)

    async def test_repeated_and_trailing_slashes_tolerated(self) -> None:
        await self.start_node()
        for path in ("/api//healthz", "/api/healthz/", "//api///healthz//"):
            response, body = await self.get_json(path)
            self.assertEqual((path, response.code), (path, 200))

    async def test_unknown_route_is_json_404(self) -> None:
        await self.start_node()
        response, body = await self.get_json("/api/nothing-here")
        self.assertEqual((response.code, body), (404, {"message": "Not found"}))
        response, body = await self.get_json("/elsewhere/healthz")
        self.assertEqual(response.code, 404)

    async def test_wrong_method_is_json_405(self) -> None:
        await self.start_node()
        response, body = await self.get_json("/api/healthz", method="DELETE")
        self.assertEqual((response.code, body), (405, {"message": "Method not allowed"}))
        self.assertIn("GET", response.headers.getRawHeaders("allow")[0])

    async def test_configured_prefix(self) -> None:
        await self.start_node({("http", "prefix"): "/meteor/v1"})
        response, _ = await self.get_json("/meteor/v1/healthz")
        self.assertEqual(response.code, 200)
        response, _ = await self.get_json("/api/healthz")
        self.assertEqual(response.code, 404)

    async def test_http_none_builds_no_site(self) -> None:
        node = make_service(node_config(self.mktemp(), {("http", "endpoint"): "none"}), reactor)
        self.assertEqual([s.name for s in node], ["store"])

    async def test_stop_closes_the_port(self) -> None:
        node = await self.start_node()
        await node.stopService()
        with self.assertRaises(ConnectionRefusedError):
            await treq.get(self.base + "/api/healthz", persistent=False)

    async def test_stop_lets_a_request_in_flight_finish(self) -> None:
        node = await self.start_node()
        site = node.getServiceNamed("http").site
        site.resource, started, release = slow_resource()
        response_d = treq.get(self.base + "/api/healthz", persistent=False)
        await started
        stopped = node.stopService()
        self.assertFalse(stopped.called)
        release.callback(None)
        response = await response_d
        self.assertEqual(response.code, 200)
        await response.content()
        await stopped

    async def test_stop_drops_a_request_still_in_flight_after_the_grace(self) -> None:
        node = await self.start_node()
        http = node.getServiceNamed("http")
        clock = Clock()
        http._clock = clock
        http.site.resource, started, _ = slow_resource()
        response_d = treq.get(self.base + "/api/healthz", persistent=False)
        await started
        stopped = node.stopService()
        # the grace starts once the port has closed
        await wait_until(clock.getDelayedCalls, "the grace timer", interval=0.001)
        clock.advance(HTTP_STOP_GRACE_SECONDS - 0.1)
        self.assertEqual(len(http.site.in_flight), 1)
        clock.advance(0.1)
        await stopped
        self.assertEqual(self.flushLoggedErrors(), [])
        with self.assertRaises(ResponseFailed):
            await response_d
        self.assertEqual(http.site.in_flight, set())

    async def test_first_start_creates_admin_with_password_file(self) -> None:
        data_dir = self.mktemp()
        node = make_service(node_config(data_dir), reactor)
        node.startService()
        self.addCleanup(lambda: node.stopService() if node.running else None)
        store = await node.getServiceNamed("store").when_ready()
        path = os.path.join(data_dir, "initial-admin-password")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        with open(path) as f:
            password = f.read().strip()
        user = await store.get_user("admin", password)
        self.assertEqual(user.roles, frozenset({"user", "camera_admin", "import"}))

    def test_initial_password_file_left_readable_is_restricted_first(self) -> None:
        data_dir = self.mktemp()
        os.mkdir(data_dir)
        path = os.path.join(data_dir, INITIAL_PASSWORD_FILE)
        with open(path, "w") as f:
            f.write("an older and longer password\n")
        os.chmod(path, 0o644)
        self.assertEqual(write_initial_password(data_dir, "new"), path)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        with open(path) as f:
            self.assertEqual(f.read(), "new\n")

    def test_initial_password_not_written_through_a_symlink(self) -> None:
        data_dir = self.mktemp()
        os.mkdir(data_dir)
        elsewhere = os.path.abspath(self.mktemp())
        with open(elsewhere, "w") as f:
            f.write("not the password's\n")
        os.symlink(elsewhere, os.path.join(data_dir, INITIAL_PASSWORD_FILE))
        self.assertRaises(OSError, write_initial_password, data_dir, "new")
        with open(elsewhere) as f:
            self.assertEqual(f.read(), "not the password's\n")

    async def test_second_start_keeps_the_admin(self) -> None:
        data_dir = self.mktemp()
        for _ in range(2):
            node = make_service(node_config(data_dir), reactor)
            node.startService()
            store = await node.getServiceNamed("store").when_ready()
            users = await store.get_users()
            await node.stopService()
        self.assertEqual([u.user_id for u in users], ["admin"])

    async def test_healthz_reports_the_store(self) -> None:
        node = await self.start_node()
        response, body = await self.get_json("/api/healthz")
        self.assertEqual(body["store"], "ok")
        store = node.getServiceNamed("store").store
        self.patch(store, "run", lambda *args: fail(StoreUnavailable("database unavailable")))
        response, body = await self.get_json("/api/healthz")
        self.assertEqual((response.code, body["status"], body["store"]), (503, "unavailable", "unavailable"))


    async def test_slow_request_answered_503_after_the_timeout(self) -> None:
        site, clock, (started,) = await self.stuck_site(1, timeout="2.5")
        response_d = treq.get(self.base + "/api/healthz", persistent=False)
        await started
        (request,) = site.in_flight
        clock.advance(2.4)
        self.assertFalse(request.finished)
        clock.advance(0.1)
        self.assertTrue(request.finished)
        response = await response_d
        self.assertEqual(response.code, 503)
        self.assertEqual(json.loads(await response.content()), {"message": "Request timed out"})
        self.assertEqual(site.in_flight, set())

    async def site_on_a_test_clock(self, timeout: str) -> tuple[Any, Clock]:
        """A node whose requests time out after ``timeout`` seconds of a test clock."""
        node = await self.start_node({("http", "request_timeout"): timeout})
        site = node.getServiceNamed("http").site
        site.clock = Clock()
        return site, site.clock

    async def stuck_site(self, requests: int, timeout: str = "2"
                         ) -> tuple[Any, Clock, list[Deferred[Request]]]:
        """
        `site_on_a_test_clock` with a resource that never answers (but answers ``/done`` at
        once); the i-th request that reaches it fires the i-th of the Deferreds returned.
        """
        site, clock = await self.site_on_a_test_clock(timeout)
        arrived: list[Deferred[Request]] = [Deferred() for _ in range(requests)]
        waiting = list(arrived)

        class Stuck(Resource):
            isLeaf = True

            def render(self, request):
                if request.path.endswith(b"/done"):
                    return b"{}"
                waiting.pop(0).callback(request)
                return NOT_DONE_YET  # and never done

        site.resource = Stuck()
        return site, clock, arrived

    async def test_each_request_times_out_at_its_own_deadline(self) -> None:
        site, clock, (first_arrived, second_arrived) = await self.stuck_site(2)
        first_d = treq.get(self.base + "/api/first", persistent=False)
        first = await first_arrived
        clock.advance(1.5)
        second_d = treq.get(self.base + "/api/second", persistent=False)
        second = await second_arrived
        # A request answered in time leaves the others' deadlines as they were.
        done = await treq.get(self.base + "/api/done", persistent=False)
        self.assertEqual(done.code, 200)
        await done.content()
        clock.advance(0.5)
        self.assertEqual((first.finished, second.finished), (True, False))
        clock.advance(1.4)
        self.assertFalse(second.finished)
        clock.advance(0.1)
        self.assertTrue(second.finished)
        for response_d in (first_d, second_d):
            response = await response_d
            self.assertEqual(response.code, 503)
            await response.content()
        self.assertEqual(site.in_flight, set())
        self.assertEqual(clock.getDelayedCalls(), [])

    async def test_a_pipelined_request_started_by_a_time_out_keeps_one_timer(self) -> None:
        site, clock, (first_arrived, second_arrived) = await self.stuck_site(2)
        received: Deferred[bytes] = Deferred()
        request_bytes = b"GET /api/x HTTP/1.1\r\nHost: localhost\r\n\r\n"

        class Client(Protocol):
            data = b""

            def dataReceived(self, data: bytes) -> None:
                self.data += data
                if self.data.count(b"HTTP/1.1 503") == 2:
                    received.callback(self.data)
                    self.transport.loseConnection()

        port = int(self.base.rsplit(":", 1)[1])
        client = await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
            Factory.forProtocol(Client))
        client.transport.write(request_bytes)
        first = await first_arrived
        # The second request reaches the server while the first is handled: twisted.web
        # keeps it, and starts it as soon as the first is answered, within the time-out.
        client.transport.write(request_bytes)
        await wait_until(lambda: first.channel._dataBuffer, "the pipelined request",
                         interval=0.001)
        self.assertTrue(first.channel._dataBuffer)
        clock.advance(2)
        self.assertTrue(first.finished)
        second = self.successResultOf(second_arrived)
        self.assertEqual([call.getTime() for call in clock.getDelayedCalls()], [4.0])
        clock.advance(2)
        self.assertTrue(second.finished)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual((await received).count(b"Request timed out"), 2)

    async def test_what_a_handler_writes_after_its_time_out_is_dropped(self) -> None:
        site, clock = await self.site_on_a_test_clock("2")
        started: Deferred[None] = Deferred()
        release: Deferred[None] = Deferred()
        app = Klein()

        @app.route("/api/late", methods=["GET"])
        async def late(request: Request) -> bytes:
            started.callback(None)
            await release
            return b'{"late": true}'

        site.resource = app.resource()
        response_d = treq.get(self.base + "/api/late", persistent=False)
        await started
        clock.advance(2)
        response = await response_d
        self.assertEqual(json.loads(await response.content()), {"message": "Request timed out"})
        release.callback(None)  # a write after the 503 would be logged as an error
        self.assertEqual(self.flushLoggedErrors(), [])


class StartAfterTests(TestCase):
    """Children that start once something is ready."""

    def test_children_start_when_ready_and_one_failing_is_logged(self) -> None:
        ready: Deferred[None] = Deferred()
        after = StartAfter(lambda: ready)
        broken, working = Service(), Service()
        broken.setName("broken")
        broken.startService = lambda: 1 / 0
        broken.setServiceParent(after)
        working.setServiceParent(after)
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        after.startService()
        self.assertFalse(working.running)
        ready.callback(None)
        self.assertTrue(working.running)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertIn("broken could not start", [formatEvent(e) for e in events])

    def test_a_stop_before_ready_starts_nothing(self) -> None:
        ready: Deferred[None] = Deferred()
        after = StartAfter(lambda: ready)
        child = Service()
        child.setServiceParent(after)
        after.startService()
        self.successResultOf(after.stopService())
        self.assertTrue(ready.called)
        self.assertFalse(child.running)


    def test_a_failed_wait_is_logged_and_starts_nothing(self) -> None:
        ready: Deferred[None] = Deferred()
        after = StartAfter(lambda: ready)
        child = Service()
        child.setName("exporter")
        child.setServiceParent(after)
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        after.startService()
        ready.errback(RuntimeError("the store gave up"))
        self.assertFalse(child.running)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertIn("waiting to start exporter failed", [formatEvent(e) for e in events])


class AccessLogTests(TestCase):
    """``[http] access_log``: the daemon's log, a file of its own, or nothing."""

    async def request_with_access_log(self, access_log: str) -> list[str]:
        """Answer one request; the access log lines that reached the daemon's log."""
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        node = make_service(node_config(self.mktemp(), {("http", "access_log"): access_log}),
                            reactor)
        node.startService()
        self.addCleanup(lambda: node.stopService() if node.running else None)
        port = await node.getServiceNamed("http").when_listening()
        response = await treq.get(f"http://127.0.0.1:{port.getHost().port}/api/healthz",
                                  persistent=False, headers={"User-Agent": "access-test"})
        await response.content()
        await node.stopService()
        access = [event for event in events if '"GET /api/healthz' in formatEvent(event)]
        self.namespaces = [event["log_namespace"] for event in access]
        return [formatEvent(event) for event in access]

    async def test_daemon_log_by_default(self) -> None:
        (line,) = await self.request_with_access_log("log")
        self.assertIn('"GET /api/healthz HTTP/1.1" 200', line)
        self.assertIn('"access-test"', line)
        self.assertEqual(self.namespaces, ["meteord.access"])

    async def test_file(self) -> None:
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("kept\n")
        self.assertEqual(await self.request_with_access_log(path), [])
        with open(path) as f:
            kept, line = f.read().splitlines()
        self.assertEqual(kept, "kept")
        self.assertRegex(line, r'^"127\.0\.0\.1" - - \[[^]]+\] "GET /api/healthz HTTP/1\.1" 200 '
                               r'\d+ "-" "access-test"$')

    async def test_off(self) -> None:
        self.assertEqual(await self.request_with_access_log("off"), [])

    async def test_file_that_cannot_be_opened_falls_back_to_the_daemon_log(self) -> None:
        """Checked at configuration time, unopenable at start: HTTP still answers."""
        path = os.path.abspath(self.mktemp())
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        node = make_service(node_config(self.mktemp(), {("http", "access_log"): path}),
                            reactor)
        os.mkdir(path)
        node.startService()
        self.addCleanup(lambda: node.stopService() if node.running else None)
        port = await node.getServiceNamed("http").when_listening()
        response = await treq.get(f"http://127.0.0.1:{port.getHost().port}/api/healthz",
                                  persistent=False)
        self.assertEqual(response.code, 200)
        await response.content()
        await node.stopService()
        text = [formatEvent(event) for event in events]
        self.assertTrue(any("[http] access_log: cannot open" in line for line in text))
        self.assertTrue(any('"GET /api/healthz HTTP/1.1" 200' in line for line in text))

    async def test_requests_finishing_during_a_stop_are_in_the_file(self) -> None:
        path = os.path.abspath(self.mktemp())
        node = make_service(node_config(self.mktemp(), {("http", "access_log"): path}),
                            reactor)
        node.startService()
        self.addCleanup(lambda: node.stopService() if node.running else None)
        http = node.getServiceNamed("http")
        port = await http.when_listening()
        http.site.resource, started, release = slow_resource()
        factory_stopped: Deferred[None] = Deferred()
        stop_factory = http.site.stopFactory

        def stopping_factory() -> None:
            stop_factory()
            factory_stopped.callback(None)

        http.site.stopFactory = stopping_factory
        response_d = treq.get(f"http://127.0.0.1:{port.getHost().port}/slow", persistent=False)
        await started
        stopped = node.stopService()
        await factory_stopped  # the port is closed; the request is still in flight
        release.callback(None)
        await (await response_d).content()
        await stopped
        with open(path) as f:
            self.assertIn('"GET /slow HTTP/1.1" 200', f.read())


class ComponentTests(TestCase):
    def test_components_present_when_enabled(self) -> None:
        config = node_config(self.mktemp(), {("http", "endpoint"): "tcp:18099:interface=127.0.0.1",
                                             ("discovery", "enabled"): "true"})
        node = make_service(config, reactor)
        self.assertEqual([s.name for s in node], ["store", "discovery", "http"])

    def test_disabled_components_are_not_imported(self) -> None:
        data_dir = self.mktemp()
        script = (
            "import sys\n"
            "from twisted.internet import reactor\n"
            "from meteord.config import load_config\n"
            "from meteord.service import make_service\n"
            f"config = load_config(environ={{}}, options={{('node', 'data_dir'): {data_dir!r},"
            " ('discovery', 'enabled'): 'false', ('exporter', 'enabled'): 'false'})\n"
            "make_service(config, reactor)\n"
            "print(sorted(m for m in sys.modules if m.startswith(('meteord.protocols', 'meteord.exporter'))))\n"
        )
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self.assertEqual(result.stdout.strip(), "[]", result.stderr)
