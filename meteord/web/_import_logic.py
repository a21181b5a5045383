"""
The decisions of the import API (replication.md, "The importer") as pure code: parsing the
four import messages, the reply states, the bounded cache of entities received in full, and
what to answer for an entity given what the store already holds. ``meteord.web.importer``
gathers the facts from the store and carries out what is decided here.

Choices where the specification is silent:

- An entity message is answered with ``complete``, ``need_status``, ``need_file_data`` or
  ``failed``, never ``continue``: it is always possible to say exactly what is missing, which
  saves the exporter a round trip. ``continue`` answers the two sub-messages (a status, and file
  bytes), as in the original importer, whose exporter then sends ``cached_entity``; an upload
  naming the entity it completes is answered ``complete`` with that ``entity_id`` instead
  (see ``meteord.web.importer``).
- The statuses asked for, in order, are the entity's own and then those of each file not yet
  stored here (files already stored are linked and need nothing). One status is asked per
  reply (the reply has a single ``status_id``); files come only once every status is known.
- A file whose record is not stored here needs its bytes unless the file store already has
  them (uploaded earlier for this or another entity). ``file_id`` names the first missing file
  in the entity's order and ``file_ids`` every missing one.
- A ``cached_entity`` that misses the cache but names an event or file already stored is
  answered ``complete`` (the idempotency rule); any other miss is ``continue-nocache``.
- An entity is dropped from the cache once it is answered ``complete``.
- With each entity, the cache keeps what the store was found to hold for it and the uploads
  stored since, for its next answer within `HOLDINGS_SECONDS` (see ``meteord.web.importer``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterable, Mapping, Optional, Union

import attrs

from meteord.model import CameraStatus, Event, FileRecord, InvalidEntity, parse_id

__all__ = [
    "DEFAULT_CACHE_SIZE",
    "HOLDINGS_SECONDS",
    "MESSAGE_TYPES",
    "CachedEntityReference",
    "Entity",
    "EntityCache",
    "EntityMessage",
    "Holdings",
    "ImportNow",
    "Message",
    "Reply",
    "StatusMessage",
    "decide",
    "entity_id",
    "file_ids_of",
    "parse_message",
    "pending_file_ids",
    "wanted_status_ids",
]

DEFAULT_CACHE_SIZE = 1024
# How long what the store held for an entity is trusted for its next answer: long enough for
# its uploads, short enough that bytes removed meanwhile (``fsck --repair`` of orphans, a
# rollback) are hardly ever missed.
HOLDINGS_SECONDS = 60.0
MESSAGE_TYPES = ("cached_entity", "event", "file", "status")

Entity = Union[Event, FileRecord]


@attrs.frozen
class Reply:
    """One reply of the import protocol, as sent in a 200 (or 422) JSON body."""

    state: str
    status_id: Optional[str] = None
    file_id: Optional[str] = None
    file_ids: tuple[str, ...] = ()
    message: Optional[str] = None
    entity_id: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        """The wire form; absent values are omitted."""
        body: dict[str, Any] = {"state": self.state}
        if self.status_id is not None:
            body["status_id"] = self.status_id
        if self.file_id is not None:
            body["file_id"] = self.file_id
            body["file_ids"] = list(self.file_ids)
        if self.message is not None:
            body["message"] = self.message
        if self.entity_id is not None:
            body["entity_id"] = self.entity_id
        return body

    @classmethod
    def complete(cls, entity_id: Optional[str] = None) -> Reply:
        """Stored, or already there; ``entity_id`` says which, when the message did not."""
        return cls("complete", entity_id=entity_id)

    @classmethod
    def continue_(cls) -> Reply:
        """Partial progress: send ``cached_entity`` (or the entity) next."""
        return cls("continue")

    @classmethod
    def continue_nocache(cls) -> Reply:
        """The entity is not held here: send it in full."""
        return cls("continue-nocache")

    @classmethod
    def need_status(cls, status_id: str) -> Reply:
        """The camera status ``status_id`` is unknown here."""
        return cls("need_status", status_id=status_id)

    @classmethod
    def need_file_data(cls, file_ids: Iterable[str]) -> Reply:
        """The bytes of these files (at least one) are missing here."""
        ids = tuple(file_ids)
        return cls("need_file_data", file_id=ids[0], file_ids=ids)

    @classmethod
    def failed(cls, message: str) -> Reply:
        """This entity (or these bytes) cannot be imported."""
        return cls("failed", message=message)


@attrs.frozen
class EntityMessage:
    """``{"type": "event"|"file", ...}``: an entity sent in full."""

    kind: str
    entity: Entity

    @property
    def entity_id(self) -> str:
        """The event_id or file_id."""
        return entity_id(self.entity)


@attrs.frozen
class StatusMessage:
    """``{"type": "status", "status": ...}``: a camera status the importer asked for."""

    status: CameraStatus


@attrs.frozen
class CachedEntityReference:
    """``{"type": "cached_entity", "cached_entity_id": ...}``: the entity sent before."""

    entity_id: str


Message = Union[EntityMessage, StatusMessage, CachedEntityReference]


@attrs.frozen
class ImportNow:
    """Everything the entity needs is here: store it (and answer ``complete``)."""

    entity: Entity


def entity_id(entity: Entity) -> str:
    """The public id of an event or file record."""
    return entity.event_id if isinstance(entity, Event) else entity.file_id


def _field(message: Mapping[str, Any], key: str) -> Any:
    value = message.get(key)
    if value is None:
        raise InvalidEntity(key, "is required")
    return value


def _parse_within(key: str, parse: Any, value: Any) -> Any:
    try:
        return parse(value)
    except InvalidEntity as e:
        raise e.within(key) from None


def parse_message(message: object) -> Message:
    """
    Parse one decoded JSON import message; raise InvalidEntity naming the key at fault
    (``type``, ``event.files[0].md5``, ``cached_entity_id``...) for anything malformed.
    """
    if not isinstance(message, Mapping):
        raise InvalidEntity("", "an import message is a JSON object")
    kind = _field(message, "type")
    if kind not in MESSAGE_TYPES:
        raise InvalidEntity("type", f"must be one of {', '.join(MESSAGE_TYPES)}")
    if kind == "cached_entity":
        return CachedEntityReference(parse_id(_field(message, "cached_entity_id"),
                                              "cached_entity_id"))
    body = _field(message, kind)
    if kind == "status":
        return StatusMessage(_parse_within("status", CameraStatus.from_dict, body))
    parse = Event.from_dict if kind == "event" else FileRecord.from_dict
    return EntityMessage(kind, _parse_within(kind, parse, body))


class EntityCache:
    """
    The entities received in full, most recently used last, at most ``size`` of them, so that
    ``cached_entity`` can be resolved and uploads checked against their file records; with
    each, what the store was last found to hold for it, plus the bytes stored since (facts
    about ids, so they stay when the entity is sent again), for one answer within
    `HOLDINGS_SECONDS`. The entities holding each file id are indexed, so an upload of a file
    that one held entity has costs the same however full the cache is (a file several hold
    is looked up in their order of use).
    """

    def __init__(self, size: int = DEFAULT_CACHE_SIZE) -> None:
        if size < 1:
            raise ValueError("the entity cache holds at least one entity")
        self.size = size
        self._entities: OrderedDict[str, Entity] = OrderedDict()
        # Per held entity: what the store holds for it, and when (seconds) that was asked.
        self._holdings: dict[str, tuple[Holdings, float]] = {}
        self._holders: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._entities)

    def put(self, entity: Entity) -> None:
        """Remember an entity received in full, evicting the least recently used."""
        key = entity_id(entity)
        self._forget(key)
        self._entities[key] = entity
        for file_id in file_ids_of(entity):
            self._holders.setdefault(file_id, set()).add(key)
        while len(self._entities) > self.size:
            self.discard(next(iter(self._entities)))

    def _forget(self, key: str) -> None:
        """Drop the entity (not its holdings) and its place in the index of file ids."""
        entity = self._entities.pop(key, None)
        if entity is None:
            return
        for file_id in file_ids_of(entity):
            holders = self._holders[file_id]
            holders.discard(key)
            if not holders:
                del self._holders[file_id]

    def note_holdings(self, key: str, holdings: Holdings, now: float) -> None:
        """Remember what the store holds for a held entity, as asked at ``now`` (seconds)."""
        if key in self._entities:
            self._holdings[key] = (holdings, now)

    def take_holdings(self, key: str, now: float) -> Optional[Holdings]:
        """
        What the store held for that entity when last asked, with the bytes stored since, if
        asked less than `HOLDINGS_SECONDS` before ``now``; forgotten either way, so they serve
        one answer at most.
        """
        holdings = self._fresh_holdings(key, now)
        self._holdings.pop(key, None)
        return holdings

    def can_import(self, key: str, now: float) -> bool:
        """
        Whether the holdings remembered for the held entity ``key`` (asked less than
        `HOLDINGS_SECONDS` before ``now``, with the bytes stored since) say it can be stored;
        they are kept either way.
        """
        entity = self._entities.get(key)
        holdings = self._fresh_holdings(key, now)
        if entity is None or holdings is None:
            return False
        return isinstance(decide(entity, holdings), ImportNow)

    def _fresh_holdings(self, key: str, now: float) -> Optional[Holdings]:
        """The holdings remembered for ``key``, if asked less than `HOLDINGS_SECONDS` ago."""
        held = self._holdings.get(key)
        if held is None or now - held[1] >= HOLDINGS_SECONDS:
            return None
        return held[0]

    def bytes_stored(self, file_id: str) -> None:
        """The file store now has the bytes of ``file_id``: every held entity's holdings say so."""
        for key in self._holders.get(file_id, ()):
            held = self._holdings.get(key)
            if held is not None and file_id not in held[0].file_bytes:
                holdings, noted = held
                self._holdings[key] = (
                    attrs.evolve(holdings, file_bytes=holdings.file_bytes | {file_id}), noted)

    def get(self, key: str) -> Optional[Entity]:
        """The entity with that id, marked as just used; None when not held."""
        entity = self._entities.get(key)
        if entity is not None:
            self._entities.move_to_end(key)
        return entity

    def discard(self, key: str) -> None:
        """Forget an entity (once it is stored)."""
        self._forget(key)
        self._holdings.pop(key, None)

    def file_record(self, file_id: str) -> Optional[FileRecord]:
        """The record of a file as the most recently received entity holding it gives it."""
        holders = self._holders.get(file_id)
        if not holders:
            return None
        key = next(iter(holders)) if len(holders) == 1 else next(
            key for key in reversed(self._entities) if key in holders)
        return next(r for r in _files_of(self._entities[key]) if r.file_id == file_id)


def _files_of(entity: Entity) -> tuple[FileRecord, ...]:
    return entity.files if isinstance(entity, Event) else (entity,)


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def file_ids_of(entity: Entity) -> list[str]:
    """The ids of the entity's files (the file itself for a file record), in order."""
    return _unique(f.file_id for f in _files_of(entity))


def pending_file_ids(entity: Entity, stored_records: Iterable[str]) -> list[str]:
    """The entity's files whose records are not stored here yet, in order."""
    stored = set(stored_records)
    return [file_id for file_id in file_ids_of(entity) if file_id not in stored]


def wanted_status_ids(entity: Entity, stored_records: Iterable[str]) -> list[str]:
    """
    The status ids the entity needs here, in the order they are asked for: its own, then
    those of its files whose records are not stored yet (stored ones are merely linked).
    """
    stored = set(stored_records)
    return _unique([entity.status_id,
                    *(f.status_id for f in _files_of(entity) if f.file_id not in stored)])


@attrs.frozen(kw_only=True)
class Holdings:
    """
    What the store holds for one entity: whether the entity itself is stored, the status ids
    it knows, the file ids whose records are stored, and those whose bytes are in the file store.
    """

    stored: bool
    statuses: frozenset[str] = frozenset()
    file_records: frozenset[str] = frozenset()
    file_bytes: frozenset[str] = frozenset()


def decide(entity: Entity, holdings: Holdings) -> Union[Reply, ImportNow]:
    """The answer to a full entity (or a resolved ``cached_entity``) given the holdings."""
    if holdings.stored:
        return Reply.complete()
    for status_id in wanted_status_ids(entity, holdings.file_records):
        if status_id not in holdings.statuses:
            return Reply.need_status(status_id)
    missing = [file_id for file_id in pending_file_ids(entity, holdings.file_records)
               if file_id not in holdings.file_bytes]
    if missing:
        return Reply.need_file_data(missing)
    return ImportNow(entity)
