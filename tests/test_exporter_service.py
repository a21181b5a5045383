"""
Tests for meteord.exporter.service: the exporter driven by `task.Clock`, with a fake store that
keeps tasks in memory and a scripted fake importer in place of treq. Every reply sequence, the
back-off and disabling arithmetic, windows and the rate cap, garbage replies, timeouts, retries
of stale connections, corrupted files, rounds that never overlap and a loop that survives errors.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import io
import json
import os
import sys
from datetime import datetime, timezone
from typing import Any, Callable, Optional, Union

import attrs
from hyperlink import EncodedURL
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import (
    RequestGenerationFailed, ResponseDone, ResponseNeverReceived)
from twisted.internet.error import ConnectionLost, ConnectionRefusedError

from meteord.errors import StoreUnavailable
from meteord.exporter.policy import FailurePolicy
from meteord.exporter.service import (
    UPLOAD_CHUNK_BYTES,
    ExporterService,
    _URI,
    _FileBody,
    _target,
    build_http_client,
)
from meteord.exporter.tls import https_policy
from meteord.model import (
    CameraStatus, Event, EventSearch, ExportConfiguration, ExportOutcome, ExportStatus,
    ExportTask, FileRecord, FileRecordSearch, Location, Orientation, TimeWindow,
    datetime_to_ms, ms_to_datetime, new_id)
from meteord.store.files import FileNotStored

CAMERA = "0123456789ab"
TARGET = "http://hub.example/api/import"
# 2024-01-02T12:00:00Z
NOON = datetime(2024, 1, 2, 12, tzinfo=timezone.utc)
HOUR = 3600.0


def camera_status() -> CameraStatus:
    return CameraStatus(
        camera_id=CAMERA, status_id=new_id(), lens="lens", sensor="sensor",
        software_version=1, valid_from=datetime(2024, 1, 1, tzinfo=timezone.utc),
        location=Location(lat=52.0, long=0.1, gps=False, error=1.0),
        orientation=Orientation(alt=45.0, az=180.0, error=1.0, rot=0.0, width=30.0))


def export_config(**changes: Any) -> ExportConfiguration:
    kind = changes.get("type", "event")
    values = dict(
        config_id=new_id(), type=kind, target_url=TARGET, user_id="camera1",
        password="secret", search=EventSearch() if kind == "event" else FileRecordSearch(),
        config_name="to the hub", config_description="", enabled=True)
    values.update(changes)
    return ExportConfiguration(**values)


class FakeFileStore:
    """Real files in a directory, opened as the file store opens them."""

    def __init__(self, root: str) -> None:
        self.root = root
        os.makedirs(root, exist_ok=True)
        self.opened = 0

    def path(self, file_id: str) -> str:
        return os.path.join(self.root, file_id)

    def open_and_read(self, file_id: str, size: int, digest: Any = None) -> Deferred:
        try:
            f = open(self.path(file_id), "rb")
        except FileNotFoundError:
            return fail(FileNotStored(file_id))
        self.opened += 1
        on_disk = os.fstat(f.fileno()).st_size
        return self.read(f, size, digest).addCallback(lambda first: (f, on_disk, first))

    def read(self, f: Any, size: int, digest: Any = None) -> Deferred:
        data = f.read(size)
        if digest is not None:
            digest.update(data)
        return succeed(data)


@attrs.define
class FakeTask:
    task_id: int
    config_id: str
    kind: str
    entity: Any
    state: str = "pending"
    due: float = 0.0
    attempts: int = 0
    lease_until: Optional[float] = None
    last_error: Optional[str] = None
    bytes_sent: int = 0


class FakeStore:
    """
    The export half of IMeteorStore in memory, on the test's clock: tasks with due times and
    leases, the stored failure accounting, statuses and a file store.
    """

    def __init__(self, clock: Clock, files_root: str) -> None:
        self.clock = clock
        self.file_store = FakeFileStore(files_root)
        self.configs: dict[str, ExportConfiguration] = {}
        self.selected: dict[str, list[tuple[str, Any]]] = {}
        self.tasks: dict[int, FakeTask] = {}
        self.outcomes: dict[str, ExportOutcome] = {}
        self.statuses: dict[str, CameraStatus] = {}
        self.claims = 0
        self.combined = 0
        self.renewals = 0
        self.refuse_renewals = False
        self.recorded = 0
        self.renewal_error: Optional[Exception] = None
        self.held_renewals: Optional[list[Deferred]] = None
        self.fail_next: dict[str, Exception] = {}

    def _maybe_fail(self, name: str) -> Optional[Deferred]:
        if name in self.fail_next:
            return fail(self.fail_next.pop(name))
        return None

    # set-up helpers

    def add_config(self, config: ExportConfiguration) -> ExportConfiguration:
        self.configs[config.config_id] = config
        self.selected[config.config_id] = []
        self.outcomes[config.config_id] = ExportOutcome(enabled=config.enabled)
        return config

    def select(self, config: ExportConfiguration, kind: str, entity: Any) -> None:
        self.selected[config.config_id].append((kind, entity))

    def add_file(self, data: bytes, status: CameraStatus) -> FileRecord:
        record = FileRecord(
            file_id=new_id(), camera_id=CAMERA, mime_type="image/png",
            semantic_type="meteorpi:image", file_time=NOON, file_size=len(data),
            status_id=status.status_id, md5=hashlib.md5(data).hexdigest(),
            sha256=hashlib.sha256(data).hexdigest())
        with open(self.file_store.path(record.file_id), "wb") as f:
            f.write(data)
        return record

    def add_event(self, files: tuple = (), status: Optional[CameraStatus] = None) -> Event:
        status = status or self.add_status()
        return Event(event_id=new_id(), camera_id=CAMERA, event_time=NOON,
                     event_type="meteorpi:meteor", status_id=status.status_id, files=files)

    def add_status(self) -> CameraStatus:
        status = camera_status()
        self.statuses[status.status_id] = status
        return status

    def now(self) -> float:
        return self.clock.seconds()

    def tasks_of(self, config: ExportConfiguration, state: Optional[str] = None) -> list:
        return [t for t in self.tasks.values()
                if t.config_id == config.config_id and (state is None or t.state == state)]

    # the store's interface

    def get_export_configurations(self) -> Deferred:
        return self._maybe_fail("get_export_configurations") or succeed(
            list(self.configs.values()))

    def mark_entities_to_export(self, config: ExportConfiguration) -> Deferred:
        known = {(t.kind, id(t.entity)) for t in self.tasks_of(config)}
        added = 0
        for kind, entity in self.selected[config.config_id]:
            if (kind, id(entity)) not in known:
                task_id = len(self.tasks) + 1
                self.tasks[task_id] = FakeTask(task_id, config.config_id, kind, entity,
                                               due=self.now())
                added += 1
        return succeed(added)

    def get_export_status(self, config_id: str) -> Deferred:
        outcome = self.outcomes[config_id]
        tasks = [t for t in self.tasks.values() if t.config_id == config_id]
        return succeed(ExportStatus(
            config_id=config_id, enabled=self.configs[config_id].enabled,
            pending=sum(t.state == "pending" for t in tasks),
            done=sum(t.state == "done" for t in tasks),
            failed=sum(t.state == "failed" for t in tasks),
            consecutive_failures=outcome.consecutive_failures,
            last_success=outcome.last_success, last_error=outcome.last_error,
            bytes_sent=sum(t.bytes_sent for t in tasks),
            disabled_reason=outcome.disabled_reason, deferred_until=outcome.deferred_until))

    def claim_export_tasks(self, config_id: str, limit: int, lease_seconds: float) -> Deferred:
        failure = self._maybe_fail("claim_export_tasks")
        if failure:
            return failure
        now = self.now()
        due = [t for t in sorted(self.tasks.values(), key=lambda t: (t.due, t.task_id))
               if t.config_id == config_id and t.state == "pending" and t.due <= now
               and (t.lease_until is None or t.lease_until <= now)][:limit]
        claimed = []
        for t in due:
            t.lease_until = now + lease_seconds
            t.attempts += 1
            self.claims += 1
            claimed.append(ExportTask(task_id=t.task_id, config_id=config_id, kind=t.kind,
                                      entity=t.entity, attempts=t.attempts))
        return succeed(claimed)

    def complete_export_task(self, task_id: int, bytes_sent: int = 0) -> Deferred:
        task = self.tasks[task_id]
        assert task.state == "pending", task
        task.state, task.lease_until, task.bytes_sent = "done", None, bytes_sent
        outcome = self.outcomes[task.config_id]
        self.outcomes[task.config_id] = attrs.evolve(
            outcome, consecutive_failures=0 if outcome.enabled else outcome.consecutive_failures,
            last_success=ms_to_datetime(int(self.now() * 1000)))
        return succeed(None)

    def complete_and_claim_export_tasks(self, task_id: int, bytes_sent: int, config_id: str,
                                        limit: int, lease_seconds: float) -> Deferred:
        self.combined += 1
        self.complete_export_task(task_id, bytes_sent)
        return self.claim_export_tasks(config_id, limit, lease_seconds)

    def fail_export_task(self, task_id: int, reason: str) -> Deferred:
        task = self.tasks[task_id]
        task.state, task.lease_until, task.last_error = "failed", None, reason
        return succeed(None)

    def release_export_task(self, task_id: int) -> Deferred:
        self.tasks[task_id].lease_until = None
        return succeed(None)

    def renew_export_task(self, task_id: int, attempt: int, lease_seconds: float) -> Deferred:
        self.renewals += 1
        failure = self._maybe_fail("renew_export_task")
        if failure:
            return failure
        if self.renewal_error is not None:
            return fail(self.renewal_error)
        if self.held_renewals is not None:
            self.held_renewals.append(Deferred())
            return self.held_renewals[-1]
        task, now = self.tasks[task_id], self.now()
        if (self.refuse_renewals or task.state != "pending" or task.attempts != attempt
                or task.lease_until is None or task.lease_until <= now):
            return succeed(False)
        task.lease_until = now + lease_seconds
        return succeed(True)

    def defer_export_tasks(self, config_id: str, seconds: float) -> Deferred:
        count = 0
        for t in self.tasks.values():
            if t.config_id == config_id and t.state == "pending":
                t.due = self.now() + seconds
                count += 1
        return succeed(count)

    def record_export_outcome(self, config_id: str, outcome: ExportOutcome,
                              if_unchanged: Optional[ExportOutcome] = None) -> Deferred:
        self.recorded += 1
        old = self.outcomes.get(config_id)
        if if_unchanged is not None and (
                old is None or (old.consecutive_failures, old.enabled)
                != (if_unchanged.consecutive_failures, if_unchanged.enabled)):
            return succeed(False)
        self.outcomes[config_id] = attrs.evolve(
            outcome, last_error=outcome.last_error or old.last_error,
            last_success=outcome.last_success or old.last_success)
        self.configs[config_id] = attrs.evolve(self.configs[config_id], enabled=outcome.enabled)
        return succeed(True)

    def get_camera_status_by_id(self, status_id: str) -> Deferred:
        return succeed(self.statuses.get(status_id))


class FakeTransport:
    def __init__(self) -> None:
        self.stopped = False

    def stopProducing(self) -> None:
        self.stopped = True


class FakeResponse:
    """A reply whose body is delivered at once, or never (`hang_body`)."""

    def __init__(self, code: int, body: bytes, hang_body: bool = False) -> None:
        self.code = code
        self.body = body
        self.hang_body = hang_body
        self.transport = FakeTransport()
        self.length = len(body)

    def deliverBody(self, protocol: Any) -> None:
        protocol.makeConnection(self.transport)
        if self.hang_body:
            return
        protocol.dataReceived(self.body)
        protocol.connectionLost(Failure(ResponseDone()))


@attrs.define
class FakeRequest:
    url: str
    headers: dict
    body: bytes = b""

    @property
    def message(self) -> Optional[dict]:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def type(self) -> str:
        message = self.message
        return "upload" if message is None else message["type"]


class _Collect:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.chunks.append(data)


Reply = Union[tuple, Exception, Deferred, FakeResponse]


class FakeImporter:
    """
    Stands in for treq's HTTPClient: consumes each request's body producer as Agent would,
    then asks `handler(request)` for the reply: `(code, json-able or bytes)`, a `FakeResponse`,
    an exception (the request fails with it) or a Deferred of one of those (the request hangs
    until it fires, if ever).
    """

    def __init__(self, handler: Callable[[FakeRequest], Reply]) -> None:
        self.handler = handler
        self.requests: list[FakeRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.cancelled = 0

    def post(self, url: Union[str, EncodedURL], data: Any = None, headers: Any = None,
             **options: Any) -> Deferred:
        # ``options`` (redirects, buffering) concern treq's handling of real responses.
        # treq sends a URL given parsed as the text of its URI form.
        request = FakeRequest(url if isinstance(url, str) else url.to_uri().to_text(), headers)
        self.requests.append(request)
        consumer = _Collect()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

        def cancel(d: Deferred) -> None:
            self.cancelled += 1
            data.stopProducing()

        result: Deferred = Deferred(cancel)

        def produced(_: Any) -> None:
            request.body = b"".join(consumer.chunks)
            reply = self.handler(request)
            if isinstance(reply, Deferred):
                reply.addCallback(deliver)
            else:
                deliver(reply)

        def deliver(reply: Reply) -> None:
            self.in_flight -= 1
            if isinstance(reply, Exception):
                result.errback(reply)
            elif isinstance(reply, FakeResponse):
                result.callback(reply)
            else:
                code, body = reply
                if not isinstance(body, bytes):
                    body = json.dumps(body).encode()
                result.callback(FakeResponse(code, body))

        def not_produced(failure: Failure) -> None:
            self.in_flight -= 1
            result.errback(RequestGenerationFailed([failure]))

        data.startProducing(consumer).addCallbacks(produced, not_produced)
        return result


class SimulatedImporter:
    """A well-behaved meteord importer: asks for the status, then for every missing file."""

    def __init__(self) -> None:
        self.statuses: set[str] = set()
        self.files: dict[str, bytes] = {}
        self.entities: dict[str, dict] = {}
        self.last_entity: Optional[dict] = None

    def __call__(self, request: FakeRequest) -> Reply:
        if "/data/" in request.url:
            file_id, md5 = request.url.rsplit("/", 2)[-2:]
            if hashlib.md5(request.body).hexdigest() != md5:
                return 422, {"state": "failed", "message": "checksum mismatch"}
            self.files[file_id] = request.body
            return 200, {"state": "continue"}
        message = request.message
        if message["type"] == "status":
            self.statuses.add(message["status"]["status_id"])
            return 200, {"state": "continue"}
        if message["type"] == "cached_entity":
            entity = self.last_entity
            if entity is None:
                return 200, {"state": "continue-nocache"}
        else:
            entity = message[message["type"]]
        self.last_entity = entity
        files = entity.get("files", []) if message.get("type") != "file" else [entity]
        if message.get("type") == "cached_entity" and "event_id" not in entity:
            files = [entity]
        if entity["status_id"] not in self.statuses:
            return 200, {"state": "need_status", "status_id": entity["status_id"]}
        missing = [f["file_id"] for f in files if f["file_id"] not in self.files]
        if missing:
            return 200, {"state": "need_file_data", "file_id": missing[0], "file_ids": missing}
        self.entities[entity.get("event_id") or entity["file_id"]] = entity
        return 200, {"state": "complete"}


class ExporterTestMixin:
    """A clock at noon, a fake store and helpers to build and run an exporter."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(datetime_to_ms(NOON) / 1000)
        self.store = FakeStore(self.clock, os.path.abspath(self.mktemp()))

    def exporter(self, handler: Callable[[FakeRequest], Reply], **kwargs: Any) -> ExporterService:
        self.importer = FakeImporter(handler)
        kwargs.setdefault("mark_interval", 300.0)
        service = ExporterService(self.store, self.clock, self.importer, **kwargs)
        self.addCleanup(self._stop, service)
        return service

    def _stop(self, service: ExporterService) -> Optional[Deferred]:
        if service.running:
            d = service.stopService()
            self.assertTrue(d.called, "the exporter did not stop at once")
            return d
        return None

    def config_with_events(self, count: int) -> ExportConfiguration:
        """A configuration that selects ``count`` events of no files."""
        config = self.store.add_config(export_config())
        for _ in range(count):
            self.event_with_files(config)
        return config

    def event_with_files(self, config: ExportConfiguration, *sizes: int) -> Event:
        status = self.store.add_status()
        files = tuple(self.store.add_file(os.urandom(size), status) for size in sizes)
        event = self.store.add_event(files, status)
        self.store.select(config, "event", event)
        return event

    def run_once(self, handler: Callable[[FakeRequest], Reply], **kwargs: Any) -> ExporterService:
        service = self.exporter(handler, **kwargs)
        service.startService()
        return service

    def export_throttled_upload(self, **kwargs: Any) -> ExportConfiguration:
        """
        Export an event with one 64 KiB file under a cap of 1,000 bytes/s (about 65 s of
        upload) for 70 s of the clock; its configuration.
        """
        config = self.store.add_config(export_config(max_bytes_per_second=1000))
        event = self.event_with_files(config, 64 * 1024)

        def handler(request: FakeRequest) -> Reply:
            if request.type == "upload":
                return 200, {"state": "continue"}
            if len(self.importer.requests) > 1:
                return 200, {"state": "complete"}
            return 200, {"state": "need_file_data", "file_id": event.files[0].file_id}

        self.run_once(handler, **kwargs)
        self.clock.pump([1.0] * 70)
        return config

    def state(self, config: ExportConfiguration) -> list[str]:
        return [t.state for t in self.store.tasks_of(config)]


def complete(request: FakeRequest) -> Reply:
    return 200, {"state": "complete"}


class ReplySequenceTests(ExporterTestMixin, TestCase):
    """Each reply of the import protocol, carried out through the service."""

    def test_complete_at_once(self) -> None:
        config = self.store.add_config(export_config())
        event = self.event_with_files(config)
        service = self.run_once(complete)
        [request] = self.importer.requests
        self.assertEqual(request.url, TARGET)
        self.assertEqual(request.headers[b"Content-Type"], [b"application/json"])
        self.assertEqual(request.headers[b"Authorization"],
                         [b"Basic " + base64.b64encode(b"camera1:secret")])
        self.assertEqual(request.message, {"type": "event", "event": event.to_dict()})
        [task] = self.store.tasks_of(config)
        self.assertEqual((task.state, task.bytes_sent), ("done", len(request.body)))
        counters = service.counters[config.config_id]
        self.assertEqual((counters.attempts, counters.successes, counters.round_trips,
                          counters.bytes_sent), (1, 1, 1, len(request.body)))
        self.assertEqual(self.store.outcomes[config.config_id].last_success, NOON)

    def test_status_then_files_then_complete(self) -> None:
        config = self.store.add_config(export_config())
        event = self.event_with_files(config, 1000, 300_000)
        importer = SimulatedImporter()
        service = self.run_once(importer)
        types = [r.type for r in self.importer.requests]
        self.assertEqual(types, ["event", "status", "event", "upload", "upload", "event"])
        uploads = [r for r in self.importer.requests if r.type == "upload"]
        for upload, record in zip(uploads, event.files):
            self.assertEqual(upload.url,
                             f"{TARGET}/data/{record.file_id}/{record.md5}")
            self.assertEqual(upload.headers[b"Content-Type"], [b"application/octet-stream"])
            self.assertEqual(upload.headers[b"Meteord-Entity"], [event.event_id.encode()])
            with open(self.store.file_store.path(record.file_id), "rb") as f:
                self.assertEqual(upload.body, f.read())
        self.assertEqual([b"Meteord-Entity" in r.headers for r in self.importer.requests],
                         [t == "upload" for t in types])
        self.assertEqual(self.state(config), ["done"])
        self.assertIn(event.event_id, importer.entities)
        sent = sum(len(r.body) for r in self.importer.requests)
        self.assertEqual(self.store.tasks_of(config)[0].bytes_sent, sent)
        self.assertEqual(service.counters[config.config_id].round_trips, 6)

    def test_an_upload_answered_complete_ends_the_export(self) -> None:
        config = self.store.add_config(export_config())
        event = self.event_with_files(config, 1000, 2000)

        def importer(request: FakeRequest) -> Reply:
            if "/data/" in request.url:
                return 200, {"state": "complete", "entity_id": event.event_id}
            ids = [f.file_id for f in event.files]
            return 200, {"state": "need_file_data", "file_id": ids[0], "file_ids": ids}

        service = self.run_once(importer)
        self.assertEqual([r.type for r in self.importer.requests], ["event", "upload"])
        self.assertEqual(self.state(config), ["done"])
        self.assertEqual(service.counters[config.config_id].round_trips, 2)

    def test_stand_alone_file(self) -> None:
        config = self.store.add_config(export_config(type="file"))
        status = self.store.add_status()
        record = self.store.add_file(b"x" * 5000, status)
        self.store.select(config, "file", record)
        importer = SimulatedImporter()
        self.run_once(importer)
        self.assertEqual([r.type for r in self.importer.requests],
                         ["file", "status", "file", "upload", "file"])
        self.assertEqual(importer.files[record.file_id], b"x" * 5000)
        self.assertEqual(self.state(config), ["done"])

    def test_continue_sends_cached_entity(self) -> None:
        config = self.store.add_config(export_config())
        event = self.event_with_files(config)
        replies = iter([{"state": "continue"}, {"state": "complete"}])
        self.run_once(lambda r: (200, next(replies)))
        self.assertEqual(self.importer.requests[1].message,
                         {"type": "cached_entity", "cached_entity_id": event.event_id})
        self.assertEqual(self.state(config), ["done"])

    def test_continue_nocache_sends_the_entity_again(self) -> None:
        config = self.store.add_config(export_config())
        self.event_with_files(config)
        replies = iter([{"state": "continue"}, {"state": "continue-nocache"},
                        {"state": "complete"}])
        self.run_once(lambda r: (200, next(replies)))
        self.assertEqual([r.type for r in self.importer.requests],
                         ["event", "cached_entity", "event"])
        self.assertEqual(self.state(config), ["done"])

    def test_failed_reply_fails_only_that_entity(self) -> None:
        config = self.store.add_config(export_config())
        bad = self.event_with_files(config)
        self.event_with_files(config)

        def handler(request: FakeRequest) -> Reply:
            if request.message["event"]["event_id"] == bad.event_id:
                return 200, {"state": "failed", "message": "no room"}
            return 200, {"state": "complete"}

        service = self.run_once(handler, concurrency=1)
        self.assertEqual(self.state(config), ["failed", "done"])
        self.assertEqual(self.store.tasks_of(config)[0].last_error,
                         "importer answered failed: no room")
        self.assertEqual(self.store.outcomes[config.config_id].consecutive_failures, 0)
        self.assertTrue(self.store.configs[config.config_id].enabled)
        self.assertEqual(service.counters[config.config_id].entity_failures, 1)

    def test_http_422_and_400_are_entity_failures(self) -> None:
        config = self.store.add_config(export_config())
        self.event_with_files(config)
        self.event_with_files(config)
        codes = iter([422, 400])
        self.run_once(lambda r: (next(codes), {"message": "bad"}), concurrency=1)
        self.assertEqual(self.state(config), ["failed", "failed"])
        self.assertEqual([t.last_error for t in self.store.tasks_of(config)],
                         ["HTTP 422 from importer: bad", "HTTP 400 from importer: bad"])

    def test_garbage_replies_are_entity_failures(self) -> None:
        config = self.config_with_events(3)
        bodies = iter([b"<html>oops</html>", b"[1, 2]", b'{"state": "maybe"}'])
        self.run_once(lambda r: (200, next(bodies)), concurrency=1)
        self.assertEqual([t.last_error for t in self.store.tasks_of(config)],
                         ["importer reply is not JSON", "importer reply is not a JSON object",
                          "importer answered unknown state 'maybe'"])
        self.assertTrue(self.store.configs[config.config_id].enabled)

    def test_importer_asking_for_a_stranger_file_fails_the_entity(self) -> None:
        config = self.store.add_config(export_config())
        self.event_with_files(config, 10)
        self.run_once(lambda r: (200, {"state": "need_file_data", "file_id": new_id()}))
        [task] = self.store.tasks_of(config)
        self.assertEqual(task.state, "failed")
        self.assertIn("which is not this entity's", task.last_error)

    def test_endless_continue_is_bounded(self) -> None:
        config = self.store.add_config(export_config())
        self.event_with_files(config)
        self.run_once(lambda r: (200, {"state": "continue"}))
        self.assertEqual(len(self.importer.requests), 32)
        [task] = self.store.tasks_of(config)
        self.assertEqual(task.state, "failed")
        self.assertIn("gave up after 32 round trips", task.last_error)

    def test_status_missing_here_fails_the_entity(self) -> None:
        config = self.store.add_config(export_config())
        event = self.event_with_files(config)
        del self.store.statuses[event.status_id]
        self.run_once(SimulatedImporter())
        [task] = self.store.tasks_of(config)
        self.assertEqual(task.last_error,
                         f"camera status {event.status_id} is not stored on this node")

    def test_file_bytes_missing_here_fail_the_entity(self) -> None:
        config = self.store.add_config(export_config())
        event = self.event_with_files(config, 100)
        os.unlink(self.store.file_store.path(event.files[0].file_id))
        self.run_once(SimulatedImporter())
        [task] = self.store.tasks_of(config)
        self.assertEqual(task.last_error,
                         f"file {event.files[0].file_id} has no bytes on this node")

    def test_a_file_that_cannot_be_read_fails_the_entity_only(self) -> None:
        config = self.store.add_config(export_config())
        event = self.event_with_files(config, 100)
        self.event_with_files(config, 100)

        def unreadable(file_id: str, size: int, digest: Any = None) -> Deferred:
            if file_id == event.files[0].file_id:
                return fail(OSError(errno.EIO, "Input/output error"))
            return opened(file_id, size, digest)

        opened = self.store.file_store.open_and_read
        self.patch(self.store.file_store, "open_and_read", unreadable)
        self.run_once(SimulatedImporter())
        self.assertEqual(sorted(self.state(config)), ["done", "failed"])
        failed = [t for t in self.store.tasks_of(config) if t.state == "failed"]
        self.assertEqual(failed[0].last_error, f"file {event.files[0].file_id} cannot be "
                         "read on this node (Input/output error)")
        self.assertEqual(self.store.outcomes[config.config_id].consecutive_failures, 0)


class TargetURLTests(SynchronousTestCase):
    """The URLs treq is given: parsed once when in URI form, as text otherwise."""

    def test_a_target_in_uri_form_is_its_own_uri(self) -> None:
        text = "http://127.0.0.1:8080/api/import"
        url = _target(text)
        self.assertIsInstance(url, _URI)
        self.assertIs(url.to_uri(), url)
        self.assertEqual(url.to_uri().to_text(), text)
        self.assertIs(_target(text), url)

    def test_a_target_needing_encoding_is_left_to_treq(self) -> None:
        text = "http://hüb.example/%7Eimport"
        self.assertEqual(_target(text), text)
        self.assertEqual(EncodedURL.from_text(text).to_uri().to_text(),
                         "http://xn--hb-xka.example/%7Eimport")


class FileBodyTests(TestCase):
    """The upload body: reads in the file store's threads, a chunk ahead of what it sends."""

    def body_of(self, data: bytes, recorded: Optional[bytes] = None
                ) -> tuple[Any, list[tuple[Deferred, bytes, Any]], Any]:
        """A body of `data`, opened (its first read done), whose later reads wait for us."""
        reads: list[tuple[Deferred, bytes, Any]] = []
        self.asked: list[int] = []
        f = io.BytesIO(data)

        class ThreadedStore:
            def read(store, f: Any, size: int, digest: Any = None) -> Deferred:
                d: Deferred = Deferred()
                self.asked.append(size)
                reads.append((d, f.read(size), digest))
                return d

            def open_and_read(store, file_id: str, size: int, digest: Any = None) -> Deferred:
                return store.read(f, size, digest).addCallback(
                    lambda first: (f, len(data), first))

        recorded = data if recorded is None else recorded
        record = FileRecord(
            file_id=new_id(), camera_id=CAMERA, mime_type="video/mp4",
            semantic_type="meteorpi:video", file_time=NOON, file_size=len(recorded),
            status_id=new_id(), md5=hashlib.md5(recorded).hexdigest())
        body = _FileBody(ThreadedStore(), record, Clock(), None, lambda _: None)
        opening = Deferred.fromCoroutine(body.open())
        self.first_chunk = self.finish_read(reads)
        self.assertEqual(self.successResultOf(opening), len(data))
        return body, reads, f

    def finish_read(self, reads: list[tuple[Deferred, bytes, Any]]) -> bytes:
        d, data, digest = reads.pop(0)
        digest.update(data)
        d.callback(data)
        return data

    def test_the_last_chunk_waits_for_the_end_of_the_file(self) -> None:
        data = b"x" * (2 * UPLOAD_CHUNK_BYTES)
        body, reads, f = self.body_of(data)
        consumer = StringTransport()
        finished = body.startProducing(consumer)
        self.assertEqual(len(reads), 1)  # the second chunk is read while the first is sent
        self.assertEqual(len(consumer.value()), UPLOAD_CHUNK_BYTES)
        self.finish_read(reads)
        self.assertEqual(len(consumer.value()), UPLOAD_CHUNK_BYTES)
        self.finish_read(reads)  # the end of the file: the digest matches
        self.assertEqual(consumer.value(), data)
        self.successResultOf(finished)
        self.assertTrue(f.closed)

    def test_a_chunk_once_sent_is_not_held(self) -> None:
        body, reads, f = self.body_of(os.urandom(2 * UPLOAD_CHUNK_BYTES))

        class Discarding:
            def write(self, data: bytes) -> None:
                pass

        body.startProducing(Discarding())
        self.finish_read(reads)  # the second chunk is in; the first was sent
        # Held by this test alone (and getrefcount's argument): 16 uploads each holding a
        # chunk they have sent would be 4 MiB.
        self.assertEqual(sys.getrefcount(self.first_chunk), 2)

    def test_a_short_read_is_the_end_of_the_file(self) -> None:
        data = b"x" * (UPLOAD_CHUNK_BYTES + 10)
        body, reads, f = self.body_of(data)
        consumer = StringTransport()
        finished = body.startProducing(consumer)
        self.finish_read(reads)  # 10 bytes: the file ends there, no read is needed to know
        self.assertEqual(reads, [])
        self.assertEqual(consumer.value(), data)
        self.successResultOf(finished)
        self.assertTrue(f.closed)

    def test_a_small_file_is_read_with_a_buffer_of_its_size(self) -> None:
        data = b"x" * 1000
        body, reads, f = self.body_of(data)
        consumer = StringTransport()
        finished = body.startProducing(consumer)
        self.successResultOf(finished)
        self.assertEqual(consumer.value(), data)
        self.assertEqual(self.asked, [1001])

    def test_bytes_beyond_the_recorded_length_are_found(self) -> None:
        recorded = b"x" * (UPLOAD_CHUNK_BYTES + 10)
        body, reads, f = self.body_of(recorded + b"y", recorded=recorded)
        consumer = StringTransport()
        finished = body.startProducing(consumer)
        while reads:
            self.finish_read(reads)
        self.assertEqual(self.asked, [UPLOAD_CHUNK_BYTES, 11, 1])
        self.assertIn("no longer matches its record", str(self.failureResultOf(finished).value))
        self.assertEqual(len(consumer.value()), UPLOAD_CHUNK_BYTES)

    def test_a_close_during_a_read_closes_the_file_after_it(self) -> None:
        body, reads, f = self.body_of(b"x" * (2 * UPLOAD_CHUNK_BYTES))
        consumer = StringTransport()
        body.startProducing(consumer)
        body.close()
        self.assertFalse(f.closed)
        self.finish_read(reads)
        self.assertTrue(f.closed)
        self.assertEqual(len(consumer.value()), UPLOAD_CHUNK_BYTES)

    def test_a_close_before_producing_closes_the_file(self) -> None:
        body, reads, f = self.body_of(b"x" * 10)
        body.close()
        self.assertTrue(f.closed)


class CorruptFileTests(ExporterTestMixin, TestCase):
    """Bytes on disk that no longer match their record fail only their entity."""

    def corrupt(self, record: FileRecord, data: bytes) -> None:
        with open(self.store.file_store.path(record.file_id), "wb") as f:
            f.write(data)

    def test_changed_bytes_are_never_sent_whole(self) -> None:
        config = self.store.add_config(export_config())
        bad = self.event_with_files(config, 400_000)
        self.corrupt(bad.files[0], b"y" * 400_000)
        good = self.event_with_files(config, 1000)
        importer = SimulatedImporter()
        service = self.run_once(importer, concurrency=1)
        self.assertEqual(self.state(config), ["failed", "done"])
        reason = self.store.tasks_of(config)[0].last_error
        self.assertIn(f"file {bad.files[0].file_id} on this node no longer matches its record",
                      reason)
        self.assertIn(f"recorded sha256 {bad.files[0].sha256}", reason)
        self.assertNotIn(bad.files[0].file_id, importer.files)
        self.assertIn(good.event_id, importer.entities)
        self.assertEqual(service.counters[config.config_id].transport_failures, 0)
        self.assertTrue(self.store.configs[config.config_id].enabled)

    def test_changed_size_fails_before_sending(self) -> None:
        config = self.store.add_config(export_config())
        bad = self.event_with_files(config, 1000)
        self.corrupt(bad.files[0], b"short")
        self.run_once(SimulatedImporter())
        [task] = self.store.tasks_of(config)
        self.assertEqual(task.last_error,
                         f"file {bad.files[0].file_id} on this node has 5 bytes, its record "
                         f"1000; not sent")
        self.assertEqual([r.type for r in self.importer.requests], ["event", "status", "event"])

    def test_corrupt_empty_file(self) -> None:
        config = self.store.add_config(export_config())
        status = self.store.add_status()
        record = attrs.evolve(self.store.add_file(b"", status), sha256="0" * 64)
        event = self.store.add_event((record,), status)
        self.store.select(config, "event", event)
        self.run_once(SimulatedImporter())
        self.assertIn("no longer matches its record", self.store.tasks_of(config)[0].last_error)

    def test_a_record_without_sha256_is_checked_by_its_md5(self) -> None:
        config = self.store.add_config(export_config())
        status = self.store.add_status()
        bad = attrs.evolve(self.store.add_file(b"x" * 1000, status), sha256=None)
        self.corrupt(bad, b"y" * 1000)
        good = attrs.evolve(self.store.add_file(b"z" * 1000, status), sha256=None)
        for record in (bad, good):
            self.store.select(config, "event", self.store.add_event((record,), status))
        importer = SimulatedImporter()
        self.run_once(importer, concurrency=1)
        self.assertEqual(self.state(config), ["failed", "done"])
        self.assertIn(f"recorded md5 {bad.md5}", self.store.tasks_of(config)[0].last_error)
        self.assertNotIn(bad.file_id, importer.files)
        self.assertIn(good.file_id, importer.files)


class TransportFailureTests(ExporterTestMixin, TestCase):
    """Back-off, disabling and their arithmetic, as the service stores them."""

    def test_http_500_releases_and_defers(self) -> None:
        config = self.config_with_events(3)
        service = self.run_once(lambda r: (500, b"oops"), concurrency=1)
        self.assertEqual(len(self.importer.requests), 1)
        self.assertEqual(self.state(config), ["pending"] * 3)
        outcome = self.store.outcomes[config.config_id]
        self.assertEqual(outcome.consecutive_failures, 1)
        self.assertEqual(outcome.deferred_until, ms_to_datetime(datetime_to_ms(NOON) + 1800_000))
        self.assertEqual(outcome.last_error, "HTTP 500 from importer")
        self.assertTrue(outcome.enabled)
        for task in self.store.tasks_of(config):
            self.assertEqual(task.due, self.clock.seconds() + 1800)
            self.assertIsNone(task.lease_until)
        self.assertEqual(service.counters[config.config_id].transport_failures, 1)

    def test_connection_refused_and_401_are_transport_failures(self) -> None:
        for reply in (ConnectionRefusedError("nobody home"), (401, {"message": "who?"})):
            config = self.store.add_config(export_config())
            self.event_with_files(config)
            self.run_once(lambda r, reply=reply: reply)
            self.assertEqual(self.store.outcomes[config.config_id].consecutive_failures, 1)
            self.assertEqual(self.state(config), ["pending"])

    def test_disabled_after_four_failures_separated_by_back_off(self) -> None:
        config = self.store.add_config(export_config())
        self.event_with_files(config)
        self.run_once(lambda r: (503, b""), mark_interval=60.0)
        counts = [self.store.outcomes[config.config_id].consecutive_failures]
        for _ in range(3):
            self.clock.pump([60.0] * 30)
            counts.append(self.store.outcomes[config.config_id].consecutive_failures)
        self.assertEqual(counts, [1, 2, 3, 4])
        self.assertEqual(len(self.importer.requests), 4)
        outcome = self.store.outcomes[config.config_id]
        self.assertFalse(outcome.enabled)
        self.assertFalse(self.store.configs[config.config_id].enabled)
        self.assertEqual(outcome.disabled_reason,
                         "4 consecutive transport failures, the last: HTTP 503 from importer")
        self.clock.pump([60.0] * 60)
        self.assertEqual(len(self.importer.requests), 4)
        self.assertEqual(self.state(config), ["pending"])

    def test_the_count_survives_a_restart_of_the_exporter(self) -> None:
        config = self.store.add_config(export_config())
        self.event_with_files(config)
        first = self.run_once(lambda r: (503, b""), mark_interval=60.0)
        self.clock.pump([60.0] * 30)
        self.assertEqual(self.store.outcomes[config.config_id].consecutive_failures, 2)
        self.successResultOf(first.stopService())
        self.run_once(lambda r: (503, b""), mark_interval=60.0)
        self.assertEqual(self.importer.requests, [])
        self.clock.pump([60.0] * 30)
        self.assertEqual(self.store.outcomes[config.config_id].consecutive_failures, 3)
        self.clock.pump([60.0] * 30)
        outcome = self.store.outcomes[config.config_id]
        self.assertEqual((outcome.consecutive_failures, outcome.enabled), (4, False))
        self.assertEqual(len(self.importer.requests), 2)

    def test_custom_policy_and_no_sending_while_deferred(self) -> None:
        config = self.store.add_config(export_config())
        self.event_with_files(config)
        policy = FailurePolicy(defer_on_failure=600, max_failures_before_disable=2)
        self.run_once(lambda r: (500, b""), mark_interval=100.0, failure_policy=policy)
        self.clock.pump([100.0] * 5)
        self.assertEqual(len(self.importer.requests), 1)
        self.clock.advance(100.0)
        self.assertEqual(len(self.importer.requests), 2)
        self.assertFalse(self.store.configs[config.config_id].enabled)

    def test_one_outage_with_many_in_flight_counts_once(self) -> None:
        config = self.config_with_events(4)
        replies: list[Deferred] = []

        def handler(request: FakeRequest) -> Reply:
            replies.append(Deferred())
            return replies[-1]

        self.run_once(handler, concurrency=4)
        self.assertEqual(len(self.importer.requests), 4)
        for reply in replies:
            reply.callback(ConnectionRefusedError())
        self.assertEqual(self.store.outcomes[config.config_id].consecutive_failures, 1)
        self.assertEqual(self.state(config), ["pending"] * 4)
        self.assertTrue(all(t.due == self.clock.seconds() + 1800
                            for t in self.store.tasks_of(config)))

    def test_a_count_changed_meanwhile_is_read_and_decided_again(self) -> None:
        config = self.config_with_events(1)
        read = self.store.get_export_status
        theirs = ms_to_datetime(int(self.clock.seconds() * 1000) + 60_000)
        reads = []

        def reading(config_id: str) -> Deferred:
            reads.append(config_id)
            d = read(config_id)
            if len(reads) == 2:
                # Between the failure's read and its write, another exporter counts the
                # same outage.
                self.store.outcomes[config_id] = attrs.evolve(
                    self.store.outcomes[config_id], consecutive_failures=1,
                    deferred_until=theirs)
            return d

        self.store.get_export_status = reading
        self.run_once(lambda r: (503, b""))
        outcome = self.store.outcomes[config.config_id]
        # One write tried and refused; read again, it was the same outage: counted once, by
        # the other exporter, whose back-off stands for the tasks too.
        self.assertEqual(self.store.recorded, 1)
        self.assertEqual((outcome.consecutive_failures, outcome.deferred_until,
                          outcome.last_error, outcome.enabled), (1, theirs, None, True))
        [task] = self.store.tasks_of(config)
        self.assertEqual((task.state, task.due), ("pending", datetime_to_ms(theirs) / 1000))

    def test_success_resets_the_count(self) -> None:
        config = self.config_with_events(2)
        replies = iter([(500, b""), (200, {"state": "complete"}), (200, {"state": "complete"})])
        self.run_once(lambda r: next(replies), concurrency=1)
        self.assertEqual(self.store.outcomes[config.config_id].consecutive_failures, 1)
        self.clock.pump([300.0] * 6)
        outcome = self.store.outcomes[config.config_id]
        self.assertEqual(outcome.consecutive_failures, 0)
        self.assertEqual(outcome.last_error, "HTTP 500 from importer")
        self.assertIsNotNone(outcome.last_success)
        self.assertEqual(self.state(config), ["done", "done"])

    def test_stale_connection_is_retried_once(self) -> None:
        config = self.store.add_config(export_config())
        self.event_with_files(config)
        replies = iter([ResponseNeverReceived([Failure(ConnectionLost())]),
                        (200, {"state": "complete"})])
        service = self.run_once(lambda r: next(replies))
        self.assertEqual(self.state(config), ["done"])
        self.assertEqual(service.counters[config.config_id].retried_requests, 1)
        self.assertEqual(self.store.outcomes[config.config_id].consecutive_failures, 0)

    def test_stale_connection_twice_is_a_transport_failure(self) -> None:
        config = self.store.add_config(export_config())
        event = self.event_with_files(config, 2000)
        replies = iter([(200, {"state": "need_status", "status_id": event.status_id}),
                        (200, {"state": "continue"}),
                        (200, {"state": "need_file_data", "file_id": event.files[0].file_id}),
                        ResponseNeverReceived([Failure(ConnectionLost())]),
                        ResponseNeverReceived([Failure(ConnectionLost())])])
        self.run_once(lambda r: next(replies))
        self.assertEqual([r.type for r in self.importer.requests],
                         ["event", "status", "event", "upload", "upload"])
        self.assertEqual(self.store.file_store.opened, 2)
        self.assertEqual(self.store.outcomes[config.config_id].last_error,
                         "connection lost before any response (ResponseNeverReceived: "
                         "Connection to the other side was lost in a non-clean fashion.)")
        self.assertEqual(self.state(config), ["pending"])


class TimeoutTests(ExporterTestMixin, TestCase):
    """Every request is bounded, the reply's body included."""

    def test_no_reply_times_out_after_30_seconds(self) -> None:
        config = self.store.add_config(export_config())
        self.event_with_files(config)
        self.run_once(lambda r: Deferred())
        self.clock.advance(29.9)
        self.assertEqual(self.store.outcomes[config.config_id].consecutive_failures, 0)
        self.clock.advance(0.1)
        self.assertEqual(self.importer.cancelled, 1)
        self.assertEqual(self.store.outcomes[config.config_id].last_error,
                         "no complete reply within 30 s")
        self.assertEqual(self.state(config), ["pending"])

    def test_a_body_that_never_ends_times_out(self) -> None:
        config = self.store.add_config(export_config())
        self.event_with_files(config)
        response = FakeResponse(200, b"", hang_body=True)
        self.run_once(lambda r: response)
        self.clock.advance(30.0)
        self.assertTrue(response.transport.stopped)
        self.assertEqual(self.store.outcomes[config.config_id].last_error,
                         "no complete reply within 30 s")

    def test_upload_timeout_grows_with_the_file(self) -> None:
        config = self.store.add_config(export_config())
        event = self.event_with_files(config, 10 * 64 * 1024)

        def handler(request: FakeRequest) -> Reply:
            if request.type == "upload":
                return Deferred()
            return 200, {"state": "need_file_data", "file_id": event.files[0].file_id}

        self.run_once(handler)
        self.clock.advance(39.9)
        self.assertEqual(self.store.outcomes[config.config_id].consecutive_failures, 0)
        self.clock.advance(0.1)
        self.assertEqual(self.store.outcomes[config.config_id].last_error,
                         "no complete reply within 40 s")

    def test_a_refused_renewal_stops_the_export_and_leaves_the_task(self) -> None:
        config = self.store.add_config(export_config())
        self.event_with_files(config)
        self.store.refuse_renewals = True
        service = self.run_once(lambda r: Deferred(), lease_seconds=20.0)
        start = self.clock.seconds()
        [task] = self.store.tasks_of(config)
        self.clock.advance(9.9)
        self.assertEqual((self.importer.cancelled, service.counters[config.config_id].leases_lost),
                         (0, 0))
        self.clock.advance(0.1)
        self.assertEqual((self.importer.cancelled, service.counters[config.config_id].leases_lost),
                         (1, 1))
        # Neither failed nor released: it may be another exporter's by now.
        self.assertEqual((task.state, task.lease_until, task.last_error),
                         ("pending", start + 20.0, None))
        self.assertEqual(self.store.outcomes[config.config_id].consecutive_failures, 0)

    def test_a_lease_must_outlast_two_margins(self) -> None:
        with self.assertRaises(ValueError) as raised:
            self.exporter(complete, lease_seconds=10.0)
        self.assertEqual(str(raised.exception), "lease_seconds must exceed 10")
        self.exporter(complete, lease_seconds=10.5)

    def test_a_lease_refused_while_a_file_is_opened_sends_nothing_more(self) -> None:
        config = self.store.add_config(export_config())
        event = self.event_with_files(config, 1000)
        self.store.refuse_renewals = True
        opened = self.store.file_store.open_and_read
        self.patch(self.store.file_store, "open_and_read",
                   lambda *args: deferLater(self.clock, 15.0, opened, *args))
        service = self.run_once(
            lambda r: (200, {"state": "need_file_data", "file_id": event.files[0].file_id}),
            lease_seconds=20.0)
        self.clock.advance(10.0)
        self.assertEqual(service.counters[config.config_id].leases_lost, 0)
        self.clock.advance(5.0)
        self.assertEqual(service.counters[config.config_id].leases_lost, 1)
        self.assertEqual([r.type for r in self.importer.requests], ["event"])
        self.assertEqual(self.state(config), ["pending"])

    def test_a_lease_that_runs_out_leaves_the_task_as_it_is(self) -> None:
        config = self.store.add_config(export_config())
        self.event_with_files(config)
        self.store.renewal_error = StoreUnavailable("database unavailable")
        service = self.run_once(lambda r: Deferred(), lease_seconds=20.0)
        start = self.clock.seconds()
        [task] = self.store.tasks_of(config)
        # Tried at 10 s, then at half the time left each time, while more than 2 s was left.
        renewals = []
        for step in (10.0, 2.5, 1.25, 1.15):
            self.clock.advance(step)
            renewals.append(self.store.renewals)
        self.assertEqual(renewals, [1, 2, 3, 3])
        self.assertEqual(len(self.flushLoggedErrors(StoreUnavailable)), 3)
        self.assertEqual(service.counters[config.config_id].leases_lost, 0)
        self.clock.advance(0.1)
        self.assertEqual((self.importer.cancelled, service.counters[config.config_id].leases_lost),
                         (1, 1))
        self.assertEqual((task.state, task.lease_until, task.last_error),
                         ("pending", start + 20.0, None))

    def test_a_renewal_answered_after_the_export_ended_changes_nothing(self) -> None:
        config = self.store.add_config(export_config())
        self.event_with_files(config)
        self.store.held_renewals = []
        reply: Deferred = Deferred()
        self.run_once(lambda r: reply, lease_seconds=20.0)
        self.clock.advance(10.0)
        reply.callback((200, {"state": "complete"}))
        self.assertEqual(self.state(config), ["done"])
        self.store.held_renewals[0].callback(True)
        self.assertEqual([call for call in self.clock.getDelayedCalls()
                          if getattr(call.func, "__name__", None) == "_renewing"], [])
        self.clock.advance(100.0)
        self.assertEqual(self.store.renewals, 1)

    def test_the_lease_is_renewed_every_half_lease_while_the_export_goes_on(self) -> None:
        config = self.store.add_config(export_config())
        self.event_with_files(config)
        self.run_once(lambda r: Deferred(), lease_seconds=24.0)
        start = self.clock.seconds()
        [task] = self.store.tasks_of(config)
        self.clock.advance(11.9)
        self.assertEqual((self.store.renewals, task.lease_until), (0, start + 24.0))
        self.clock.advance(0.1)
        self.assertEqual((self.store.renewals, task.lease_until), (1, start + 36.0))
        # Without that renewal, the lease (less its margin of 5 s) would have ended it at 19 s.
        self.clock.advance(12.0)
        self.assertEqual((self.store.renewals, task.lease_until), (2, start + 48.0))
        self.clock.advance(6.0)
        self.assertEqual((task.state, task.lease_until), ("pending", None))
        self.assertEqual(self.store.outcomes[config.config_id].last_error,
                         "no complete reply within 30 s")
        self.clock.advance(100.0)
        self.assertEqual(self.store.renewals, 2)

    def test_a_throttled_upload_outlasting_its_lease_goes_on(self) -> None:
        config = self.export_throttled_upload(lease_seconds=20.0)
        self.assertEqual(self.state(config), ["done"])
        self.assertEqual(self.store.renewals, 6)
        self.clock.advance(100.0)
        self.assertEqual(self.store.renewals, 6)

    def test_a_failed_renewal_is_tried_again_before_the_lease_runs_out(self) -> None:
        config = self.store.add_config(export_config())
        self.event_with_files(config)
        self.store.fail_next["renew_export_task"] = StoreUnavailable("database unavailable")
        self.run_once(lambda r: Deferred(), lease_seconds=20.0)
        start = self.clock.seconds()
        [task] = self.store.tasks_of(config)
        self.clock.advance(10.0)
        self.assertEqual(len(self.flushLoggedErrors(StoreUnavailable)), 1)
        self.assertEqual(task.lease_until, start + 20.0)
        # Half of the 5 s then left of the lease (less its margin) later.
        self.clock.advance(2.5)
        self.assertEqual(task.lease_until, start + 32.5)
        self.clock.advance(17.5)
        self.assertEqual((task.state, task.lease_until), ("pending", None))
        self.assertEqual(self.store.outcomes[config.config_id].last_error,
                         "no complete reply within 30 s")


class WindowAndRateTests(ExporterTestMixin, TestCase):
    """Windows on the clock's time, and the byte-rate cap on uploads."""

    def test_sends_only_inside_the_window(self) -> None:
        config = self.store.add_config(export_config(window=(TimeWindow.parse("13:00-14:00"),)))
        self.event_with_files(config)
        self.run_once(complete)
        self.assertEqual(self.importer.requests, [])
        self.assertEqual(self.state(config), ["pending"])
        self.clock.pump([300.0] * 11)
        self.assertEqual(self.importer.requests, [])
        self.clock.advance(300.0)
        self.assertEqual(self.clock.seconds() % 86400, 13 * HOUR)
        self.assertEqual(self.state(config), ["done"])

    def test_no_claims_after_the_window_closes(self) -> None:
        config = self.store.add_config(export_config(window=(TimeWindow.parse("11:00-12:01"),)))
        for _ in range(3):
            self.event_with_files(config)
        replies = iter([Deferred()])

        def handler(request: FakeRequest) -> Reply:
            reply = next(replies, None)
            return (200, {"state": "complete"}) if reply is None else reply

        self.run_once(handler, concurrency=1)
        self.clock.advance(30.0)
        self.assertEqual(self.store.outcomes[config.config_id].consecutive_failures, 1)
        self.clock.advance(1800.0)
        self.assertEqual(len(self.importer.requests), 1)

    def test_rate_cap_throttles_uploads(self) -> None:
        config = self.store.add_config(export_config(max_bytes_per_second=100_000))
        event = self.event_with_files(config, 500_000)
        finished: list[float] = []

        def handler(request: FakeRequest) -> Reply:
            if request.type == "upload":
                finished.append(self.clock.seconds())
                return 200, {"state": "continue"}
            if finished:
                return 200, {"state": "complete"}
            return 200, {"state": "need_file_data", "file_id": event.files[0].file_id}

        self.run_once(handler)
        start = self.clock.seconds()
        self.clock.pump([0.1] * 50)
        self.assertEqual(len(finished), 1)
        # The bucket holds one second: 100 kB go at once, the other 400 kB take 4 s.
        self.assertTrue(4.0 <= finished[0] - start <= 4.15, finished[0] - start)
        self.assertEqual(self.state(config), ["done"])

    def test_waiting_on_the_rate_cap_extends_the_timeout(self) -> None:
        config = self.export_throttled_upload()
        self.assertEqual(self.state(config), ["done"])
        self.assertEqual(self.store.outcomes[config.config_id].consecutive_failures, 0)


class LoopTests(ExporterTestMixin, TestCase):
    """Rounds: re-run while there is work, never overlap, survive errors, stop cleanly."""

    def test_rounds_repeat_at_once_while_there_is_work(self) -> None:
        config = self.config_with_events(7)
        service = self.run_once(complete, batch_size=2, concurrency=2)
        self.assertEqual(self.state(config), ["done"] * 7)
        self.assertEqual(service.rounds, 5)

    def test_a_worker_completes_a_task_and_claims_its_next_in_one_trip(self) -> None:
        config = self.config_with_events(5)
        service = self.run_once(complete, batch_size=3, concurrency=1)
        self.assertEqual(self.state(config), ["done"] * 5)
        # Rounds of 3 and 2 tasks, then one that finds none. A round's first claim is on its
        # own, later ones come with a completion (the second round's last finds nothing),
        # and the completion that ends a full batch claims nothing.
        self.assertEqual((service.rounds, self.store.claims, self.store.combined), (3, 5, 4))

    def test_workers_claiming_together_stay_within_the_batch(self) -> None:
        self.config_with_events(5)
        claims: list[Deferred] = []

        def slow_claim(*args: Any) -> Deferred:
            claims.append(Deferred())
            return claims[-1]

        self.patch(self.store, "claim_export_tasks", slow_claim)
        self.run_once(complete, batch_size=1, concurrency=4)
        self.assertEqual(len(claims), 1)
        claims[0].callback([])

    def test_concurrency_per_configuration(self) -> None:
        configs = [self.config_with_events(10), self.config_with_events(10)]
        self.run_once(lambda r: Deferred(), concurrency=3)
        self.assertEqual(self.importer.max_in_flight, 6)
        self.assertEqual(self.store.claims, 6)
        self.assertEqual([sum(t.lease_until is not None for t in self.store.tasks_of(config))
                          for config in configs], [3, 3])

    def test_rounds_never_overlap(self) -> None:
        config = self.store.add_config(export_config())
        self.event_with_files(config)
        self.event_with_files(config)
        service = self.run_once(lambda r: Deferred(), concurrency=1, mark_interval=10.0,
                                lease_seconds=10_000.0)
        self.clock.pump([10.0] * 2)
        self.assertEqual(service.rounds, 1)
        self.assertEqual(self.store.claims, 1)

    def test_loop_survives_a_failing_round(self) -> None:
        config = self.store.add_config(export_config())
        self.event_with_files(config)
        self.store.fail_next["get_export_configurations"] = RuntimeError("database gone")
        service = self.run_once(complete)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(service.round_errors, 1)
        self.assertEqual(self.store.tasks, {})
        self.clock.advance(300.0)
        self.assertEqual(self.state(config), ["done"])

    def test_one_configuration_failing_does_not_stop_the_others(self) -> None:
        broken = self.store.add_config(export_config())
        fine = self.store.add_config(export_config())
        self.event_with_files(broken)
        self.event_with_files(fine)
        original = self.store.mark_entities_to_export

        def mark(config: ExportConfiguration) -> Deferred:
            if config.config_id == broken.config_id:
                return fail(ValueError("bad search"))
            return original(config)

        self.store.mark_entities_to_export = mark
        service = self.run_once(complete)
        # The round did work, so it ran once more, and the broken one failed again.
        self.assertEqual(service.rounds, 2)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 2)
        self.assertEqual(service.round_errors, 2)
        self.assertEqual(self.state(fine), ["done"])

    def test_disabled_configurations_are_left_alone(self) -> None:
        config = self.store.add_config(export_config(enabled=False))
        self.event_with_files(config)
        self.run_once(complete)
        self.assertEqual(self.store.tasks, {})
        self.assertEqual(self.importer.requests, [])

    def test_stop_gives_in_flight_tasks_back(self) -> None:
        config = self.store.add_config(export_config())
        self.event_with_files(config)
        service = self.run_once(lambda r: Deferred())
        d = service.stopService()
        self.assertIsNone(self.successResultOf(d))
        [task] = self.store.tasks_of(config)
        self.assertEqual((task.state, task.lease_until), ("pending", None))
        self.assertEqual(self.store.outcomes[config.config_id].consecutive_failures, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_log_lines_name_the_configuration_and_the_entity(self) -> None:
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        config = self.store.add_config(export_config())
        event = self.event_with_files(config)
        self.run_once(lambda r: (200, {"state": "failed", "message": "nope"}))
        [line] = [e for e in events if e.get("entity_id") == event.event_id]
        self.assertEqual(line["config_id"], config.config_id)
        self.assertEqual(line["reason"], "importer answered failed: nope")

    def test_own_pool_is_closed_on_stop(self) -> None:
        service = ExporterService(self.store, self.clock, concurrency=2)
        service.startService()
        [pool] = service._pools.values()
        self.assertEqual(pool.maxPersistentPerHost, 2)
        closed: list[bool] = []
        original = pool.closeCachedConnections
        pool.closeCachedConnections = lambda: closed.append(True) or original()
        self.successResultOf(service.stopService())
        self.assertEqual(closed, [True])
        self.assertEqual(service._pools, {})

    def test_ca_file_replaces_the_trust_roots(self) -> None:
        from twisted.internet.ssl import KeyPair

        path = self.mktemp()
        with open(path, "wb") as f:
            for name in ("one", "two"):
                f.write(KeyPair.generate().selfSignedCert(1, CN=name).dumpPEM())
        client, pool = build_http_client(self.clock, 1, https_policy(path))
        self.assertIsNotNone(client)
        with open(path, "w") as f:
            f.write("not a certificate\n")
        self.assertRaises(ValueError, https_policy, path)
