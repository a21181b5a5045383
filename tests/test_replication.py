"""
Replication between two real nodes on loopback: a camera node on SQLite exporting to a hub on
PostgreSQL through the import API, with the exporter service on the real reactor. After each
scenario the hub must hold exactly the source's events, files, statuses and bytes; faults are
injected by a TCP proxy in front of the hub (refusing, answering 500 or garbage, cutting an
upload), by stopping the hub, and by corrupting a file on the sender.
"""

from __future__ import annotations

import os
import socket
import sys
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory
from twisted.protocols.portforward import ProxyServer
from twisted.trial.unittest import TestCase

from meteord.exporter.policy import FailurePolicy
from meteord.exporter.service import ExporterService
from meteord.model import (
    CameraStatus, EventSearch, ExportConfiguration, FileRecordSearch, Location, Meta,
    Orientation, new_id)
from meteord.store._sql import Query
from meteord.testing.node import RunningNode, start_node
from tests._postgres import fresh_postgres_url
from tests._process import ChildProcess
from tests._waiting import wait_until

CAMERA = "0123456789ab"
T0 = datetime(2024, 3, 1, 20, tzinfo=timezone.utc)
IMPORT_USER = ("camera-node", "import-password")


def _camera_status(name: str) -> CameraStatus:
    return CameraStatus(
        camera_id=CAMERA, status_id=new_id(), lens="VF-DCD-AI-3.5-18", sensor="WATEC_902H",
        software_version=2, valid_from=T0, inst_name=name,
        location=Location(lat=52.2, long=0.12, gps=True, error=5.0),
        orientation=Orientation(alt=45.0, az=180.0, error=1.5, rot=0.0, width=30.0))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Front(ProxyServer):
    """
    One connection through `FaultyFront`: forwarded to the hub, or answered by the front
    itself (`500`, `garbage`) once the whole request has arrived, or cut mid-upload.
    """

    factory: "FaultyFront"

    def connectionMade(self) -> None:
        self.factory.connections += 1
        self._buffer = b""
        self._received = 0
        self.mode = self.factory.mode
        if self.mode == "drop":
            self.transport.abortConnection()
            return
        self.factory.open.add(self)
        if self.mode == "forward":
            super().connectionMade()

    def connectionLost(self, reason: Any) -> None:
        self.factory.open.discard(self)
        super().connectionLost(reason)

    def cut(self) -> None:
        self.transport.abortConnection()
        if self.peer is not None:
            self.peer.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        self._received += len(data)
        front = self.factory
        if self.mode == "forward":
            if front.cut_uploads and self._received > front.cut_after_bytes:
                front.cut_uploads -= 1
                front.cuts += 1
                self.cut()
                return
            super().dataReceived(data)
            return
        self._buffer += data
        head, separator, body = self._buffer.partition(b"\r\n\r\n")
        if not separator:
            return
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(body) < length:
            return
        front.answered += 1
        if self.mode == "500":
            status, payload = b"500 Internal Server Error", b"oops"
        else:
            status, payload = b"200 OK", b"<html>?</html>"
        self.transport.write(b"HTTP/1.1 %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                             % (status, len(payload), payload))
        self.transport.loseConnection()


class FaultyFront(Factory):
    """
    A TCP front for the hub whose behaviour the test switches: `mode` is `forward`, `drop`
    (connections closed at once), `500` or `garbage`; upload cuts; `cut_all()`. It counts
    the `connections` made to it.
    """

    protocol = _Front

    def __init__(self, hub_port: int) -> None:
        self.host = "127.0.0.1"
        self.port = hub_port
        self.mode = "forward"
        self.open: set[_Front] = set()
        self.cut_uploads = 0
        self.cut_after_bytes = 0
        self.cuts = 0
        self.answered = 0
        self.connections = 0

    def cut_all(self) -> None:
        """Abort every open connection, both ways."""
        for connection in list(self.open):
            connection.cut()


def _attempts_made() -> Any:
    """The claims made of all export tasks, as a store operation."""
    rows = yield Query("SELECT SUM(attempts) FROM export_tasks")
    return rows[0][0]


class ReplicationMixin:
    """Starts nodes, fills the camera node, runs an exporter and compares the two stores."""

    def setUp(self) -> None:
        self.hub_url = fresh_postgres_url()
        self.hub_dir = os.path.abspath(self.mktemp())

    async def start_hub(self, port: int = 0) -> RunningNode:
        settings = {("http", "endpoint"): f"tcp:{port}:interface=127.0.0.1"} if port else {}
        hub = await start_node(self.hub_dir, database_url=self.hub_url, apis=("import",),
                               settings=settings)
        await hub.store.create_or_update_user(IMPORT_USER[0], IMPORT_USER[1], ["import"])
        self.addCleanup(self._stop_node, hub)
        return hub

    async def _stop_node(self, node: RunningNode) -> None:
        if node.service.running:
            await node.stop()

    async def start_camera(self, database_url: Optional[str] = None) -> RunningNode:
        camera = await start_node(os.path.abspath(self.mktemp()), database_url=database_url,
                                  apis=("query",), settings={("node", "id"): CAMERA})
        self.addCleanup(self._stop_node, camera)
        return camera

    async def populate(self, store: Any, events: int, stand_alone: int = 0,
                       file_bytes: int = 3000) -> None:
        """`events` events with one or two files each, a status change half-way, and files."""
        await store.update_camera_status(_camera_status("first"), T0, CAMERA)
        await store.update_camera_status(_camera_status("second"),
                                         T0 + timedelta(seconds=events // 2), CAMERA)
        work = os.path.abspath(self.mktemp())
        os.makedirs(work)
        for i in range(events):
            when = T0 + timedelta(seconds=i, milliseconds=500)
            records = [await self._register_file(store, work, when, file_bytes, f"e{i}-{j}")
                       for j in range(1 + i % 2)]
            await store.register_event(CAMERA, when, "meteorpi:meteor", records,
                                       [Meta(key="meteorpi:brightness", type="number",
                                             value=float(i))])
        for i in range(stand_alone):
            await self._register_file(store, work, T0 + timedelta(seconds=i, milliseconds=700),
                                      file_bytes, f"log{i}")

    async def _register_file(self, store: Any, work: str, when: datetime, size: int,
                             name: str) -> Any:
        path = os.path.join(work, name)
        with open(path, "wb") as f:
            f.write(os.urandom(size))
        return await store.register_file(path, "image/png", "meteorpi:image", when, [],
                                          camera_id=CAMERA, file_name=f"{name}.png")

    async def add_exports(self, store: Any, target_url: str) -> list[ExportConfiguration]:
        configs = []
        for kind, search in (("event", EventSearch()), ("file", FileRecordSearch())):
            config = ExportConfiguration(
                config_id=new_id(), type=kind, target_url=target_url, user_id=IMPORT_USER[0],
                password=IMPORT_USER[1], search=search, config_name=f"{kind}s to the hub",
                config_description="", enabled=True)
            configs.append(await store.create_or_update_export_configuration(config))
        return configs

    async def exporter_process(self, database_url: str, files_path: str) -> ChildProcess:
        """A second meteord process exporting from `database_url` (files in `files_path`)."""
        process = ChildProcess()
        repository = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = {**os.environ, "PYTHONPATH": repository, "METEORD_FILES_PATH": files_path,
               "METEORD_EXPORTER_MARK_INTERVAL": "0.1", "METEORD_EXPORTER_CONCURRENCY": "3"}
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        transport = reactor.spawnProcess(
            process, twistd, [twistd, "-n", "--pidfile=", "meteord", "--data-dir",
                              os.path.abspath(self.mktemp()), "--database", database_url,
                              "--http", "none", "--no-discovery"], env=env)

        async def stop() -> None:
            if not process.ended.called:
                transport.signalProcess("TERM")
            await process.ended

        self.addCleanup(stop)
        return process

    def exporter(self, store: Any, **kwargs: Any) -> ExporterService:
        kwargs.setdefault("mark_interval", 0.1)
        kwargs.setdefault("failure_policy",
                          FailurePolicy(defer_on_failure=0.3, max_failures_before_disable=4))
        service = ExporterService(store, reactor, **kwargs)
        service.startService()
        self.addCleanup(self._stop_exporter, service)
        return service

    async def _stop_exporter(self, service: ExporterService) -> None:
        if service.running:
            await service.stopService()

    async def drained(self, store: Any, configs: list[ExportConfiguration], *tasks: int) -> bool:
        """Whether each configuration has its number of `tasks`, none of them pending."""
        for config, expected in zip(configs, tasks):
            status = await store.get_export_status(config.config_id)
            if status.pending or status.done + status.failed != expected:
                return False
        return True

    async def snapshot(self, store: Any) -> dict[str, Any]:
        events = (await store.search_events(EventSearch(limit=0)))["events"]
        files = (await store.search_files(FileRecordSearch(limit=0)))["files"]
        status_ids = {e.status_id for e in events} | {f.status_id for f in files}
        statuses = {}
        for status_id in status_ids:
            status = (await store.get_camera_status_by_id(status_id)).to_dict()
            status.pop("valid_to", None)
            statuses[status_id] = status
        hashes = {}
        for record in files:
            stored = await store.file_store.rehash(record.file_id)
            hashes[record.file_id] = (stored.size, stored.md5, stored.sha256)
        return {
            "events": sorted((e.to_dict() for e in events), key=lambda e: e["event_id"]),
            "files": sorted((f.to_dict() for f in files), key=lambda f: f["file_id"]),
            "statuses": statuses,
            "hashes": hashes,
        }

    async def assert_replicated(self, camera: RunningNode, hub: RunningNode) -> None:
        source = await self.snapshot(camera.store)
        copy = await self.snapshot(hub.store)
        self.assertEqual(len(copy["events"]), len(source["events"]))
        self.assertEqual(copy, source)

    def status(self, store: Any, config: ExportConfiguration) -> Deferred:
        return store.get_export_status(config.config_id)


class ReplicationTests(ReplicationMixin, TestCase):
    """A camera node on SQLite, a hub on PostgreSQL, and the faults of replication.md."""

    timeout = 60

    async def test_everything_replicates(self) -> None:
        hub = await self.start_hub()
        camera = await self.start_camera()
        await self.populate(camera.store, events=200, stand_alone=20)
        configs = await self.add_exports(camera.store, hub.url("import"))
        exporter = self.exporter(camera.store)
        await wait_until(lambda: self.drained(camera.store, configs, 200, 20))
        await self.assert_replicated(camera, hub)
        event_status = await self.status(camera.store, configs[0])
        file_status = await self.status(camera.store, configs[1])
        self.assertEqual((event_status.done, event_status.failed), (200, 0))
        self.assertEqual((file_status.done, file_status.failed), (20, 0))
        totals = exporter.totals()
        self.assertEqual((totals.attempts, totals.successes, totals.transport_failures,
                          totals.entity_failures), (220, 220, 0, 0))
        self.assertEqual(event_status.bytes_sent + file_status.bytes_sent, totals.bytes_sent)
        await camera.store.register_event(CAMERA, T0 + timedelta(hours=1), "meteorpi:meteor")
        await wait_until(lambda: self.drained(camera.store, configs, 201, 20))
        await self.assert_replicated(camera, hub)

    async def test_hub_down_at_start_then_started(self) -> None:
        port = _free_port()
        camera = await self.start_camera()
        await self.populate(camera.store, events=20, stand_alone=3)
        configs = await self.add_exports(camera.store, f"http://127.0.0.1:{port}/api/import")
        exporter = self.exporter(camera.store, failure_policy=FailurePolicy(
            defer_on_failure=1.0, max_failures_before_disable=4))

        async def both_failed() -> bool:
            # Failures are counted as they happen and stored after: wait for the store.
            return (exporter.totals().transport_failures >= 2 and all(
                [(await self.status(camera.store, c)).consecutive_failures for c in configs]))

        await wait_until(both_failed, "both configurations to fail once")
        statuses = [await self.status(camera.store, c) for c in configs]
        self.assertEqual([s.consecutive_failures for s in statuses], [1, 1])
        self.assertTrue(all(s.enabled for s in statuses))
        self.assertIn("refused", statuses[0].last_error.lower())
        hub = await self.start_hub(port)
        await wait_until(lambda: self.drained(camera.store, configs, 20, 3))
        await self.assert_replicated(camera, hub)
        statuses = [await self.status(camera.store, c) for c in configs]
        self.assertEqual([s.consecutive_failures for s in statuses], [0, 0])

    async def test_hub_restarted_mid_round(self) -> None:
        hub, front, camera, configs = await self._through_front(120)
        exporter = self.exporter(camera.store)
        await wait_until(lambda: exporter.totals().successes >= 20, timeout=30)
        # As the exporter sees a restart: its connections cut mid-round, while the hub is
        # answering requests (what they stored stays, their replies are lost), nobody
        # answering, then the hub back on its database.
        site = hub.service.getServiceNamed("http").site
        await wait_until(lambda: len(site.in_flight) >= 2, "two requests in the hub",
                         interval=0.0005)
        front.mode = "drop"
        front.cut_all()
        await hub.stop()
        self.assertGreater((await self.status(camera.store, configs[0])).pending, 0)
        await wait_until(lambda: exporter.totals().transport_failures >= 1)
        hub = await self.start_hub()
        front.port = hub.service.getServiceNamed("http").port.getHost().port
        front.mode = "forward"
        await wait_until(lambda: self.drained(camera.store, configs, 120, 0), timeout=30)
        await self.assert_replicated(camera, hub)
        status = await self.status(camera.store, configs[0])
        self.assertEqual((status.done, status.failed, status.enabled), (120, 0, True))
        self.assertGreaterEqual(exporter.totals().transport_failures, 1)
        await exporter.stopService()

    async def _through_front(self, events: int, file_bytes: int = 3000, **exporter: Any) -> tuple:
        hub = await self.start_hub()
        front = FaultyFront(hub.service.getServiceNamed("http").port.getHost().port)
        listening = reactor.listenTCP(0, front, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        camera = await self.start_camera()
        await self.populate(camera.store, events=events, file_bytes=file_bytes)
        url = f"http://127.0.0.1:{listening.getHost().port}/api/import"
        configs = await self.add_exports(camera.store, url)
        return hub, front, camera, configs

    async def test_connections_are_kept_and_reused(self) -> None:
        hub, front, camera, configs = await self._through_front(40)
        exporter = self.exporter(camera.store, concurrency=2)
        await wait_until(lambda: self.drained(camera.store, configs, 40, 0), timeout=30)
        await self.assert_replicated(camera, hub)
        self.assertGreaterEqual(exporter.totals().round_trips, 100)
        self.assertLessEqual(front.connections, 2)

    async def test_connection_cut_during_an_upload(self) -> None:
        hub, front, camera, configs = await self._through_front(10, file_bytes=2_000_000)
        front.cut_after_bytes = 1_000_000
        front.cut_uploads = 3
        exporter = self.exporter(camera.store, concurrency=1)
        await wait_until(lambda: self.drained(camera.store, configs, 10, 0), timeout=30)
        await self.assert_replicated(camera, hub)
        self.assertEqual(front.cuts, 3)
        totals = exporter.totals()
        # The first cut is sent again at once; the second cut of that retry is a transport
        # failure; the third cut's retry goes through.
        self.assertEqual(totals.retried_requests, 2)
        self.assertEqual(totals.transport_failures, 1)
        status = await self.status(camera.store, configs[0])
        self.assertEqual((status.done, status.failed, status.consecutive_failures,
                          status.enabled), (10, 0, 0, True))

    async def test_hub_answering_500_for_a_while(self) -> None:
        hub, front, camera, configs = await self._through_front(15)
        front.mode = "500"
        exporter = self.exporter(camera.store, concurrency=2)
        await wait_until(
            lambda: self.status(camera.store, configs[0]).addCallback(
                lambda s: s.consecutive_failures == 3))
        self.assertTrue((await self.status(camera.store, configs[0])).enabled)
        front.mode = "forward"
        await wait_until(lambda: self.drained(camera.store, configs, 15, 0))
        await self.assert_replicated(camera, hub)
        status = await self.status(camera.store, configs[0])
        self.assertEqual((status.consecutive_failures, status.enabled, status.failed),
                         (0, True, 0))
        self.assertEqual(status.last_error, "HTTP 500 from importer")
        self.assertGreaterEqual(exporter.totals().transport_failures, 3)

    async def test_hub_answering_500_for_good_disables_after_four(self) -> None:
        hub, front, camera, configs = await self._through_front(5)
        front.mode = "500"
        exporter = self.exporter(camera.store, concurrency=1)
        await wait_until(lambda: self.status(camera.store, configs[0]).addCallback(
            lambda s: not s.enabled))
        status = await self.status(camera.store, configs[0])
        self.assertEqual(status.consecutive_failures, 4)
        self.assertEqual(status.disabled_reason,
                         "4 consecutive transport failures, the last: HTTP 500 from importer")
        self.assertEqual(status.pending, 5)
        rounds = exporter.rounds
        await wait_until(lambda: exporter.rounds >= rounds + 5)  # and nothing more is sent
        self.assertEqual(exporter.counters[configs[0].config_id].transport_failures, 4)
        self.assertEqual((await self.snapshot(hub.store))["events"], [])

    async def test_importer_answering_garbage(self) -> None:
        hub, front, camera, configs = await self._through_front(8)
        front.mode = "garbage"
        self.exporter(camera.store, concurrency=2)
        await wait_until(lambda: self.drained(camera.store, configs, 8, 0))
        status = await self.status(camera.store, configs[0])
        self.assertEqual((status.failed, status.enabled, status.consecutive_failures),
                         (8, True, 0))
        self.assertEqual(status.last_error, "importer reply is not JSON")
        front.mode = "forward"
        self.assertEqual(await camera.store.retry_export_tasks(configs[0].config_id), 8)
        await wait_until(lambda: self.status(camera.store, configs[0]).addCallback(
            lambda s: s.done == 8))
        await self.assert_replicated(camera, hub)

    async def test_corrupted_file_fails_only_its_event(self) -> None:
        hub = await self.start_hub()
        camera = await self.start_camera()
        await self.populate(camera.store, events=30)
        events = (await camera.store.search_events(EventSearch(limit=0)))["events"]
        victim = events[7]
        path = camera.store.file_store.path_for(victim.files[0].file_id).path
        with open(path, "r+b") as f:
            f.write(b"corrupt!")
        configs = await self.add_exports(camera.store, hub.url("import"))
        self.exporter(camera.store)
        await wait_until(lambda: self.drained(camera.store, configs, 30, 0))
        status = await self.status(camera.store, configs[0])
        self.assertEqual((status.done, status.failed, status.enabled), (29, 1, True))
        self.assertIn(f"file {victim.files[0].file_id} on this node no longer matches",
                      status.last_error)
        self.assertIsNone(await hub.store.get_event(victim.event_id))
        for record in victim.files:
            self.assertIsNone(await hub.store.get_file(record.file_id))
        source = await self.snapshot(camera.store)
        copy = await self.snapshot(hub.store)
        victim_files = {f.file_id for f in victim.files}
        self.assertEqual(copy["events"],
                         [e for e in source["events"] if e["event_id"] != victim.event_id])
        self.assertEqual(copy["hashes"], {k: v for k, v in source["hashes"].items()
                                          if k not in victim_files})

    async def test_two_exporter_processes_on_one_postgres_source(self) -> None:
        hub = await self.start_hub()
        source_url = fresh_postgres_url()
        camera = await self.start_camera(database_url=source_url)
        await self.populate(camera.store, events=120, stand_alone=10)
        configs = await self.add_exports(camera.store, hub.url("import"))
        other = await self.exporter_process(source_url, camera.store.file_store.root.path)
        try:
            await wait_until(lambda: self.status(camera.store, configs[0]).addCallback(
                lambda status: status.done > 0), "the other process's first export", 30)
        except AssertionError as e:
            output = (other.out + other.err).decode("utf-8", "replace")[-4000:]
            self.fail(f"{e}; its output:\n{output}")
        exporter = self.exporter(camera.store, concurrency=3)
        await wait_until(lambda: self.drained(camera.store, configs, 120, 10), timeout=30)
        await self.assert_replicated(camera, hub)
        # Each task was claimed once, by one process or the other, and both had a share.
        self.assertEqual(await camera.store.run(_attempts_made), 130)
        successes = exporter.totals().successes
        self.assertTrue(0 < successes < 130, successes)
