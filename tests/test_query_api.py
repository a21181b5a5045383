"""
Tests for the query API over real loopback sockets and a real SQLite store: every route's
happy path with exact JSON, the MeteorPi double-encoded search URL, authentication when the
query API is private, every 4xx with the garbage that causes it, CORS, and file downloads with
ranges, HEAD, ETag and safe names.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote, quote_plus

from meteord.model import (
    CameraStatus,
    EventSearch,
    FileRecordSearch,
    Location,
    Meta,
    Orientation,
    Point,
    datetime_to_ms,
)
from meteord.web._body import MAX_JSON_BODY
from meteord.web.query import QueryAPI, content_disposition, safe_file_name
from tests._web import JSON_TYPE, WebTestCase, basic

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
T1 = T0 + timedelta(days=10)
CONTENT = bytes(range(100))
SQL_TEXT = "x' OR '1'='1; DROP TABLE events; --"
UNKNOWN_ID = "0" * 32


def status(camera_id: str, inst_name: str) -> CameraStatus:
    return CameraStatus(
        camera_id=camera_id, status_id="1" * 32, lens="lens", sensor="sensor",
        inst_name=inst_name, software_version=1, valid_from=T0,
        location=Location(lat=52.2, long=0.12, gps=True, error=5.0),
        orientation=Orientation(alt=45.0, az=180.0, error=1.5, rot=0.0, width=30.0),
        regions=[[Point(x=0, y=0), Point(x=10, y=0), Point(x=10, y=5)]],
    )


def meteorpi_url_segment(search: dict[str, Any]) -> str:
    """The search path segment exactly as the MeteorPi 0.1.5 client builds it."""
    return quote_plus(quote_plus(json.dumps(search, separators=(",", ":"))))


class QueryTestCase(WebTestCase):
    """The data set: two cameras (one with a status change), files and events."""

    public = True

    async def setUp(self) -> None:
        await super().setUp()
        store = self.store
        self.status_a1 = await store.update_camera_status(status("cam-a", "first"), T0, "cam-a")
        self.status_a2 = await store.update_camera_status(status("cam-a", "second"), T1, "cam-a")
        self.status_b = await store.update_camera_status(status("cam-b", "b"), T0, "cam-b")
        self.image = await self.register(CONTENT, "image/png", T0 + timedelta(hours=1), "cam-a",
                                         "sky.png", [Meta(key="meteorpi:note", type="string",
                                                          value="clear")])
        self.log = await self.register(b"log text\n", "text/plain", T0 + timedelta(hours=2),
                                       "cam-b", "../../etc/passwd",
                                       [Meta(key="meteorpi:note", type="string", value=SQL_TEXT)])
        self.odd = await self.register(b"odd", "video/mp4", T0 + timedelta(hours=3), "cam-b",
                                       "métèore \"night\".mp4", [])
        self.event_a = await store.register_event(
            "cam-a", T0 + timedelta(hours=1), "meteorpi:meteor", [self.image],
            [Meta(key="meteorpi:brightness", type="number", value=2.5)])
        self.event_b = await store.register_event(
            "cam-b", T0 + timedelta(hours=2), "meteorpi:meteor", [self.log],
            [Meta(key="meteorpi:note", type="string", value=SQL_TEXT)])
        await self.add_user("reader", "pw", ["user"])
        await self.add_user("pusher", "pw", ["import"])
        await self.serve([QueryAPI(self.store, self.auth, public=self.public)])

    async def register(self, data: bytes, mime_type: str, when: datetime, camera_id: str,
                       file_name: str, metas: list[Meta]) -> Any:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(data)
        return await self.store.register_file(path, mime_type, "meteorpi:file", when, metas,
                                              camera_id=camera_id, file_name=file_name)

    async def snapshot(self) -> Any:
        """Everything a query could conceivably change."""
        events = await self.store.search_events(EventSearch(limit=0))
        files = await self.store.search_files(FileRecordSearch(limit=0))
        return (await self.store.get_cameras(), [e.to_dict() for e in events["events"]],
                [f.to_dict() for f in files["files"]], await self.store.get_users())

    def assertCORS(self, response: Any) -> None:
        self.assertEqual(self.header(response, "Access-Control-Allow-Origin"), "*")


class CameraRouteTests(QueryTestCase):
    async def test_cameras_sorted_descending(self) -> None:
        response, body = await self.call("GET", "/cameras")
        self.assertEqual((response.code, body), (200, {"cameras": ["cam-b", "cam-a"]}))
        self.assertEqual(self.header(response, "Content-Type"), JSON_TYPE)
        self.assertCORS(response)

    async def test_current_status(self) -> None:
        response, body = await self.call("GET", "/cameras/cam-a/status")
        self.assertEqual((response.code, body), (200, {"status": self.status_a2.to_dict()}))

    async def test_status_at_a_time(self) -> None:
        ms = datetime_to_ms(T0 + timedelta(days=1))
        response, body = await self.call("GET", f"/cameras/cam-a/status/{ms}")
        expected = (await self.store.get_camera_status(T0 + timedelta(days=1), "cam-a")).to_dict()
        self.assertEqual(expected["inst_name"], "first")
        self.assertEqual(expected["valid_to"], datetime_to_ms(T1))
        self.assertEqual((response.code, body), (200, {"status": expected}))

    async def test_no_status_is_404(self) -> None:
        response, body = await self.call("GET", "/cameras/nocam/status")
        self.assertEqual((response.code, body),
                         (404, {"message": "Entity not found", "entity_id": "nocam"}))
        ms = datetime_to_ms(T0) - 1
        response, body = await self.call("GET", f"/cameras/cam-a/status/{ms}")
        self.assertEqual((response.code, body),
                         (404, {"message": "Entity not found", "entity_id": "cam-a"}))

    async def test_bad_time_is_400(self) -> None:
        for ms in ("abc", "1.5", "1e3", "99999999999999999999", "-", "%20"):
            response, body = await self.call("GET", f"/cameras/cam-a/status/{ms}")
            self.assertEqual((ms, response.code, body["key"]), (ms, 400, "ms"))
            self.assertCORS(response)

    async def test_bad_camera_id_is_400(self) -> None:
        for camera_id in ("bad%20id!", "x" * 65, "%C3%A9"):
            response, body = await self.call("GET", f"/cameras/{camera_id}/status")
            self.assertEqual((camera_id, response.code, body["key"]),
                             (camera_id, 400, "camera_id"))


class SearchTests(QueryTestCase):
    async def search(self, kind: str, search: dict[str, Any]) -> tuple[Any, Any]:
        return await self.call("GET", f"/{kind}/{meteorpi_url_segment(search)}")

    async def test_meteorpi_encoded_event_search(self) -> None:
        response, body = await self.search("events", {"camera_ids": ["cam-a", "cam-b"]})
        self.assertEqual((response.code, body), (200, {
            "events": [self.event_b.to_dict(), self.event_a.to_dict()], "count": 2}))
        self.assertCORS(response)

    async def test_meteorpi_encoded_file_search_with_slash_and_plus(self) -> None:
        response, body = await self.search("files", {"mime_type": "image/png", "limit": 10})
        self.assertEqual((response.code, body),
                         (200, {"files": [self.image.to_dict()], "count": 1}))
        response, body = await self.search("files", {"meta": [
            {"key": "meteorpi:note", "type": "string_equals", "value": "a+b c%41/é"}]})
        self.assertEqual((response.code, body), (200, {"files": [], "count": 0}))

    async def test_singly_encoded_search_with_unescaped_slash(self) -> None:
        segment = quote_plus(json.dumps({"mime_type": "image/png"}))
        response, body = await self.call("GET", f"/files/{segment}")
        self.assertEqual((response.code, body["count"]), (200, 1))
        response, body = await self.call(
            "GET", "/files/" + quote(json.dumps({"mime_type": "image/png"}), safe="/"))
        self.assertEqual((response.code, body["count"]), (200, 1))

    async def test_sql_metacharacters_match_literally(self) -> None:
        constraint = {"key": "meteorpi:note", "type": "string_equals", "value": SQL_TEXT}
        response, body = await self.search("events", {"meta": [constraint]})
        self.assertEqual((response.code, body),
                         (200, {"events": [self.event_b.to_dict()], "count": 1}))
        response, body = await self.search("files", {"meta": [constraint]})
        self.assertEqual((response.code, body), (200, {"files": [self.log.to_dict()], "count": 1}))
        response, body = await self.search("events", {"camera_ids": ["x' OR '1'='1"]})
        self.assertEqual(response.code, 400)
        response, body = await self.search("events", {"event_type": "x' OR 1=1 --"})
        self.assertEqual((response.code, body), (200, {"events": [], "count": 0}))

    async def test_limit_skip_and_count(self) -> None:
        response, body = await self.search("files", {"limit": 1, "skip": 1})
        self.assertEqual((response.code, body), (200, {"files": [self.log.to_dict()], "count": 3}))

    async def test_post_searches(self) -> None:
        response, body = await self.call("POST", "/events/search", body={"camera_ids": "cam-a"})
        self.assertEqual((response.code, body),
                         (200, {"events": [self.event_a.to_dict()], "count": 1}))
        response, body = await self.call("POST", "/files/search", body={"exclude_events": True})
        self.assertEqual((response.code, body), (200, {"files": [self.odd.to_dict()], "count": 1}))
        self.assertCORS(response)

    async def test_bad_searches_are_400_naming_the_key(self) -> None:
        before = await self.snapshot()
        cases = [
            ({"limit": -1}, "limit"), ({"limit": "10"}, "limit"), ({"limit": 10_001}, "limit"),
            ({"limit": 0}, "limit"), ({"limit": 2**70}, "limit"), ({"skip": -1}, "skip"),
            ({"skip": 1.5}, "skip"), ({"camera_ids": []}, "camera_ids"),
            ({"lat_min": 10, "lat_max": 5}, "lat_max"), ({"after": "yesterday"}, "after"),
            ({"before": 1, "after": 2}, "before"), ({"after_offset": 86400}, "after_offset"),
            ({"meta": [{"key": "a", "type": "like", "value": 1}]}, "meta[0].type"),
            ({"meta": [{"key": "a", "type": "greater", "value": "x"}]}, "meta[0].value"),
            ({"exclude_imported": "yes"}, "exclude_imported"),
            ({"exclude_export_to": "not-a-uuid"}, "exclude_export_to"),
            ({"meta": [{"key": "a", "type": "greater", "value": 1}] * 33}, "meta"),
        ]
        for kind in ("events", "files"):
            for search, key in cases:
                response, body = await self.search(kind, search)
                self.assertEqual((kind, search, response.code, body.get("key")),
                                 (kind, search, 400, key))
                response, body = await self.call("POST", f"/{kind}/search", body=search)
                self.assertEqual((kind, search, response.code, body.get("key")),
                                 (kind, search, 400, key))
        self.assertEqual(await self.snapshot(), before)

    async def test_not_json_in_the_path_is_400(self) -> None:
        for segment in ("not-json", "%257B", quote_plus(quote_plus("{'a':1}")), "%25FF",
                        quote_plus(quote_plus("[1,2]")), quote_plus(quote_plus("NaN"))):
            response, body = await self.call("GET", f"/events/{segment}")
            self.assertEqual((segment, response.code), (segment, 400))
            self.assertEqual(self.header(response, "Content-Type"), JSON_TYPE)

    async def test_post_search_body_errors(self) -> None:
        response, body = await self.call("POST", "/events/search", data=b"{}",
                                         content_type=b"text/plain")
        self.assertEqual(response.code, 415)
        response, body = await self.call("POST", "/files/search",
                                         data=b" " * (MAX_JSON_BODY + 1))
        self.assertEqual(response.code, 413)
        response, body = await self.call("POST", "/files/search", data=b"{bad")
        self.assertEqual(response.code, 400)
        response, body = await self.call("POST", "/files/search", body=[1])
        self.assertEqual((response.code, body["message"]), (400, "expected an object, not a list"))


class EntityRouteTests(QueryTestCase):
    async def test_event_by_id(self) -> None:
        response, body = await self.call("GET", f"/events/id/{self.event_a.event_id}")
        self.assertEqual((response.code, body), (200, {"event": self.event_a.to_dict()}))
        self.assertCORS(response)

    async def test_file_by_id_in_dashed_form(self) -> None:
        file_id = self.image.file_id
        dashed = "-".join([file_id[:8], file_id[8:12], file_id[12:16], file_id[16:20],
                           file_id[20:]]).upper()
        response, body = await self.call("GET", f"/files/id/{dashed}")
        self.assertEqual((response.code, body), (200, {"file": self.image.to_dict()}))

    async def test_unknown_ids_are_404(self) -> None:
        for kind in ("events", "files"):
            response, body = await self.call("GET", f"/{kind}/id/{UNKNOWN_ID}")
            self.assertEqual((response.code, body),
                             (404, {"message": "Entity not found", "entity_id": UNKNOWN_ID}))

    async def test_invalid_ids_are_400(self) -> None:
        for kind, key in (("events", "event_id"), ("files", "file_id")):
            for bad in ("xyz", "0" * 31, "0" * 33, "g" * 32, "%27%20OR%201%3D1"):
                response, body = await self.call("GET", f"/{kind}/id/{bad}")
                self.assertEqual((kind, bad, response.code, body["key"]), (kind, bad, 400, key))


class FileContentTests(QueryTestCase):
    def content_path(self, record: Any = None, name: str = "") -> str:
        record = record or self.image
        return f"/files/content/{record.file_id}" + (f"/{name}" if name else "")

    async def get(self, path: str, range_header: str | None = None,
                  method: str = "GET", **headers: str) -> tuple[Any, Any]:
        all_headers = {name.replace("_", "-").encode(): [value.encode()]
                       for name, value in headers.items()}
        if range_header is not None:
            all_headers[b"Range"] = [range_header.encode()]
        return await self.call(method, path, headers=all_headers)

    async def test_whole_file_with_headers(self) -> None:
        response, body = await self.get(self.content_path())
        self.assertEqual((response.code, body), (200, CONTENT))
        self.assertEqual(self.header(response, "Content-Type"), "image/png")
        self.assertEqual(self.header(response, "Content-Length"), "100")
        self.assertEqual(self.header(response, "ETag"), f'"{self.image.sha256}"')
        self.assertEqual(self.header(response, "Last-Modified"), "Mon, 01 Jan 2024 01:00:00 GMT")
        self.assertEqual(self.header(response, "Content-Disposition"),
                         'inline; filename="sky.png"')
        self.assertEqual(self.header(response, "Accept-Ranges"), "bytes")
        self.assertEqual(self.header(response, "X-Content-Type-Options"), "nosniff")
        self.assertCORS(response)

    async def test_named_route_ignores_the_name(self) -> None:
        for name in ("sky.png", "other.bin", "a/b/c", "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
                     "..%2F..%2Fsecret"):
            response, body = await self.get(self.content_path(name=name))
            self.assertEqual((name, response.code, body), (name, 200, CONTENT))

    async def test_first_bytes(self) -> None:
        response, body = await self.get(self.content_path(), "bytes=0-9")
        self.assertEqual((response.code, body), (206, CONTENT[:10]))
        self.assertEqual(self.header(response, "Content-Range"), "bytes 0-9/100")
        self.assertEqual(self.header(response, "Content-Length"), "10")

    async def test_middle_bytes(self) -> None:
        response, body = await self.get(self.content_path(), "bytes=40-59")
        self.assertEqual((response.code, body), (206, CONTENT[40:60]))
        self.assertEqual(self.header(response, "Content-Range"), "bytes 40-59/100")

    async def test_open_ended_range(self) -> None:
        response, body = await self.get(self.content_path(), "bytes=95-")
        self.assertEqual((response.code, body), (206, CONTENT[95:]))
        self.assertEqual(self.header(response, "Content-Range"), "bytes 95-99/100")

    async def test_suffix_range(self) -> None:
        response, body = await self.get(self.content_path(), "bytes=-5")
        self.assertEqual((response.code, body), (206, CONTENT[-5:]))
        self.assertEqual(self.header(response, "Content-Range"), "bytes 95-99/100")

    async def test_suffix_longer_than_the_file_is_the_whole_file(self) -> None:
        response, body = await self.get(self.content_path(), "bytes=-1000")
        self.assertEqual((response.code, body), (206, CONTENT))
        self.assertEqual(self.header(response, "Content-Range"), "bytes 0-99/100")

    async def test_end_past_the_file_is_clamped(self) -> None:
        response, body = await self.get(self.content_path(), "bytes=90-1000")
        self.assertEqual((response.code, body), (206, CONTENT[90:]))
        self.assertEqual(self.header(response, "Content-Range"), "bytes 90-99/100")

    async def test_range_past_the_end_is_416(self) -> None:
        for range_header in ("bytes=100-", "bytes=500-600", "bytes=-0"):
            response, body = await self.get(self.content_path(), range_header)
            self.assertEqual((range_header, response.code, body), (
                range_header, 416, {"message": "Range not satisfiable", "file_size": 100}))
            self.assertEqual(self.header(response, "Content-Range"), "bytes */100")

    async def test_malformed_range_is_ignored(self) -> None:
        for range_header in ("bytes=5-1", "items=0-1", "bytes=x-y", "bytes="):
            response, body = await self.get(self.content_path(), range_header)
            self.assertEqual((range_header, response.code, body), (range_header, 200, CONTENT))

    async def test_too_many_ranges_are_ignored(self) -> None:
        response, body = await self.get(self.content_path(), "bytes=" + ",".join(["0-"] * 17))
        self.assertEqual((response.code, body), (200, CONTENT))
        response, body = await self.get(self.content_path(), "bytes=0-0,2-2")
        self.assertEqual(response.code, 206)
        self.assertIn(b"multipart/byteranges", self.header(response, "Content-Type").encode())

    async def test_undecodable_conditional_headers_are_ignored(self) -> None:
        cases = [
            {b"Range": [b"bytes=\xff-"]},
            {b"If-Modified-Since": [b";"]},
            {b"If-Modified-Since": [b""]},
            {b"If-Modified-Since": [b"Mon, 01 Jan 2024 01:00:00 GMT"],
             b"If-None-Match": [b'"other"']},
        ]
        for headers in cases:
            response, body = await self.call("GET", self.content_path(), headers=headers)
            self.assertEqual((headers, response.code, body), (headers, 200, CONTENT))
        response, body = await self.call("GET", self.content_path(), headers={
            b"If-Modified-Since": [b"Mon, 01 Jan 2024 01:00:00 GMT"]})
        self.assertEqual(response.code, 304)

    async def test_if_none_match_over_several_header_lines(self) -> None:
        response, body = await self.call("GET", self.content_path(), headers={
            b"If-None-Match": [f'"{self.image.sha256}"'.encode(), b'"other"']})
        self.assertEqual((response.code, body), (304, b""))

    async def test_head(self) -> None:
        response, body = await self.get(self.content_path(), method="HEAD")
        self.assertEqual((response.code, body), (200, b""))
        self.assertEqual(self.header(response, "ETag"), f'"{self.image.sha256}"')
        self.assertEqual(self.header(response, "Content-Type"), "image/png")
        raw = await self.raw_request(f"HEAD /api{self.content_path()} HTTP/1.0\r\n\r\n")
        head, _, rest = raw.partition(b"\r\n\r\n")
        self.assertIn(b"\r\nContent-Length: 100\r\n", head + b"\r\n")
        self.assertEqual(rest, b"")
        response, body = await self.get(self.content_path(name="sky.png"), method="HEAD")
        self.assertEqual((response.code, body), (200, b""))

    async def test_if_none_match_is_304(self) -> None:
        etag = f'"{self.image.sha256}"'
        for header in (etag, f'W/{etag}', f'"other", {etag}', "*"):
            response, body = await self.get(self.content_path(), if_none_match=header)
            self.assertEqual((header, response.code, body), (header, 304, b""))
        response, body = await self.get(self.content_path(), if_none_match='"other"')
        self.assertEqual(response.code, 200)

    async def test_stored_path_traversal_name_is_reduced(self) -> None:
        response, body = await self.get(self.content_path(self.log))
        self.assertEqual((response.code, body), (200, b"log text\n"))
        self.assertEqual(self.header(response, "Content-Disposition"),
                         'inline; filename="passwd"')

    async def test_non_ascii_name(self) -> None:
        response, body = await self.get(self.content_path(self.odd))
        self.assertEqual(self.header(response, "Content-Disposition"),
                         "inline; filename=\"m_t_ore night.mp4\"; "
                         "filename*=UTF-8''m%C3%A9t%C3%A8ore%20night.mp4")

    async def test_mime_type_that_is_not_a_media_type_is_served_as_octet_stream(self) -> None:
        record = await self.register(b"<script>", "text/html <script>", T0, "cam-a", "x", [])
        response, body = await self.get(self.content_path(record))
        self.assertEqual((response.code, body), (200, b"<script>"))
        self.assertEqual(self.header(response, "Content-Type"), "application/octet-stream")
        self.assertEqual(self.header(response, "Content-Security-Policy"), "sandbox")

    async def test_unknown_and_invalid_ids(self) -> None:
        response, body = await self.get(f"/files/content/{UNKNOWN_ID}")
        self.assertEqual((response.code, body),
                         (404, {"message": "Entity not found", "entity_id": UNKNOWN_ID}))
        for bad in ("..", "..%2F..%2Fetc%2Fpasswd", "%2e%2e", "abc"):
            response, body = await self.get(f"/files/content/{bad}/x")
            self.assertIn(response.code, (400, 404))
            self.assertEqual(self.header(response, "Content-Type"), JSON_TYPE)

    async def test_missing_bytes_are_404(self) -> None:
        os.remove(self.store.file_path_for_id(self.image.file_id).path)
        response, body = await self.get(self.content_path())
        self.assertEqual((response.code, body), (404, {
            "message": "File content not stored", "entity_id": self.image.file_id}))


class CORSTests(QueryTestCase):
    async def test_preflight_on_every_query_route(self) -> None:
        segment = meteorpi_url_segment({})
        for path in ("/cameras", "/cameras/cam-a/status", "/cameras/cam-a/status/5",
                     f"/events/{segment}", "/events/search", f"/events/id/{UNKNOWN_ID}",
                     f"/files/{segment}", "/files/search", f"/files/id/{UNKNOWN_ID}",
                     f"/files/content/{UNKNOWN_ID}", f"/files/content/{UNKNOWN_ID}/a.png"):
            response, body = await self.call("OPTIONS", path)
            self.assertEqual((path, response.code), (path, 204))
            self.assertCORS(response)
            self.assertEqual(self.header(response, "Access-Control-Allow-Headers"),
                             "Authorization, Content-Type")
            self.assertIn("POST", self.header(response, "Access-Control-Allow-Methods"))

    async def test_errors_carry_cors(self) -> None:
        response, body = await self.call("GET", f"/events/id/{UNKNOWN_ID}")
        self.assertEqual(response.code, 404)
        self.assertCORS(response)


class PrivateQueryTests(QueryTestCase):
    public = False

    def routes(self) -> list[tuple[str, str]]:
        segment = meteorpi_url_segment({})
        return [("GET", "/cameras"), ("GET", "/cameras/cam-a/status"),
                ("GET", f"/cameras/cam-a/status/{datetime_to_ms(T1)}"),
                ("GET", f"/events/{segment}"), ("GET", f"/files/{segment}"),
                ("POST", "/events/search"), ("POST", "/files/search"),
                ("GET", f"/events/id/{self.event_a.event_id}"),
                ("GET", f"/files/id/{self.image.file_id}"),
                ("GET", f"/files/content/{self.image.file_id}"),
                ("GET", f"/files/content/{self.image.file_id}/sky.png")]

    async def test_every_route_needs_role_user(self) -> None:
        for method, path in self.routes():
            body = {} if method == "POST" else None
            for headers, code in ((None, 401), (basic("reader", "wrong"), 401),
                                  (basic("pusher", "pw"), 403), (basic("reader", "pw"), 200)):
                response, answer = await self.call(method, path, body=body, headers=headers)
                self.assertEqual((method, path, headers, response.code),
                                 (method, path, headers, code))
                if code == 401:
                    self.assertEqual(self.header(response, "WWW-Authenticate"),
                                     'Basic realm="meteord"')
                if code == 403:
                    self.assertEqual(answer, {"message": "Missing role user"})
            self.clock.advance(61)

    async def test_preflight_needs_no_login(self) -> None:
        response, body = await self.call("OPTIONS", "/cameras")
        self.assertEqual(response.code, 204)


class GarbageTests(QueryTestCase):
    async def test_never_500_or_html(self) -> None:
        before = await self.snapshot()
        paths = ["/cameras/%00/status", "/cameras/%FF/status", "/events/%FF%FE",
                 "/events/" + "%257B" * 3000, "/files/id/%00", "/files/content/%00",
                 "/events/id/" + "a" * 5000, "/cameras/a/status/" + "9" * 400,
                 "/files/" + quote_plus(quote_plus(json.dumps({"meta": [None]}))),
                 "/events/" + quote_plus(quote_plus(json.dumps({"camera_ids": [[1]]}))),
                 "/events/" + quote_plus(quote_plus("[" * 2000)),
                 "/files/" + quote_plus(quote_plus(json.dumps({"limit": 1e308}))),
                 "/events/" + quote_plus(quote_plus(json.dumps({"before": 2**80})))]
        for path in paths:
            for method in ("GET", "HEAD", "POST", "PUT"):
                response, body = await self.call(method, path)
                self.assertLess(response.code, 500, (method, path, body))
                if method != "HEAD":
                    self.assertEqual(self.header(response, "Content-Type"), JSON_TYPE,
                                     (method, path))
        self.assertEqual(await self.snapshot(), before)


class FileNameTests(QueryTestCase):
    def test_safe_file_name(self) -> None:
        self.assertEqual(safe_file_name("../../etc/passwd", "f"), "passwd")
        self.assertEqual(safe_file_name("C:\\x\\evil.exe", "f"), "evil.exe")
        self.assertEqual(safe_file_name('a"b\r\nc', "f"), "abc")
        for name in (None, "", "..", "dir/", " . "):
            self.assertEqual(safe_file_name(name, "fallback"), "fallback")

    def test_content_disposition(self) -> None:
        self.assertEqual(content_disposition("a b.png"), b'inline; filename="a b.png"')
        self.assertEqual(content_disposition("é"),
                         b"inline; filename=\"_\"; filename*=UTF-8''%C3%A9")
