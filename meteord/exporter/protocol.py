"""
The MeteorPi import protocol, seen from the exporter, as a pure state machine for one entity.

`ExportProtocol` is fed the importer's replies (or transport failures) and answers with the
next action for its caller to carry out: send the entity, a `cached_entity` reference, a camera
status or a file's bytes, or stop with `Done`, `EntityFailed` or `TransportFailed`. It does no
I/O and holds no reactor, so every reply sequence can be tested directly.

Choices where the specification is silent:

- Every request counts as one round trip: entity sends, `cached_entity` sends, status sends and
  file uploads. At most `max_round_trips` (32) requests are made; a reply that would need a
  33rd ends as an entity failure. An event needing more than about 28 file uploads therefore
  cannot be exported within the bound.
- After a `need_file_data` reply, every file named by `file_id` and by meteord's `file_ids` is
  uploaded (in that order, each once per reply) before the entity is sent again, which saves
  one entity round trip per missing file against a meteord importer.
- After a status or file upload the *full* entity is sent again, not `cached_entity`:
  `cached_entity` refers to "the entity just sent", and the last message was not the entity;
  the importer's cache may also have evicted it or live in another process, and a miss costs a
  `continue-nocache` round trip plus the full entity anyway. The original MeteorPi exporter
  also re-sent the full entity here.
- The status an importer may ask for is the event's (or file's) `status_id` or the `status_id`
  of any of the event's files; the files it may ask for are the event's files (or the file
  itself). Asking for anything else is an entity failure.
- HTTP status classes: 2xx is a reply to interpret; 400, 413 and 422 are entity failures (they
  are about this entity's content); every other status (3xx, 401, 403, 404, 408, 429, 5xx, ...)
  is a transport failure, because it says the importer or its URL cannot take anything from
  this configuration right now, which is what back-off and disabling are for.
- A 2xx reply to a status send or an upload is success whatever its body (old importers do not
  all answer with JSON), unless the body is a JSON object whose `state` is `failed`.
- A reply `complete` to an upload that gives this entity's id as `entity_id` ends the export as
  `Done`: the upload named its entity (`meteord.wire.ENTITY_HEADER`), and meteord's importer
  answers so only once that entity is stored, so sending it again would only be answered
  `complete`. Any other success reply to an upload, `complete` without the id included (an
  importer that may mean only "bytes received"), sends the entity again as before. Other
  importers answer uploads `continue`.
"""

import json
from typing import Any, Optional, Union

from attrs import frozen

MAX_ROUND_TRIPS = 32

# HTTP statuses that reject this entity's content rather than the configuration.
ENTITY_FAILURE_STATUSES = frozenset({400, 413, 422})


@frozen
class SendEntity:
    """POST the full entity message to the target URL."""

    body: dict


@frozen
class SendCachedEntity:
    """POST a reference to the entity just sent to the target URL."""

    body: dict


@frozen
class SendStatus:
    """Load the camera status `status_id` and POST `{"type": "status", "status": ...}`."""

    status_id: str


@frozen
class UploadFile:
    """Stream the bytes of `file_id` to `{target_url}/data/{file_id}/{md5}`."""

    file_id: str
    md5: str


@frozen
class Done:
    """The importer holds the entity; the task is complete."""


@frozen
class EntityFailed:
    """This entity cannot be exported; mark its task failed and go on with the others."""

    reason: str


@frozen
class TransportFailed:
    """The importer could not be reached or refused the configuration; back off."""

    reason: str


Request = Union[SendEntity, SendCachedEntity, SendStatus, UploadFile]
Action = Union[SendEntity, SendCachedEntity, SendStatus, UploadFile, Done, EntityFailed,
               TransportFailed]


class ProtocolMisuse(Exception):
    """
    The caller fed a reply when no request was outstanding (before `start`, or after the
    protocol had finished).
    """


def _entity_id_key(kind: str) -> str:
    if kind == "event":
        return "event_id"
    if kind == "file":
        return "file_id"
    raise ValueError(f"kind must be 'event' or 'file', not {kind!r}")


def classify_http_status(status_code: int) -> Optional[str]:
    """
    Classify an HTTP status: `None` for 2xx, else `"entity"` or `"transport"` for the kind of
    failure it is (see the module docstring).
    """
    if 200 <= status_code < 300:
        return None
    if status_code in ENTITY_FAILURE_STATUSES:
        return "entity"
    return "transport"


def _parse_reply(body: bytes) -> Union[dict, str]:
    """Return the reply as a JSON object, or a string saying why it is not one."""
    try:
        reply = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return "importer reply is not JSON"
    if not isinstance(reply, dict):
        return "importer reply is not a JSON object"
    return reply


class ExportProtocol:
    """
    The message/reply loop of replication.md for one entity.

    `kind` is `"event"` or `"file"`; `entity` is the entity's wire form (`Event.to_dict()` or
    `FileRecord.to_dict()`). Call `start()` once, then exactly one of `on_reply` or
    `on_transport_error` per request action returned, until a terminal action (`Done`,
    `EntityFailed`, `TransportFailed`) comes back.
    """

    def __init__(self, kind: str, entity: dict[str, Any],
                 max_round_trips: int = MAX_ROUND_TRIPS) -> None:
        self.kind = kind
        self.entity = entity
        self.entity_id: str = entity[_entity_id_key(kind)]
        self.max_round_trips = max_round_trips
        self.round_trips = 0
        files = entity.get("files", []) if kind == "event" else [entity]
        self._file_md5s: dict[str, Optional[str]] = {
            f["file_id"]: f.get("md5") for f in files}
        self._status_ids = {entity.get("status_id")} | {f.get("status_id") for f in files}
        self._status_ids.discard(None)
        self._outstanding: Optional[Request] = None
        self._uploads: list[str] = []
        self._started = False

    def start(self) -> Action:
        """Begin the export: the first action is always the full entity."""
        if self._started:
            raise ProtocolMisuse("start() called twice")
        self._started = True
        return self._request(self._full_entity())

    def on_reply(self, status_code: int, body: bytes) -> Action:
        """Take the importer's HTTP reply to the outstanding request; return the next action."""
        request = self._take_outstanding()
        failure = classify_http_status(status_code)
        if failure == "transport":
            return TransportFailed(f"HTTP {status_code} from importer")
        if failure == "entity":
            return EntityFailed(f"HTTP {status_code} from importer"
                                f"{_message_suffix(body)}")
        if isinstance(request, (SendStatus, UploadFile)):
            return self._after_sub_request(request, body)
        return self._after_entity_reply(body)

    def on_transport_error(self, reason: str) -> Action:
        """Take a connection error or timeout of the outstanding request."""
        self._take_outstanding()
        return TransportFailed(reason)

    def _take_outstanding(self) -> Request:
        if self._outstanding is None:
            raise ProtocolMisuse("no request is outstanding")
        request, self._outstanding = self._outstanding, None
        return request

    def _request(self, request: Request) -> Action:
        if self.round_trips >= self.max_round_trips:
            return EntityFailed(
                f"gave up after {self.round_trips} round trips without completing")
        self.round_trips += 1
        self._outstanding = request
        return request

    def _full_entity(self) -> SendEntity:
        return SendEntity({"type": self.kind, self.kind: self.entity})

    def _after_sub_request(self, request: Request, body: bytes) -> Action:
        reply = _parse_reply(body)
        state = reply.get("state") if isinstance(reply, dict) else None
        if state == "failed":
            what = (f"status {request.status_id}" if isinstance(request, SendStatus)
                    else f"file {request.file_id}")
            return EntityFailed(f"importer refused {what}: {_message(reply)}")
        if (state == "complete" and isinstance(request, UploadFile)
                and reply.get("entity_id") == self.entity_id):
            return Done()
        return self._next_upload_or_entity()

    def _next_upload_or_entity(self) -> Action:
        if self._uploads:
            file_id = self._uploads.pop(0)
            return self._request(UploadFile(file_id, self._file_md5s[file_id]))
        return self._request(self._full_entity())

    def _after_entity_reply(self, body: bytes) -> Action:
        reply = _parse_reply(body)
        if isinstance(reply, str):
            return EntityFailed(reply)
        state = reply.get("state")
        if state == "complete":
            return Done()
        if state == "continue":
            return self._request(SendCachedEntity(
                {"type": "cached_entity", "cached_entity_id": self.entity_id}))
        if state == "continue-nocache":
            return self._request(self._full_entity())
        if state == "need_status":
            return self._need_status(reply)
        if state == "need_file_data":
            return self._need_file_data(reply)
        if state == "failed":
            return EntityFailed(f"importer answered failed: {_message(reply)}")
        return EntityFailed(f"importer answered unknown state {state!r}")

    def _need_status(self, reply: dict) -> Action:
        status_id = reply.get("status_id")
        if not isinstance(status_id, str):
            return EntityFailed("need_status reply without a status_id")
        if status_id not in self._status_ids:
            return EntityFailed(
                f"importer asked for status {status_id}, which is not this entity's")
        return self._request(SendStatus(status_id))

    def _need_file_data(self, reply: dict) -> Action:
        file_id = reply.get("file_id")
        if not isinstance(file_id, str):
            return EntityFailed("need_file_data reply without a file_id")
        file_ids = reply.get("file_ids", [])
        if not isinstance(file_ids, list) or not all(isinstance(f, str) for f in file_ids):
            return EntityFailed("need_file_data reply with a malformed file_ids")
        wanted = list(dict.fromkeys([file_id, *file_ids]))
        for wanted_id in wanted:
            if wanted_id not in self._file_md5s:
                return EntityFailed(
                    f"importer asked for file {wanted_id}, which is not this entity's")
            if not self._file_md5s[wanted_id]:
                return EntityFailed(f"file {wanted_id} has no md5 to upload it with")
        self._uploads = wanted
        return self._next_upload_or_entity()


def _message(reply: dict) -> str:
    message = reply.get("message")
    return message if isinstance(message, str) else "no message"


def _message_suffix(body: bytes) -> str:
    reply = _parse_reply(body)
    if isinstance(reply, dict) and isinstance(reply.get("message"), str):
        return f": {reply['message']}"
    return ""
