"""
The import API (api.md "Import API", replication.md "The importer"): ``POST /import`` takes
one message of the MeteorPi import protocol and answers with the next step, and
``POST /import/data/{file_id}/{md5}`` takes a file's bytes, streamed into the file store and
verified before they become visible. Both need role ``import``.

The decisions live in ``meteord.web._import_logic``; this module gathers from the store what
they need, stores what they decide, and streams uploads through ``meteord.web._upload``. For
uploads to be streamed rather than buffered by twisted.web, the site's requests must be
``meteord.web._request.StreamingRequest`` and the site must list `ImportAPI.body_receiver` in its
``body_receivers``; without that the buffered body is read the same way.

Choices where the specification is silent:

- Messages about the same entity are handled one at a time in a process (a second waits for
  the first, then sees what it stored), so concurrent pushes store an entity once; across
  processes the store's imports leave an entity already there as it is.
- A status message is stored (if new) and answered ``continue``, as by the original importer;
  so is an upload (or ``complete``, see ``Meteord-Entity`` below). A store rule broken by an
  entity (``ConstraintViolation``, ``NoCameraStatus``) answers ``failed`` with the reason: it
  concerns that entity only.
- Uploads are checked against the md5 in the URL and, when this process holds the entity the
  file belongs to, against that record's md5 and sha256. ``POST /import/data/{file_id}``
  without an md5 (some versions of the original exporter) is accepted when the record is held,
  and answered 422 otherwise. Bytes already in the file store under that id are not checked
  again when an entity links them.
- An upload is committed straight away: the file store keeps the bytes it already has under
  that id and discards the new ones (``continue``), so the usual upload costs one trip to the
  file store's threads. Whether the file is stored already (a record or bytes) is asked only
  before refusing an upload whose md5 is unknown or differs from the held record's, since an
  upload of a file already stored is answered ``continue`` whatever its bytes. A record whose
  bytes went missing from the file store gets them back this way.
- The store is asked everything a message needs at once (whether the entity, each file record,
  each status it could want and each file's bytes are there), not one question after another:
  a few more questions, but one wait instead of up to seven. The answer is the same.
- An entity sent again (in full, as meteord's exporter does after its uploads, or as
  ``cached_entity``) within `HOLDINGS_SECONDS` (60 s) of its last answer is answered from what
  the store was found to hold then, plus the uploads stored by this process since: when that
  is everything the entity needs, it is stored at once, one trip to the store instead of
  three. Otherwise, or later, the store is asked again. What is remembered are facts about ids
  (this status is known, that file's record or bytes are stored), so an entity sent again with
  other content is judged rightly; they serve one answer only. An entity stored meanwhile by
  another process is left as it is and answered ``complete``. Bytes removed within that
  minute (``meteord-admin fsck --repair`` deleting what it takes for orphans) could be missed;
  without the remembered answer, only in the moment between the store's answer and the insert.
- The store is asked about an upload only once its body is in, never while it arrives: the
  node's orderly stop waits for requests being answered, not for bodies still arriving, so no
  store call may start before then.
- An upload may name the entity it is for in a ``Meteord-Entity`` header (the entity's id;
  meteord's exporter sends it, other exporters need not). When this process holds that
  entity, the entity has that file, and what is remembered for it plus this upload is all it
  needs, the entity is stored there and then and the upload is answered ``complete`` with the
  entity's id (``{"state": "complete", "entity_id": ...}``, also when another process stored
  it meanwhile): the exporter need not send the entity again, one round trip fewer per
  entity with files.
  Otherwise the upload is answered ``continue`` as before. A malformed id is refused (400),
  and a streamed upload's bytes are then not even written. Without the header an upload
  never stores an entity, since the importer cannot know which of the entities holding a
  file the exporter is working on, and ``complete`` for the wrong one would lose the other.
"""

from __future__ import annotations

import re
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, AsyncIterator, Optional

from klein import Klein
from twisted.internet.defer import Deferred, DeferredList, DeferredLock
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.server import Request

from meteord.errors import ConstraintViolation, NoCameraStatus
from meteord.interfaces import IMeteorStore
from meteord.model import Event, InvalidEntity, User, parse_id
from meteord.store.files import ChecksumMismatch
from meteord.web._body import read_json_body
from meteord.web._import_logic import (
    DEFAULT_CACHE_SIZE,
    CachedEntityReference,
    Entity,
    EntityCache,
    EntityMessage,
    Holdings,
    ImportNow,
    Message,
    Reply,
    StatusMessage,
    decide,
    entity_id,
    file_ids_of,
    parse_message,
    pending_file_ids,
    wanted_status_ids,
)
from meteord.web._request import body_producer, split_path
from meteord.web._upload import UploadBody, UploadRefused
from meteord.web.auth import Authenticator
from meteord.web.errors import APIError, install_error_handlers
from meteord.web.responses import write_json
from meteord.wire import ENTITY_HEADER

__all__ = ["DEFAULT_MAX_UPLOAD_BYTES", "IMPORT_ROLE", "ImportAPI"]

DEFAULT_MAX_UPLOAD_BYTES = 4 * 1024**3
IMPORT_ROLE = "import"

_HEX32 = re.compile(r"[0-9a-fA-F]{32}")

log = Logger()


def _named_entity(request: IRequest) -> Optional[str]:
    """The canonical id in an upload's `ENTITY_HEADER`; InvalidEntity (400) if malformed."""
    value = request.getHeader(ENTITY_HEADER.encode("ascii"))
    if value is None:
        return None
    return parse_id(value.decode("latin-1"), ENTITY_HEADER)


def _upload_ids(file_id: str, md5: Optional[str]) -> tuple[str, Optional[str]]:
    """The canonical file id and md5 of an upload URL; InvalidEntity (400) if malformed."""
    canonical = parse_id(file_id, "file_id")
    if md5 is None:
        return canonical, None
    if not _HEX32.fullmatch(md5):
        raise InvalidEntity("md5", "expected 32 hex digits")
    return canonical, md5.lower()


async def _all(deferreds: list[Deferred[Any]]) -> list[Any]:
    """
    The results of ``deferreds``, already started together, or the first of their failures;
    either only once every one has settled, so no store call outlives the request asking it.
    """
    results = await DeferredList(deferreds, consumeErrors=True)
    for ok, result in results:
        if not ok:
            result.raiseException()
    return [result for _, result in results]


class _Serialised:
    """
    One holder at a time per key, waiters served in arrival order: a `DeferredLock` per key
    held or waited for (a waiter whose request is cancelled leaves the queue).
    """

    def __init__(self) -> None:
        self._locks: dict[str, DeferredLock] = {}

    @asynccontextmanager
    async def holding(self, key: str) -> AsyncIterator[None]:
        """Hold ``key`` for the body of the ``async with``."""
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = DeferredLock()
        await lock.acquire()
        try:
            yield
        finally:
            lock.release()
            # Releasing can run the next holder to its end at once, which removes the lock.
            if not lock.locked and not lock.waiting and self._locks.get(key) is lock:
                del self._locks[key]


class _UploadReceiver:
    """Streams the bodies of ``POST {prefix}/import/data/...`` into `UploadBody` sinks."""

    def __init__(self, api: ImportAPI, prefix: str) -> None:
        self._api = api
        self._prefix = [s.encode("utf-8") for s in prefix.split("/") if s]

    def sink_for(self, request: Request, method: bytes, path: bytes,
                 length: Optional[int]) -> Optional[UploadBody]:
        if method != b"POST":
            return None
        segments = split_path(path)
        if segments[: len(self._prefix)] != self._prefix:
            return None
        rest = segments[len(self._prefix):]
        if rest[:2] != [b"import", b"data"] or len(rest) not in (3, 4):
            return None
        ids = [segment.decode("latin-1") for segment in rest[2:]]
        try:
            _upload_ids(ids[0], ids[1] if len(ids) == 2 else None)
            _named_entity(request)
        except InvalidEntity:
            return self._api._upload_body(request, length, accept=False)
        has_credentials = (request.getHeader(b"authorization") or b"").lower().startswith(
            b"basic ")
        body = self._api._upload_body(request, length, accept=has_credentials,
                                      producer=body_producer(request))
        if has_credentials:
            body.check_authorization(Deferred.fromCoroutine(self._api._authorize(request)))
        return body


class ImportAPI:
    """
    ``POST /import`` and ``POST /import/data/{file_id}/{md5}`` over ``store``, checking
    credentials with ``authenticator``; uploads larger than ``max_upload_bytes`` are refused
    (413) and at most ``cache_size`` entities received in full are held for ``cached_entity``.
    """

    app = Klein()
    install_error_handlers(app)

    def __init__(self, store: IMeteorStore, authenticator: Authenticator, clock: IReactorTime,
                 *, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
                 cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self._store = store
        self._authenticator = authenticator
        self._clock = clock
        self._max_upload_bytes = max_upload_bytes
        self.cache = EntityCache(cache_size)
        self._serialised = _Serialised()

    def body_receiver(self, prefix: str) -> _UploadReceiver:
        """The receiver that streams this API's uploads, for a site mounted under ``prefix``."""
        return _UploadReceiver(self, prefix)

    async def _authorize(self, request: IRequest) -> User:
        return await self._authenticator.require(request, IMPORT_ROLE)

    def _upload_body(self, request: IRequest, length: Optional[int], accept: bool,
                     producer: Optional[IPushProducer] = None) -> UploadBody:
        open_upload = partial(self._store.file_store.open_upload, self._max_upload_bytes)
        if producer is not None:
            open_upload = partial(open_upload, producer=producer)
        return UploadBody(open_upload, request.requestHeaders, length, self._max_upload_bytes,
                          accept=accept)

    async def _file_stored(self, file_id: str) -> bool:
        """Whether ``file_id`` has a record or bytes here (both asked at once)."""
        record, data = await _all([self._store.has_file_id(file_id),
                                   self._store.file_store.exists(file_id)])
        return record or data

    # POST /import

    @app.route("/import", methods=["POST"])
    async def import_message(self, request: IRequest) -> bytes:
        """Answer one import message with the next step of the protocol."""
        user = await self._authorize(request)
        message = parse_message(read_json_body(request))
        reply = await self.answer(message, user.user_id)
        return write_json(request, 200, reply.to_dict())

    async def answer(self, message: Message, user_id: str) -> Reply:
        """The reply to a parsed message (see ``parse_message``) from ``user_id``."""
        if isinstance(message, StatusMessage):
            return await self._import_status(message, user_id)
        if isinstance(message, EntityMessage):
            self.cache.put(message.entity)
            return await self._answer_entity(message.entity, user_id)
        assert isinstance(message, CachedEntityReference)
        entity = self.cache.get(message.entity_id)
        if entity is not None:
            return await self._answer_entity(entity, user_id)
        if (await self._store.has_event_id(message.entity_id)
                or await self._store.has_file_id(message.entity_id)):
            return Reply.complete()
        return Reply.continue_nocache()

    async def _import_status(self, message: StatusMessage, user_id: str) -> Reply:
        status = message.status
        async with self._serialised.holding(status.status_id):
            if not await self._store.has_status_id(status.status_id):
                await self._store.import_camera_status(status, user_id)
        return Reply.continue_()

    async def _answer_entity(self, entity: Entity, user_id: str) -> Reply:
        """
        The reply to ``entity``: the holdings remembered for it are trusted if they say it can
        be stored, and the store is asked otherwise.
        """
        key = entity_id(entity)
        async with self._serialised.holding(key):
            held = self.cache.take_holdings(key, self._clock.seconds())
            decision = decide(entity, held) if held is not None else None
            if not isinstance(decision, ImportNow):
                asked_at = self._clock.seconds()
                held = await self._holdings(entity)
                decision = decide(entity, held)
                if not isinstance(decision, ImportNow):
                    self.cache.note_holdings(key, held, asked_at)
            if isinstance(decision, ImportNow):
                decision = await self._import_entity(entity, user_id)
        if decision.state == "complete":
            self.cache.discard(key)
        return decision

    async def _holdings(self, entity: Entity) -> Holdings:
        """
        What the store holds of what ``entity`` needs: everything that could matter is asked
        at once, then only what ``decide`` would have asked for in turn is kept.
        """
        store = self._store
        file_ids = file_ids_of(entity)
        candidate_statuses = wanted_status_ids(entity, ())
        own_events = [entity.event_id] if isinstance(entity, Event) else []
        (events, stored_files, known_statuses), with_bytes = await _all([
            store.stored_ids(own_events, file_ids, candidate_statuses),
            store.file_store.existing(file_ids),
        ])
        if (entity.event_id in events if isinstance(entity, Event)
                else entity.file_id in stored_files):
            return Holdings(stored=True)
        records = frozenset([f for f in file_ids if f in stored_files])
        wanted = wanted_status_ids(entity, records)
        statuses = frozenset([s for s in wanted if s in known_statuses])
        file_bytes: frozenset[str] = frozenset()
        if statuses.issuperset(wanted):
            file_bytes = frozenset([f for f in pending_file_ids(entity, records)
                                    if f in with_bytes])
        return Holdings(stored=False, statuses=statuses, file_records=records,
                        file_bytes=file_bytes)

    async def _import_entity(self, entity: Entity, user_id: str) -> Reply:
        try:
            if isinstance(entity, Event):
                await self._store.import_event(entity, user_id)
            else:
                await self._store.import_file_record(entity, user_id)
        except (ConstraintViolation, NoCameraStatus) as e:
            log.warn("Import of {entity_id} refused by the store: {reason}",
                     entity_id=entity_id(entity), reason=str(e))
            return Reply.failed(f"The entity cannot be stored: {e}")
        return Reply.complete()

    # POST /import/data/{file_id}/{md5}

    @app.route("/import/data/<string:file_id>/<string:md5>", methods=["POST"])
    async def import_file_data(self, request: IRequest, file_id: str, md5: str) -> bytes:
        """Store the bytes of a file once they match their md5."""
        return await self._receive_file_data(request, file_id, md5)

    @app.route("/import/data/<string:file_id>", methods=["POST"])
    async def import_file_data_without_md5(self, request: IRequest, file_id: str) -> bytes:
        """Store the bytes of a file once they match the md5 of its record held here."""
        return await self._receive_file_data(request, file_id, None)

    async def _receive_file_data(self, request: IRequest, file_id: str,
                                 md5: Optional[str]) -> bytes:
        body = getattr(request, "body_sink", None)
        if not isinstance(body, UploadBody):
            body = self._upload_body(request, _content_length(request), accept=True)
            body.feed(request.content)
        try:
            if body.authorization is not None:
                user = await body.authorization
            else:
                user = await self._authorize(request)
            file_id, md5 = _upload_ids(file_id, md5)
            named = _named_entity(request)
            status, reply = await self._store_upload(body, file_id, md5)
        finally:
            body.abort()
            await body.discarded()
        if named is not None and reply.state == "continue":
            reply = await self._store_named_entity(named, file_id, user.user_id)
        return write_json(request, status, reply.to_dict())

    async def _store_named_entity(self, key: str, file_id: str, user_id: str) -> Reply:
        """
        The reply to a stored upload of ``file_id`` naming entity ``key``: ``complete`` once
        that entity is stored, when the upload completed what it needed; ``continue`` otherwise.
        """
        entity = self.cache.get(key)
        if (entity is None or file_id not in file_ids_of(entity)
                or not self.cache.can_import(key, self._clock.seconds())):
            return Reply.continue_()
        reply = await self._answer_entity(entity, user_id)
        return Reply.complete(key) if reply.state == "complete" else Reply.continue_()

    async def _store_upload(self, body: UploadBody, file_id: str,
                            md5: Optional[str]) -> tuple[int, Reply]:
        if body.refusal is not None:
            raise APIError(body.refusal.status, body.refusal.message)
        record = self.cache.file_record(file_id)
        refusal = None
        if md5 is None and record is None:
            refusal = "checksum unknown: send the file's md5 in the URL"
        elif md5 is not None and record is not None and record.md5 != md5:
            refusal = "checksum mismatch"
        if refusal is not None:
            if await self._file_stored(file_id):
                return 200, Reply.continue_()
            return 422, Reply.failed(refusal)
        expected_md5 = md5 if md5 is not None else record.md5  # type: ignore[union-attr]
        try:
            await body.commit(file_id, expected_md5, record.sha256 if record else None)
        except ChecksumMismatch as e:
            log.info("Upload of {file_id} discarded: {reason}", file_id=file_id, reason=str(e))
            return 422, Reply.failed("checksum mismatch")
        except UploadRefused as e:
            raise APIError(e.status, e.message) from None
        except OSError:
            log.failure("Could not store the upload of {file_id}", file_id=file_id)
            raise APIError(503, "The file store cannot take the upload now") from None
        self.cache.bytes_stored(file_id)
        return 200, Reply.continue_()


def _content_length(request: IRequest) -> Optional[int]:
    value = request.getHeader(b"content-length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)

