"""
Tests for meteord.web.importer through real HTTP on loopback: the site uses
`StreamingRequest` with the importer's body receiver, as meteord's own site does, and
meteord's exporter protocol (`ExportProtocol`) drives the client side, which shows the two
halves interoperate. The key protocol tests run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import io
import json
import os
import tracemalloc
from datetime import datetime, timezone
from typing import Any, Optional

import treq
from twisted.internet import reactor, task
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    ensureDeferred,
    succeed,
)
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import FileBodyProducer
from twisted.web.iweb import UNKNOWN_LENGTH
from twisted.web.server import Site

from meteord.errors import ConstraintViolation
from meteord.exporter.protocol import (
    Done, ExportProtocol, SendCachedEntity, SendEntity, SendStatus, UploadFile)
from meteord.model import (
    CameraStatus, Event, EventSearch, FileRecord, FileRecordSearch, Location, NSString,
    Orientation)
from meteord.web._request import JSON_BODY_LIMIT, StreamingRequest
from meteord.web.auth import Authenticator
from meteord.web._import_logic import HOLDINGS_SECONDS
from meteord.web.importer import ImportAPI, _Serialised
from meteord.web.root import APIRoot
from tests._stores import PostgresStoreMixin, SQLiteStoreMixin

T0 = datetime(2024, 8, 12, 22, 0, tzinfo=timezone.utc)
STATUS_ID = "5" * 32
EVENT_ID = "e" * 32
FILE_A = "a" * 32
FILE_B = "b" * 32
FILE_C = "c" * 32
USER, PASSWORD = "hub-importer", "s3cret"


def md5_of(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def basic(user_id: str, password: str) -> dict[bytes, list[bytes]]:
    token = base64.b64encode(f"{user_id}:{password}".encode("utf-8"))
    return {b"Authorization": [b"Basic " + token]}


AUTH = basic(USER, PASSWORD)

STATUS = CameraStatus(
    camera_id="cam1", status_id=STATUS_ID, lens="lens", sensor="sensor", software_version=1,
    valid_from=T0, location=Location(lat=52.0, long=0.1, gps=True, error=1.0),
    orientation=Orientation(alt=45.0, az=180.0, error=1.0, rot=0.0, width=30.0))


def record(file_id: str, data: bytes, **changes: Any) -> FileRecord:
    fields: dict[str, Any] = dict(
        file_id=file_id, camera_id="cam1", mime_type="image/png",
        semantic_type=NSString.parse("meteorpi:image", "semantic_type"), file_time=T0,
        file_size=len(data), status_id=STATUS_ID, md5=md5_of(data),
        sha256=hashlib.sha256(data).hexdigest())
    fields.update(changes)
    return FileRecord(**fields)


class _RecordingRequest(StreamingRequest):
    """Remembers every request the test site answered."""

    seen: list[StreamingRequest] = []
    buffered_bytes = 0

    def process(self) -> None:
        self.seen.append(self)
        self.content.seek(0, io.SEEK_END)
        self.buffered_bytes = self.content.tell()
        self.content.seek(0)
        super().process()


class ImporterFixture:
    """A node with the import API on loopback, and a client speaking the import protocol."""

    max_upload_bytes = 1024 * 1024 * 1024

    async def setUp(self) -> None:
        await super().setUp()
        self.clock = task.Clock()
        self.auth = Authenticator(self.store, self.clock)
        await self.store.create_or_update_user(USER, PASSWORD, ["import"])
        self.data = {FILE_A: b"first file " * 1000, FILE_B: os.urandom(300_000)}
        self.records = {file_id: record(file_id, data) for file_id, data in self.data.items()}
        self.event = Event(event_id=EVENT_ID, camera_id="cam1", event_time=T0,
                           event_type=NSString.parse("meteorpi:meteor", "event_type"),
                           status_id=STATUS_ID,
                           files=[self.records[FILE_A], self.records[FILE_B]])
        self.serve(self.new_api())

    def new_api(self, **kwargs: Any) -> ImportAPI:
        kwargs.setdefault("max_upload_bytes", self.max_upload_bytes)
        self.api = ImportAPI(self.store, self.auth, self.clock, **kwargs)
        return self.api

    def serve(self, api: ImportAPI) -> None:
        site = Site(APIRoot("/api", [api]))
        site.requestFactory = _RecordingRequest
        site.body_receivers = [api.body_receiver("/api")]
        _RecordingRequest.seen = []
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.url = f"http://127.0.0.1:{port.getHost().port}/api/import"

    async def post(self, url: str, data: Any, content_type: Optional[bytes],
                   headers: Optional[dict] = None) -> tuple[int, bytes]:
        all_headers = dict(AUTH if headers is None else headers)
        if content_type is not None:
            all_headers[b"Content-Type"] = [content_type]
        response = await treq.post(url.encode("ascii"), data=data, headers=all_headers,
                                   persistent=False)
        return response.code, await response.content()

    async def send(self, message: Any, headers: Optional[dict] = None) -> tuple[int, Any]:
        code, body = await self.post(self.url, json.dumps(message).encode("utf-8"),
                                     b"application/json", headers)
        return code, json.loads(body)

    async def upload(self, file_id: str, data: bytes, md5: Optional[str] = None,
                     multipart: bool = False, headers: Optional[dict] = None,
                     with_md5: bool = True) -> tuple[int, Any]:
        url = f"{self.url}/data/{file_id}"
        if with_md5:
            url += f"/{md5 or md5_of(data)}"
        if multipart:
            boundary = b"----meteord-test-boundary"
            body = (b"--" + boundary + b"\r\n"
                    b'Content-Disposition: form-data; name="file"; filename="file"\r\n'
                    b"Content-Type: image/png\r\n\r\n" + data + b"\r\n--" + boundary + b"--\r\n")
            code, reply = await self.post(
                url, body, b"multipart/form-data; boundary=" + boundary, headers)
        else:
            code, reply = await self.post(url, data, b"application/octet-stream", headers)
        return code, json.loads(reply)

    async def export(self, kind: str, entity: Any,
                     name_entity: bool = True) -> tuple[Any, int]:
        """
        Drive meteord's exporter protocol for one entity; the end and the round trips. Uploads
        name the entity, as meteord's exporter does, unless ``name_entity`` is false.
        """
        protocol = ExportProtocol(kind, entity.to_dict())
        named = {**AUTH, b"Meteord-Entity": [protocol.entity_id.encode()]}
        action = protocol.start()
        while isinstance(action, (SendEntity, SendCachedEntity, SendStatus, UploadFile)):
            if isinstance(action, (SendEntity, SendCachedEntity)):
                code, body = await self.post(self.url, json.dumps(action.body).encode(),
                                             b"application/json")
            elif isinstance(action, SendStatus):
                assert action.status_id == STATUS_ID
                message = {"type": "status", "status": STATUS.to_dict()}
                code, body = await self.post(self.url, json.dumps(message).encode(),
                                             b"application/json")
            else:
                code, body = await self.post(
                    f"{self.url}/data/{action.file_id}/{action.md5}",
                    self.data[action.file_id], b"application/octet-stream",
                    named if name_entity else None)
            action = protocol.on_reply(code, body)
        return action, protocol.round_trips

    async def assert_event_stored(self) -> None:
        stored = await self.store.get_event(EVENT_ID)
        self.assertEqual([f.file_id for f in stored.files], [FILE_A, FILE_B])
        for file_id, data in self.data.items():
            self.assertEqual(self.store.file_path_for_id(file_id).getContent(), data)
        self.assertIsNotNone(await self.store.get_camera_status_by_id(STATUS_ID))

    def questions(self) -> list[str]:
        """Record each question put to the store about what it holds, still answered."""
        asked: list[str] = []
        for owner, name in ((self.store, "stored_ids"), (self.store, "has_event_id"),
                            (self.store, "has_file_id"), (self.store.file_store, "existing"),
                            (self.store.file_store, "exists")):
            def recording(*args: Any, name: str = name, original: Any = getattr(owner, name)
                          ) -> Any:
                asked.append(name)
                return original(*args)
            self.patch(owner, name, recording)
        return asked

    def tmp_entries(self) -> list[str]:
        return os.listdir(os.path.join(self.store.file_store.root.path, "tmp"))


class ProtocolTests(ImporterFixture):
    """The protocol end to end, run on both back ends."""

    async def test_event_needing_status_and_two_files_completes(self) -> None:
        # event -> need_status; status; event -> need_file_data (both named); upload A ->
        # continue; upload B, naming the event -> complete.
        end, round_trips = await self.export("event", self.event)
        self.assertEqual(end, Done())
        self.assertEqual(round_trips, 5)
        await self.assert_event_stored()

    async def test_uploads_naming_no_entity_need_the_entity_sent_again(self) -> None:
        # As with an exporter that does not send the header: ... upload B -> continue;
        # event -> complete.
        end, round_trips = await self.export("event", self.event, name_entity=False)
        self.assertEqual((end, round_trips), (Done(), 6))
        await self.assert_event_stored()

    async def test_same_event_pushed_twice_is_stored_once(self) -> None:
        await self.export("event", self.event)
        end, round_trips = await self.export("event", self.event)
        self.assertEqual((end, round_trips), (Done(), 1))
        self.assertEqual((await self.store.search_events(EventSearch()))["count"], 1)

    async def test_concurrent_pushes_are_stored_once(self) -> None:
        results = await DeferredList(
            [ensureDeferred(self.export("event", self.event)) for _ in range(4)],
            consumeErrors=True)
        self.assertEqual([ok and outcome[0] for ok, outcome in results], [Done()] * 4)
        self.assertEqual((await self.store.search_events(EventSearch()))["count"], 1)
        self.assertEqual((await self.store.search_files(FileRecordSearch()))["count"], 2)
        await self.assert_event_stored()
        self.assertEqual(self.tmp_entries(), [])

    async def test_file_exported_before_is_linked_not_duplicated(self) -> None:
        end, round_trips = await self.export("file", self.records[FILE_A])
        # file -> need_status; status; file -> need_file_data; upload -> complete.
        self.assertEqual((end, round_trips), (Done(), 4))
        end, round_trips = await self.export("event", self.event)
        # event -> need_file_data (B only); upload B -> complete.
        self.assertEqual((end, round_trips), (Done(), 2))
        self.assertEqual((await self.store.search_files(FileRecordSearch()))["count"], 2)
        await self.assert_event_stored()


class ProtocolSQLiteTests(ProtocolTests, SQLiteStoreMixin, TestCase):
    pass


class ProtocolPostgresTests(ProtocolTests, PostgresStoreMixin, TestCase):
    pass


class ImportAPITests(ImporterFixture, SQLiteStoreMixin, TestCase):
    """Replies, uploads, limits and authentication, on SQLite."""

    max_upload_bytes = 400_000

    async def test_original_exporter_flow_with_cached_entity_and_multipart(self) -> None:
        # The MeteorPi exporter: after a status or upload it sends cached_entity, uploads
        # multipart and follows file_id alone.
        message = {"type": "event", "event": self.event.to_dict()}
        cached = {"type": "cached_entity", "cached_entity_id": EVENT_ID}
        self.assertEqual(await self.send(message),
                         (200, {"state": "need_status", "status_id": STATUS_ID}))
        self.assertEqual(await self.send({"type": "status", "status": STATUS.to_dict()}),
                         (200, {"state": "continue"}))
        code, reply = await self.send(cached)
        self.assertEqual(reply["file_id"], FILE_A)
        self.assertEqual(await self.upload(FILE_A, self.data[FILE_A], multipart=True),
                         (200, {"state": "continue"}))
        code, reply = await self.send(cached)
        self.assertEqual(reply, {"state": "need_file_data", "file_id": FILE_B,
                                 "file_ids": [FILE_B]})
        self.assertEqual(await self.upload(FILE_B, self.data[FILE_B], multipart=True,
                                           with_md5=False),
                         (200, {"state": "continue"}))
        self.assertEqual(await self.send(cached), (200, {"state": "complete"}))
        await self.assert_event_stored()

    async def upload_all_asked_for(self) -> list[str]:
        """Send the event, upload both files it is answered with; then record questions."""
        await self.start_naming()
        for file_id, data in self.data.items():
            self.assertEqual(await self.upload(file_id, data), (200, {"state": "continue"}))
        return self.questions()

    async def start_naming(self) -> dict[bytes, list[bytes]]:
        """
        Send the status and the event, answered with both files; the headers of an upload
        naming the event.
        """
        await self.send({"type": "status", "status": STATUS.to_dict()})
        code, reply = await self.send({"type": "event", "event": self.event.to_dict()})
        self.assertEqual(reply["file_ids"], [FILE_A, FILE_B])
        return {**AUTH, b"Meteord-Entity": [EVENT_ID.encode()]}

    async def test_the_upload_completing_its_named_entity_stores_it(self) -> None:
        named = await self.start_naming()
        self.assertEqual(await self.upload(FILE_A, self.data[FILE_A], headers=named),
                         (200, {"state": "continue"}))
        self.assertFalse(await self.store.has_event_id(EVENT_ID))
        asked = self.questions()
        self.assertEqual(await self.upload(FILE_B, self.data[FILE_B], headers=named),
                         (200, {"state": "complete", "entity_id": EVENT_ID}))
        self.assertEqual(asked, [])
        await self.assert_event_stored()
        self.assertIsNone(self.api.cache.get(EVENT_ID))

    async def test_the_named_upload_without_md5_completes_its_entity_too(self) -> None:
        named = await self.start_naming()
        await self.upload(FILE_A, self.data[FILE_A], headers=named)
        self.assertEqual(
            await self.upload(FILE_B, self.data[FILE_B], headers=named, with_md5=False),
            (200, {"state": "complete", "entity_id": EVENT_ID}))
        await self.assert_event_stored()

    async def test_a_named_upload_of_bytes_already_here_completes_its_entity(self) -> None:
        # B's bytes are in the file store already (uploaded for another entity): an upload
        # of them with an md5 the held record does not have is not kept, yet completes E.
        named = await self.start_naming()
        await self.upload(FILE_A, self.data[FILE_A], headers=named)
        await self.upload(FILE_B, self.data[FILE_B])
        self.assertEqual(await self.upload(FILE_B, b"stale", md5=md5_of(b"stale"),
                                           headers=named),
                         (200, {"state": "complete", "entity_id": EVENT_ID}))
        await self.assert_event_stored()

    async def test_concurrent_named_uploads_store_their_entity_once(self) -> None:
        named = await self.start_naming()
        replies = await DeferredList(
            [ensureDeferred(self.upload(file_id, data, headers=named))
             for file_id, data in [*self.data.items(), *self.data.items()]],
            consumeErrors=True)
        self.assertTrue(all(ok for ok, _ in replies))
        states = sorted(reply[1]["state"] for _, reply in replies)
        self.assertEqual(states, ["complete", "continue", "continue", "continue"])
        self.assertEqual((await self.store.search_events(EventSearch()))["count"], 1)
        await self.assert_event_stored()

    async def test_a_named_upload_after_the_holdings_expired_is_continue(self) -> None:
        named = await self.start_naming()
        await self.upload(FILE_A, self.data[FILE_A], headers=named)
        self.clock.advance(HOLDINGS_SECONDS)
        asked = self.questions()
        self.assertEqual(await self.upload(FILE_B, self.data[FILE_B], headers=named),
                         (200, {"state": "continue"}))
        self.assertEqual(asked, [])
        self.assertEqual(await self.send({"type": "event", "event": self.event.to_dict()}),
                         (200, {"state": "complete"}))
        self.assertEqual(asked, ["stored_ids", "existing"])
        await self.assert_event_stored()

    async def test_an_upload_naming_no_entity_stores_none(self) -> None:
        await self.upload_all_asked_for()
        self.assertFalse(await self.store.has_event_id(EVENT_ID))

    async def test_an_upload_naming_an_entity_not_held_is_continue(self) -> None:
        named = await self.start_naming()
        await self.upload(FILE_A, self.data[FILE_A], headers=named)
        self.serve(self.new_api())
        self.assertEqual(await self.upload(FILE_B, self.data[FILE_B], headers=named),
                         (200, {"state": "continue"}))
        self.assertFalse(await self.store.has_event_id(EVENT_ID))
        self.assertEqual(self.store.file_path_for_id(FILE_B).getContent(), self.data[FILE_B])

    async def test_an_upload_naming_an_entity_without_that_file_is_continue(self) -> None:
        # The event lacks no file but B once A is in; C is not one of its files.
        named = await self.start_naming()
        await self.upload(FILE_A, self.data[FILE_A], headers=named)
        source = FilePath(self.mktemp())
        source.setContent(self.data[FILE_B])
        await self.store.file_store.add_from_path(source, FILE_B)
        self.api.cache.bytes_stored(FILE_B)
        self.assertEqual(await self.upload(FILE_C, b"another file", headers=named),
                         (200, {"state": "continue"}))
        self.assertFalse(await self.store.has_event_id(EVENT_ID))

    async def test_an_upload_naming_an_entity_still_lacking_a_file_is_continue(self) -> None:
        named = await self.start_naming()
        asked = self.questions()
        self.assertEqual(await self.upload(FILE_B, self.data[FILE_B], headers=named),
                         (200, {"state": "continue"}))
        self.assertEqual(asked, [])
        self.assertFalse(await self.store.has_event_id(EVENT_ID))

    async def test_a_named_entity_the_store_refuses_is_continue_then_failed(self) -> None:
        named = await self.start_naming()

        async def refuse(event: Event, user_id: str) -> None:
            raise ConstraintViolation("no such camera here")

        self.patch(self.store, "import_event", refuse)
        await self.upload(FILE_A, self.data[FILE_A], headers=named)
        self.assertEqual(await self.upload(FILE_B, self.data[FILE_B], headers=named),
                         (200, {"state": "continue"}))
        code, reply = await self.send({"type": "event", "event": self.event.to_dict()})
        self.assertEqual((code, reply["state"]), (200, "failed"))
        self.assertIn("no such camera here", reply["message"])

    async def test_a_malformed_entity_header_is_400_and_writes_nothing(self) -> None:
        await self.start_naming()
        opened: list[Any] = []
        self.patch(self.store.file_store, "open_upload", lambda *a, **kw: opened.append(a))
        for value in (b"not-an-id", b"e" * 31, b"", b"\xff" * 32):
            code, reply = await self.upload(
                FILE_A, self.data[FILE_A], headers={**AUTH, b"Meteord-Entity": [value]})
            self.assertEqual(code, 400)
            self.assertIn("Meteord-Entity", reply["message"])
        code, _ = await self.upload(FILE_A, self.data[FILE_A],
                                    headers={b"Meteord-Entity": [b"not-an-id"]})
        self.assertEqual(code, 401, "credentials are checked first")
        self.assertEqual(opened, [])
        self.assertFalse(await self.store.file_store.exists(FILE_A))
        self.assertEqual(self.tmp_entries(), [])

    async def test_an_entity_sent_again_after_its_uploads_asks_the_store_nothing(self) -> None:
        asked = await self.upload_all_asked_for()
        self.assertEqual(await self.send({"type": "event", "event": self.event.to_dict()}),
                         (200, {"state": "complete"}))
        self.assertEqual(asked, [])
        await self.assert_event_stored()

    async def test_an_entity_sent_again_a_minute_later_asks_the_store_again(self) -> None:
        asked = await self.upload_all_asked_for()
        self.clock.advance(HOLDINGS_SECONDS)
        self.assertEqual(await self.send({"type": "event", "event": self.event.to_dict()}),
                         (200, {"state": "complete"}))
        self.assertEqual(asked, ["stored_ids", "existing"])
        await self.assert_event_stored()

    async def test_a_cached_entity_after_its_uploads_asks_the_store_nothing(self) -> None:
        asked = await self.upload_all_asked_for()
        self.assertEqual(
            await self.send({"type": "cached_entity", "cached_entity_id": EVENT_ID}),
            (200, {"state": "complete"}))
        self.assertEqual(asked, [])
        await self.assert_event_stored()

    async def test_a_cached_entity_still_missing_bytes_here_asks_the_store_again(self) -> None:
        # B's bytes reach the file store another way (another process took the upload).
        await self.send({"type": "status", "status": STATUS.to_dict()})
        await self.send({"type": "event", "event": self.event.to_dict()})
        await self.upload(FILE_A, self.data[FILE_A])
        source = FilePath(self.mktemp())
        source.setContent(self.data[FILE_B])
        await self.store.file_store.add_from_path(source, FILE_B)
        asked = self.questions()
        self.assertEqual(
            await self.send({"type": "cached_entity", "cached_entity_id": EVENT_ID}),
            (200, {"state": "complete"}))
        self.assertEqual(asked, ["stored_ids", "existing"])
        await self.assert_event_stored()

    async def test_a_cached_entity_stored_meanwhile_by_another_process_is_complete(self) -> None:
        first = self.api
        await self.send({"type": "status", "status": STATUS.to_dict()})
        await self.send({"type": "event", "event": self.event.to_dict()})
        for file_id, data in self.data.items():
            await self.upload(file_id, data)
        self.serve(self.new_api())
        self.assertEqual(await self.export("event", self.event), (Done(), 1))
        self.serve(first)
        self.assertEqual(
            await self.send({"type": "cached_entity", "cached_entity_id": EVENT_ID}),
            (200, {"state": "complete"}))
        self.assertEqual((await self.store.search_events(EventSearch()))["count"], 1)
        self.assertEqual((await self.store.search_files(FileRecordSearch()))["count"], 2)
        await self.assert_event_stored()

    async def test_cached_entity_after_restart_gets_continue_nocache(self) -> None:
        await self.send({"type": "event", "event": self.event.to_dict()})
        self.serve(self.new_api())
        self.assertEqual(
            await self.send({"type": "cached_entity", "cached_entity_id": EVENT_ID}),
            (200, {"state": "continue-nocache"}))

    async def test_cached_entity_evicted_gets_continue_nocache(self) -> None:
        self.serve(self.new_api(cache_size=1))
        await self.send({"type": "event", "event": self.event.to_dict()})
        await self.send({"type": "file", "file": self.records[FILE_A].to_dict()})
        self.assertEqual(
            await self.send({"type": "cached_entity", "cached_entity_id": EVENT_ID}),
            (200, {"state": "continue-nocache"}))

    async def test_cached_entity_of_stored_entity_is_complete(self) -> None:
        await self.export("event", self.event)
        self.serve(self.new_api())
        self.assertEqual(
            await self.send({"type": "cached_entity", "cached_entity_id": EVENT_ID}),
            (200, {"state": "complete"}))

    async def test_wrong_md5_is_422_and_nothing_stored(self) -> None:
        code, reply = await self.upload(FILE_A, self.data[FILE_A], md5="0" * 32)
        self.assertEqual((code, reply), (422, {"state": "failed",
                                               "message": "checksum mismatch"}))
        self.assertFalse(await self.store.file_store.exists(FILE_A))
        self.assertEqual(self.tmp_entries(), [])

    async def test_bytes_not_matching_the_held_record_are_422(self) -> None:
        await self.send({"type": "event", "event": self.event.to_dict()})
        code, reply = await self.upload(FILE_A, b"other bytes")
        self.assertEqual((code, reply["message"]), (422, "checksum mismatch"))
        self.assertFalse(await self.store.file_store.exists(FILE_A))

    async def test_upload_without_md5_needs_the_record(self) -> None:
        code, reply = await self.upload(FILE_A, self.data[FILE_A], with_md5=False)
        self.assertEqual((code, reply["state"]), (422, "failed"))
        self.assertFalse(await self.store.file_store.exists(FILE_A))

    async def test_raw_and_multipart_uploads_are_stored(self) -> None:
        self.assertEqual(await self.upload(FILE_A, self.data[FILE_A]),
                         (200, {"state": "continue"}))
        self.assertEqual(await self.upload(FILE_B, self.data[FILE_B], multipart=True),
                         (200, {"state": "continue"}))
        for file_id, data in self.data.items():
            self.assertEqual(self.store.file_path_for_id(file_id).getContent(), data)

    async def test_a_disk_failing_at_commit_is_503_and_leaves_nothing(self) -> None:
        file_store = self.store.file_store
        finish = file_store._finish_upload

        def disk_full(out: Any, tmp_path: str, *args: Any) -> Any:
            file_store._discard(out, tmp_path)
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(file_store, "_finish_upload", disk_full)
        code, reply = await self.upload(FILE_A, self.data[FILE_A])
        self.assertEqual((code, reply), (503, {"message": "The file store cannot take the upload now"}))
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertFalse(await file_store.exists(FILE_A))
        self.assertEqual(self.tmp_entries(), [])
        self.patch(file_store, "_finish_upload", finish)
        self.assertEqual(await self.upload(FILE_A, self.data[FILE_A]), (200, {"state": "continue"}))

    async def test_bytes_of_a_stored_file_are_discarded(self) -> None:
        await self.upload(FILE_A, self.data[FILE_A])
        self.assertEqual(await self.upload(FILE_A, b"different", md5=md5_of(b"different")),
                         (200, {"state": "continue"}))
        self.assertEqual(self.store.file_path_for_id(FILE_A).getContent(), self.data[FILE_A])
        self.assertEqual(self.tmp_entries(), [])

    async def test_an_upload_asks_the_store_nothing_before_its_commit(self) -> None:
        asked = self.questions()
        self.assertEqual(await self.upload(FILE_A, self.data[FILE_A]),
                         (200, {"state": "continue"}))
        self.assertEqual(asked, [])
        self.assertEqual(self.store.file_path_for_id(FILE_A).getContent(), self.data[FILE_A])

    async def test_a_stored_file_sent_again_without_a_known_md5_is_continue(self) -> None:
        await self.upload(FILE_A, self.data[FILE_A])
        self.assertEqual(await self.upload(FILE_A, b"other", with_md5=False),
                         (200, {"state": "continue"}))
        await self.send({"type": "event", "event": self.event.to_dict()})
        self.assertEqual(await self.upload(FILE_A, b"other", md5=md5_of(b"other")),
                         (200, {"state": "continue"}))
        self.assertEqual(self.store.file_path_for_id(FILE_A).getContent(), self.data[FILE_A])
        self.assertEqual(self.tmp_entries(), [])

    async def test_a_record_whose_bytes_went_missing_gets_them_again(self) -> None:
        action, _ = await self.export("event", self.event)
        self.assertIsInstance(action, Done)
        await self.store.file_store.remove([FILE_A])
        self.assertEqual(await self.upload(FILE_A, self.data[FILE_A]),
                         (200, {"state": "continue"}))
        await self.assert_event_stored()

    async def test_oversize_upload_is_413(self) -> None:
        data = b"x" * (self.max_upload_bytes + 1)
        for multipart in (False, True):
            code, reply = await self.upload(FILE_C, data, multipart=multipart)
            self.assertEqual(code, 413)
            self.assertIn("message", reply)
        self.assertFalse(await self.store.file_store.exists(FILE_C))
        self.assertEqual(self.tmp_entries(), [])

    async def test_oversize_chunked_upload_is_413(self) -> None:
        producer = FileBodyProducer(io.BytesIO(b"x" * (self.max_upload_bytes + 1)))
        producer.length = UNKNOWN_LENGTH
        code, body = await self.post(f"{self.url}/data/{FILE_C}/{'0' * 32}", producer,
                                     b"application/octet-stream")
        self.assertEqual(code, 413)
        self.assertEqual(self.tmp_entries(), [])

    async def test_upload_of_wrong_content_type_is_415(self) -> None:
        code, body = await self.post(f"{self.url}/data/{FILE_C}/{'0' * 32}", b"abc",
                                     b"text/plain")
        self.assertEqual(code, 415)

    async def test_multipart_without_file_part_is_400(self) -> None:
        body = (b"--b\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nabc\r\n--b--\r\n")
        code, reply = await self.post(f"{self.url}/data/{FILE_C}/{md5_of(b'abc')}", body,
                                      b"multipart/form-data; boundary=b")
        self.assertEqual(code, 400)
        self.assertFalse(await self.store.file_store.exists(FILE_C))

    async def test_upload_with_malformed_ids_is_400(self) -> None:
        code, _ = await self.post(f"{self.url}/data/nothex/{'0' * 32}", b"abc",
                                  b"application/octet-stream")
        self.assertEqual(code, 400)
        code, _ = await self.post(f"{self.url}/data/{FILE_C}/short", b"abc",
                                  b"application/octet-stream")
        self.assertEqual(code, 400)

    async def test_json_body_over_64_kib_is_413(self) -> None:
        code, body = await self.post(self.url, b"[" + b" " * JSON_BODY_LIMIT + b"]",
                                     b"application/json")
        self.assertEqual(code, 413)
        self.assertIn("message", json.loads(body))

    async def test_garbage_messages_are_400_and_store_nothing(self) -> None:
        bad_event = self.event.to_dict()
        bad_event["files"][1]["md5"] = "xyz"
        for data in (b"not json", b"[]", b'{"type": "meteor"}', b'{"type": "event"}',
                     b'{"event": {}}', json.dumps({"type": "event", "event": bad_event}).encode(),
                     json.dumps({"type": "status", "status": {"status_id": STATUS_ID}}).encode(),
                     b'{"type": "cached_entity", "cached_entity_id": 12}'):
            code, body = await self.post(self.url, data, b"application/json")
            self.assertEqual(code, 400, data)
            self.assertIn("message", json.loads(body))
        self.assertFalse(await self.store.has_event_id(EVENT_ID))
        self.assertFalse(await self.store.has_status_id(STATUS_ID))
        self.assertEqual(len(self.api.cache), 0)

    async def test_message_of_wrong_content_type_is_415(self) -> None:
        code, _ = await self.post(self.url, b"{}", b"text/plain")
        self.assertEqual(code, 415)

    async def test_no_credentials_is_401(self) -> None:
        code, reply = await self.send({"type": "status", "status": STATUS.to_dict()}, {})
        self.assertEqual(code, 401)
        code, reply = await self.upload(FILE_A, self.data[FILE_A], headers={})
        self.assertEqual(code, 401)
        self.assertFalse(await self.store.has_status_id(STATUS_ID))
        self.assertFalse(await self.store.file_store.exists(FILE_A))

    async def test_wrong_password_is_401(self) -> None:
        wrong = basic(USER, "wrong")
        code, _ = await self.send({"type": "status", "status": STATUS.to_dict()}, wrong)
        self.assertEqual(code, 401)
        code, _ = await self.upload(FILE_A, self.data[FILE_A], headers=wrong)
        self.assertEqual(code, 401)
        self.assertFalse(await self.store.file_store.exists(FILE_A))
        self.assertEqual(self.tmp_entries(), [])

    async def test_missing_role_import_is_403(self) -> None:
        await self.store.create_or_update_user("viewer", "pw", ["user"])
        viewer = basic("viewer", "pw")
        self.assertEqual(await self.send({"type": "status", "status": STATUS.to_dict()},
                                         viewer),
                         (403, {"message": "Missing role import"}))
        code, _ = await self.upload(FILE_A, self.data[FILE_A], headers=viewer)
        self.assertEqual(code, 403)
        self.assertFalse(await self.store.file_store.exists(FILE_A))


class LargeUploadTests(ImporterFixture, SQLiteStoreMixin, TestCase):
    """A large upload is streamed to disk, not held in memory."""

    async def test_50_mb_upload_keeps_memory_small(self) -> None:
        size = 50 * 1024 * 1024
        source = self.mktemp()
        digest = hashlib.md5()
        with open(source, "wb") as f:
            for _ in range(size // (1024 * 1024)):
                chunk = os.urandom(1024 * 1024)
                digest.update(chunk)
                f.write(chunk)
        tracemalloc.start()
        try:
            with open(source, "rb") as f:
                code, body = await self.post(f"{self.url}/data/{FILE_C}/{digest.hexdigest()}",
                                             FileBodyProducer(f), b"application/octet-stream")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertEqual((code, json.loads(body)), (200, {"state": "continue"}))
        self.assertLess(peak, 8 * 1024 * 1024)
        self.assertEqual(os.path.getsize(self.store.file_path_for_id(FILE_C).path), size)
        [request] = _RecordingRequest.seen
        self.assertIsNotNone(request.body_sink)
        self.assertEqual(request.buffered_bytes, 0)


class SerialisedTests(SynchronousTestCase):
    """The importer's one-holder-per-key queue (messages about one entity, in turn)."""

    def test_a_cancelled_waiter_leaves_the_queue(self) -> None:
        serialised = _Serialised()
        held: list[str] = []

        async def hold(name: str, until: Deferred[None]) -> None:
            async with serialised.holding("status"):
                held.append(name)
                await until

        release = Deferred()
        first = Deferred.fromCoroutine(hold("first", release))
        second = Deferred.fromCoroutine(hold("second", succeed(None)))
        third = Deferred.fromCoroutine(hold("third", succeed(None)))
        second.cancel()  # its client went away while it waited
        self.failureResultOf(second, CancelledError)
        release.callback(None)
        self.successResultOf(first)
        self.successResultOf(third)
        self.assertEqual(held, ["first", "third"])
        self.assertEqual(serialised._locks, {})
