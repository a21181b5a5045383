"""
The query API (MeteorPi-compatible): cameras and their status, searches over events and files,
single entities by id, and the bytes of files. Public unless ``[http] public_query`` is false,
then role ``user``; every answer of a query route, errors included, carries the CORS
headers, and ``OPTIONS`` pre-flights of every query route are answered without
authentication. (Answers given before a route is found, such as an unknown path's 404 or an
oversized body's 413, do not.)

Decisions where the specification is silent:

- A malformed id, camera id or time in the path is a 400 naming the parameter; a well-formed
  id that matches nothing is the 404 ``{"message": "Entity not found", "entity_id": ...}``.
- ``GET /events/{search}`` takes the segment as the URL decoding left it and applies
  ``unquote_plus`` once more, exactly as the specification says; this suits the MeteorPi
  client, which applies ``quote_plus`` twice. The path converter accepts a ``/`` that a client
  left unescaped.
- File content: ``ETag`` is the quoted sha256 (the md5 for records without one), answered 304
  to a matching ``If-None-Match``; ``Last-Modified`` is the record's ``file_time``, so it is
  the same on every node holding the file. A suffix range longer than the file is the whole
  file (RFC 9110); unsatisfiable ranges are a 416 with ``Content-Range: bytes */size`` and a
  JSON body. The stored bytes are served with ``X-Content-Type-Options: nosniff`` and
  ``Content-Security-Policy: sandbox`` so that an uploaded HTML or SVG file cannot run script
  on the API's origin. A record whose bytes are not (yet) stored is a 404. The name after the
  id in the URL is ignored; the download name comes from the record's ``file_name`` reduced to
  its last path component without control or quote characters (or ``<file_id><extension>``).
"""

from __future__ import annotations

import mimetypes
import re
from typing import Any, Awaitable, Callable
from urllib.parse import quote, unquote_to_bytes

from klein import Klein
from twisted.python.filepath import FilePath
from twisted.web import http, static
from twisted.web.iweb import IRequest

from meteord.model import (
    MAX_LIMIT,
    EventSearch,
    FileRecord,
    FileRecordSearch,
    InvalidEntity,
    datetime_to_ms,
    ms_to_datetime,
    parse_camera_id,
    parse_id,
)
from meteord.web._body import read_json_body
from meteord.web.auth import Authenticator
from meteord.web.errors import APIError, entity_not_found, install_error_handlers
from meteord.web.responses import write_json, write_json_error
from meteord.wire import decode_json

__all__ = ["QueryAPI", "content_disposition", "safe_file_name"]

_CORS_HEADERS = {
    b"Access-Control-Allow-Origin": b"*",
    b"Access-Control-Expose-Headers":
        b"Content-Length, Content-Range, Content-Disposition, ETag, Last-Modified, X-Request-Id",
}
_PREFLIGHT_HEADERS = {
    b"Access-Control-Allow-Origin": b"*",
    b"Access-Control-Allow-Methods": b"GET, HEAD, POST, OPTIONS",
    b"Access-Control-Allow-Headers": b"Authorization, Content-Type",
    b"Access-Control-Max-Age": b"86400",
}
_INTEGER = re.compile(r"-?[0-9]{1,20}")
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MIME_TYPE = re.compile(rf"{_TOKEN}/{_TOKEN}(\s*;\s*{_TOKEN}=(\"[ -~]*\"|{_TOKEN}))*")
# Ranges in one Range header at most; beyond, the header is ignored and the whole file sent.
MAX_RANGES = 16
_UNSAFE_IN_NAME = re.compile(r"[\x00-\x1f\x7f\"\\]")

# Every path of this API, for the OPTIONS pre-flights.
_QUERY_PATHS = (
    "/nodes",
    "/cameras",
    "/cameras/<camera_id>/status",
    "/cameras/<camera_id>/status/<ms>",
    "/events/<path:search>",
    "/events/search",
    "/events/id/<event_id>",
    "/files/<path:search>",
    "/files/search",
    "/files/id/<file_id>",
    "/files/content/<file_id>",
    "/files/content/<file_id>/<path:name>",
)


def safe_file_name(file_name: str | None, fallback: str) -> str:
    """
    A download name for a stored ``file_name``: its last path component without control
    characters, quotes or backslashes; ``fallback`` when nothing usable is left.
    """
    if file_name:
        name = re.split(r"[/\\]", file_name)[-1]
        name = _UNSAFE_IN_NAME.sub("", name).strip()
        if name and name not in (".", ".."):
            return name
    return fallback


def content_disposition(name: str) -> bytes:
    """``inline`` with an ASCII ``filename`` and, for other names, an RFC 6266 ``filename*``."""
    ascii_name = "".join(c if " " <= c <= "~" else "_" for c in name)
    value = f'inline; filename="{ascii_name}"'
    if ascii_name != name:
        value += "; filename*=UTF-8''" + quote(name, safe="")
    return value.encode("ascii")


def _etag_matches(header: bytes | None, etag: bytes) -> bool:
    """Whether an If-None-Match header names ``etag`` (weak comparison) or is ``*``."""
    if header is None:
        return False
    for tag in header.split(b","):
        tag = tag.strip()
        if tag == b"*" or tag.removeprefix(b"W/") == etag:
            return True
    return False


def _joined(request: Any, name: bytes) -> bytes | None:
    """Every value of a list-valued header, as one comma-separated value."""
    values = request.requestHeaders.getRawHeaders(name)
    return None if values is None else b",".join(values)


def _drop_unusable_conditions(request: Any) -> None:
    """
    Headers twisted.web would fail on, or that do not apply, are ignored: a Range that is not
    ASCII, and an If-Modified-Since that is not a date or comes with If-None-Match (which
    takes precedence, RFC 9110 13.2.2).
    """
    headers = request.requestHeaders
    ranges = headers.getRawHeaders(b"range")
    if ranges is not None and not all(value.isascii() for value in ranges):
        headers.removeHeader(b"range")
    since = headers.getRawHeaders(b"if-modified-since")
    if since is not None:
        try:
            usable = not headers.hasHeader(b"if-none-match") and all(
                http.stringToDatetime(value) is not None for value in since)
        except Exception:
            usable = False
        if not usable:
            headers.removeHeader(b"if-modified-since")


class _StoredFile(static.File):
    """
    ``static.File`` for one stored file: the record's type and time, suffix ranges clamped to
    the file, a Range header without ranges ignored, and a JSON body for unsatisfiable ranges.
    """

    def __init__(self, path: str, mime_type: str, modified: float) -> None:
        super().__init__(path, defaultType="application/octet-stream")
        self.type = mime_type
        self.encoding = None
        self._modified = modified

    def getModificationTime(self) -> float:
        return self._modified

    def _parseRangeHeader(self, range: bytes) -> list[tuple[int | None, int | None]]:
        ranges = super()._parseRangeHeader(range)
        if not ranges:
            raise ValueError("no range in the Range header")
        if len(ranges) > MAX_RANGES:
            # Overlapping ranges would send the file that many times over in one answer.
            raise ValueError(f"more than {MAX_RANGES} ranges")
        return ranges

    def _rangeToOffsetAndSize(self, start: int | None, end: int | None) -> tuple[int, int]:
        if start is None and end is not None:
            if end == 0:
                return 0, 0
            start, end = max(self.getFileSize() - end, 0), None
        return super()._rangeToOffsetAndSize(start, end)

    def makeProducer(self, request: Any, fileForReading: Any) -> Any:
        producer = super().makeProducer(request, fileForReading)
        if request.code != http.REQUESTED_RANGE_NOT_SATISFIABLE:
            return producer
        fileForReading.close()
        body = write_json_error(request, 416, "Range not satisfiable",
                                file_size=self.getFileSize())
        return _BodyProducer(request, body)


class _BodyProducer:
    """Writes one small body and finishes the request, standing in for a file producer."""

    def __init__(self, request: Any, body: bytes) -> None:
        self._request = request
        self._body = body

    def start(self) -> None:
        self._request.write(self._body)
        self._request.finish()


def _search_from_segment(segment: str) -> object:
    """The JSON of a search path segment: ``unquote_plus`` of what URL decoding left."""
    return decode_json(unquote_to_bytes(segment.replace("+", " ")))


def _path_ms(text: str) -> int:
    """An integer of milliseconds from the path, or a 400 naming ``ms``."""
    if not _INTEGER.fullmatch(text):
        raise InvalidEntity("ms", "expected an integer number of milliseconds")
    try:
        ms_to_datetime(int(text))
    except ValueError as e:
        raise InvalidEntity("ms", str(e)) from None
    return int(text)


class QueryAPI:
    """
    The query routes over ``store`` (an IMeteorStore). ``auth`` checks credentials when
    ``public`` is false; ``max_limit`` bounds a search's ``limit``.
    """

    app = Klein()
    install_error_handlers(app)

    def __init__(self, store: Any, auth: Authenticator, *, public: bool = True,
                 max_limit: int = MAX_LIMIT,
                 nodes: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None) -> None:
        """
        @param nodes: gives the discovery registry in the shape of ``GET /nodes``; without it
            the route answers an empty registry.
        """
        self._store = store
        self._auth = auth
        self._public = public
        self._max_limit = max_limit
        self._nodes = nodes

    async def _begin(self, request: IRequest) -> None:
        """CORS headers first (so errors carry them too), then the login if one is needed."""
        for name, value in _CORS_HEADERS.items():
            request.setHeader(name, value)
        if not self._public:
            await self._auth.require(request, "user")

    @app.route("/nodes", methods=["GET"])
    async def list_nodes(self, request: IRequest) -> bytes:
        await self._begin(request)
        nodes = await self._nodes() if self._nodes is not None else []
        return write_json(request, 200, {"nodes": nodes})

    # cameras

    @app.route("/cameras", methods=["GET"])
    async def list_cameras(self, request: IRequest) -> bytes:
        await self._begin(request)
        cameras = await self._store.get_cameras()
        return write_json(request, 200, {"cameras": sorted(cameras, reverse=True)})

    @app.route("/cameras/<camera_id>/status", methods=["GET"])
    async def current_camera_status(self, request: IRequest, camera_id: str) -> bytes:
        await self._begin(request)
        return await self._camera_status(request, camera_id, None)

    @app.route("/cameras/<camera_id>/status/<ms>", methods=["GET"])
    async def camera_status_at(self, request: IRequest, camera_id: str, ms: str) -> bytes:
        await self._begin(request)
        return await self._camera_status(request, camera_id, ms)

    async def _camera_status(self, request: IRequest, camera_id: str, ms: str | None) -> bytes:
        camera_id = parse_camera_id(camera_id, "camera_id")
        time = None if ms is None else ms_to_datetime(_path_ms(ms))
        status = await self._store.get_camera_status(time=time, camera_id=camera_id)
        if status is None:
            raise entity_not_found(camera_id)
        return write_json(request, 200, {"status": status.to_dict()})

    # searches

    @app.route("/events/<path:search>", methods=["GET"])
    async def search_events_in_path(self, request: IRequest, search: str) -> bytes:
        await self._begin(request)
        return await self._search_events(request, _search_from_segment(search))

    @app.route("/events/search", methods=["POST"])
    async def search_events_in_body(self, request: IRequest) -> bytes:
        await self._begin(request)
        return await self._search_events(request, read_json_body(request))

    async def _search_events(self, request: IRequest, search: object) -> bytes:
        result = await self._store.search_events_wire(
            EventSearch.from_dict(search, self._max_limit))
        return write_json(request, 200, {"events": result["events"], "count": result["count"]})

    @app.route("/files/<path:search>", methods=["GET"])
    async def search_files_in_path(self, request: IRequest, search: str) -> bytes:
        await self._begin(request)
        return await self._search_files(request, _search_from_segment(search))

    @app.route("/files/search", methods=["POST"])
    async def search_files_in_body(self, request: IRequest) -> bytes:
        await self._begin(request)
        return await self._search_files(request, read_json_body(request))

    async def _search_files(self, request: IRequest, search: object) -> bytes:
        result = await self._store.search_files(FileRecordSearch.from_dict(search, self._max_limit))
        files = [record.to_dict() for record in result["files"]]
        return write_json(request, 200, {"files": files, "count": result["count"]})

    # single entities

    @app.route("/events/id/<event_id>", methods=["GET"])
    async def get_event(self, request: IRequest, event_id: str) -> bytes:
        await self._begin(request)
        event_id = parse_id(event_id, "event_id")
        event = await self._store.get_event_wire(event_id)
        if event is None:
            raise entity_not_found(event_id)
        return write_json(request, 200, {"event": event})

    @app.route("/files/id/<file_id>", methods=["GET"])
    async def get_file(self, request: IRequest, file_id: str) -> bytes:
        await self._begin(request)
        record = await self._file_record(file_id)
        return write_json(request, 200, {"file": record.to_dict()})

    async def _file_record(self, file_id: str) -> FileRecord:
        file_id = parse_id(file_id, "file_id")
        record = await self._store.get_file(file_id)
        if record is None:
            raise entity_not_found(file_id)
        return record

    # file content

    @app.route("/files/content/<file_id>", methods=["GET", "HEAD"])
    async def file_content(self, request: IRequest, file_id: str) -> Any:
        await self._begin(request)
        return await self._file_content(request, file_id)

    @app.route("/files/content/<file_id>/<path:name>", methods=["GET", "HEAD"])
    async def file_content_named(self, request: IRequest, file_id: str, name: str) -> Any:
        await self._begin(request)
        return await self._file_content(request, file_id)

    async def _file_content(self, request: IRequest, file_id: str) -> Any:
        record = await self._file_record(file_id)
        path: FilePath = self._store.file_path_for_id(record.file_id)
        if not path.isfile():
            raise APIError(404, "File content not stored", entity_id=record.file_id)
        etag = b'"%s"' % (record.sha256 or record.md5).encode("ascii")
        request.setHeader(b"ETag", etag)
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        request.setHeader(b"Content-Security-Policy", b"sandbox")
        mime_type = record.mime_type if _MIME_TYPE.fullmatch(record.mime_type) else (
            "application/octet-stream")
        fallback = record.file_id + (mimetypes.guess_extension(mime_type.split(";")[0]) or "")
        request.setHeader(b"Content-Disposition",
                          content_disposition(safe_file_name(record.file_name, fallback)))
        modified = datetime_to_ms(record.file_time) / 1000
        _drop_unusable_conditions(request)
        if _etag_matches(_joined(request, b"if-none-match"), etag):
            request.setLastModified(modified)
            request.setResponseCode(http.NOT_MODIFIED)
            return b""
        # Klein renders a returned resource for what is left of the path.
        request.postpath = []
        return _StoredFile(path.path, mime_type, modified)


def _preflight_handler(path: str) -> Callable[[QueryAPI, IRequest], Awaitable[bytes]]:
    """An OPTIONS handler for one query path (each needs its own endpoint name)."""

    async def preflight(api: QueryAPI, request: IRequest, **parameters: str) -> bytes:
        for name, value in _PREFLIGHT_HEADERS.items():
            request.setHeader(name, value)
        request.setResponseCode(204)
        return b""

    preflight.__name__ = "preflight_" + re.sub(r"\W+", "_", path).strip("_")
    return preflight


for _path in _QUERY_PATHS:
    QueryAPI.app.route(_path, methods=["OPTIONS"])(_preflight_handler(_path))
