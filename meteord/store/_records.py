"""
The records half of the SQL store: files, events, camera statuses, high-water marks,
searches, imports from other nodes and bulk loading, as `RecordOperations`, a mixin of
`SQLStore`. Each public method validates its arguments, does any blocking work (moving and
hashing files) through the file store's threads, and runs its database work as generator
operations, each one transaction (one per method, but for ``register_file``: a check, then
the insert).

Choices where the specification is silent:

- Ids given to ``get_*``, ``has_*`` and ``file_path_for_id`` may be in any form
  `meteord.model.parse_id` accepts; anything else fails with `InvalidEntity` (the HTTP layer
  answers 400 before it gets here). Wrongly typed entities, times and camera ids fail with
  `InvalidEntity` too, before anything is stored or moved.
- ``update_camera_status`` stores a copy of the given status under ``camera_id`` (default: the
  node's own id, as the interface says, whatever camera the given status names) with a new
  ``status_id``, valid from ``time`` (default now); the returned status carries ``valid_to``
  when a later status of that camera already exists.
- ``valid_to`` of a status is the ``valid_from`` of the next one of its camera in the order
  (``valid_from``, creation); of two statuses with the same ``valid_from`` the older one ends
  where it starts.
- ``register_event`` fails with `EntityNotFound` if a given file record is not stored; the
  event's files are the stored records (as the store has them), in the order given. A file may
  be given twice. A file's camera need not be the event's.
- Rolling back deletes, for the camera, files after the mark even when an earlier event links
  them (that event then loses those files), events after it, statuses valid from after it,
  and the export task rows of the deleted files and events. Setting a mark where none exists
  stores it and deletes nothing, whatever the flags.
- Imports do not require the status of an imported file or event to be stored (the importer
  asks for it first) nor check the sender's timeline; an imported file's bytes are the caller's
  business. An event import stores its new file records (inserted in file id order, so that
  concurrent imports sharing files cannot deadlock) and links existing ones. Imported rows
  carry ``imported_by`` and ``imported_at``.
- ``get_event`` and ``get_event_wire`` asked for while two such reads are under way wait for
  one to end, then are read together, up to 32 ids a statement (`_batch.BatchedReads`): each
  reader sees at least everything committed before it asked.
- ``clear_database`` empties every table of the schema except ``schema_version`` (whatever
  other migrations add), then removes every file from the file store.
- ``bulk_insert`` is idempotent: statuses, files and events whose id is already stored are
  skipped (and their meta and links with them); it is one transaction per call.
"""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from collections.abc import Coroutine, Iterable, Sequence
from datetime import datetime
from typing import Any, Callable, Optional, ParamSpec, TypeVar

import attrs
from twisted.internet.defer import Deferred, fail
from twisted.python.filepath import FilePath

from meteord.errors import EntityNotFound, NoCameraStatus
from meteord.model import (
    CameraStatus,
    Event,
    EventSearch,
    FileRecord,
    FileRecordSearch,
    InvalidEntity,
    Location,
    Meta,
    NSString,
    Orientation,
    Point,
    datetime_to_ms,
    ms_to_datetime,
    new_id,
    parse_camera_id,
    parse_id,
)
from meteord.store import _search
from meteord.store._batch import KEYS_A_RUN, BatchedReads
from meteord.store._sql import Operation, Query, Result, read_only

P = ParamSpec("P")
T = TypeVar("T")

# Ids per IN (...) list and rows per multi-row INSERT: small enough for any SQLite build
# (at least 32766 variables since 3.32) and for one PostgreSQL statement.
_IN_CHUNK = 500
_MAX_PARAMS = 30000
_MAX_ROWS = 1000
_PLACEHOLDER_ID = "0" * 32

_STATUS_COLUMNS = (
    "status_id", "camera_id", "valid_from", "lens", "sensor", "inst_url", "inst_name",
    "software_version", "lat", "long", "gps", "location_error", "alt", "az",
    "orientation_error", "rot", "width", "regions", "imported_by", "imported_at",
)
_STATUS_SELECT = (
    "s.status_id, s.camera_id, s.valid_from, s.lens, s.sensor, s.inst_url, s.inst_name, "
    "s.software_version, s.lat, s.long, s.gps, s.location_error, s.alt, s.az, "
    "s.orientation_error, s.rot, s.width, s.regions, "
    "(SELECT n.valid_from FROM camera_status n WHERE n.camera_id = s.camera_id "
    "AND (n.valid_from > s.valid_from OR (n.valid_from = s.valid_from AND n.id > s.id)) "
    "ORDER BY n.valid_from, n.id LIMIT 1)"
)
_FILE_COLUMNS = (
    "file_id", "camera_id", "status_id", "mime_type", "file_name", "semantic_type",
    "file_time", "file_size", "md5", "sha256", "imported_by", "imported_at",
)
_FILE_SELECT = (
    "f.id, f.file_id, f.camera_id, f.status_id, f.mime_type, f.file_name, f.semantic_type, "
    "f.file_time, f.file_size, f.md5, f.sha256"
)
_EVENT_COLUMNS = (
    "event_id", "camera_id", "event_time", "event_type", "status_id", "imported_by",
    "imported_at",
)
_EVENT_SELECT = "e.id, e.event_id, e.camera_id, e.event_time, e.event_type, e.status_id"
_META_COLUMNS = ("position", "key", "type", "string_value", "float_value", "date_value")


def _deferred(method: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Deferred[T]]:
    """Make a coroutine method return a Deferred, as every IMeteorStore method does."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Deferred[T]:
        return Deferred.fromCoroutine(method(*args, **kwargs))

    return wrapper


# Argument checks


def _time_ms(key: str, value: object) -> int:
    """The ms of an aware datetime argument; InvalidEntity naming ``key`` otherwise."""
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise InvalidEntity(key, "expected a timezone-aware datetime")
    return datetime_to_ms(value)


def _require(key: str, value: object, cls: type) -> None:
    if not isinstance(value, cls):
        raise InvalidEntity(key, f"expected a {cls.__name__}, not {type(value).__name__}")


def _sequence(key: str, value: object) -> tuple[Any, ...]:
    """A list or tuple argument as a tuple; InvalidEntity naming ``key`` otherwise."""
    if not isinstance(value, (list, tuple)):
        raise InvalidEntity(key, f"expected a list, not {type(value).__name__}")
    return tuple(value)


def _user_id(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidEntity("user_id", "expected a non-empty string")
    return value


# Small SQL helpers


def _marks(count: int) -> str:
    return ", ".join("?" * count)


def _chunks(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _insert_rows(
    table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], suffix: str = ""
) -> Operation[Result]:
    """
    Insert rows with multi-row INSERTs (few statements, so few round trips on PostgreSQL);
    ``suffix`` is appended to each (``ON CONFLICT ...``, ``RETURNING ...``). Returns the rows
    the statements returned.
    """
    returned = Result()
    row_marks = f"({_marks(len(columns))})"
    per_statement = max(1, min(_MAX_ROWS, _MAX_PARAMS // len(columns)))
    for chunk in _chunks(rows, per_statement):
        sql = (
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
            f"{', '.join([row_marks] * len(chunk))}{suffix}"
        )
        result = yield Query(sql, [value for row in chunk for value in row])
        returned.extend(result)
    return returned


def _select_in(sql: str, ids: Sequence[Any]) -> Operation[Result]:
    """Run ``sql`` (with ``{ids}`` where the IN list goes) for ids in chunks; all rows."""
    rows = Result()
    for chunk in _chunks(ids, _IN_CHUNK):
        rows.extend((yield Query(sql.format(ids=_marks(len(chunk))), chunk)))
    return rows


# Rows and entities


@functools.lru_cache(maxsize=4096)
def _nsstring(text: str) -> NSString:
    """A stored namespaced string; they repeat (types, meta keys), so each is parsed once."""
    return NSString.parse(text)


_new = object.__new__
_set = object.__setattr__
_FIELD_COUNTS: dict[type, int] = {}


def _stored(cls: type[T], **values: Any) -> T:
    """
    An entity rebuilt from values this store wrote, without running its validators again:
    the entity's constructor checked and normalised them before they were stored, and checking
    them again cost most of the time of a search. Every field must be given, in the form the
    constructor would have made (tuples, aware UTC datetimes, NSStrings, floats).
    """
    entity = _new(cls)
    for name, value in values.items():
        _set(entity, name, value)
    count = _FIELD_COUNTS.get(cls)
    if count is None:
        count = _FIELD_COUNTS[cls] = len(attrs.fields(cls))
    if len(values) != count:
        raise TypeError(f"{cls.__name__} has {count} fields, {len(values)} given")
    return entity


def _meta_row(position: int, meta: Meta) -> tuple[Any, ...]:
    value = meta.value
    return (
        position,
        str(meta.key),
        meta.type,
        value if meta.type == "string" else None,
        float(value) if meta.type == "number" else None,
        datetime_to_ms(value) if meta.type == "date" else None,
    )


def _meta_from_row(key: str, meta_type: str, string: Any, number: Any, date: Any) -> Meta:
    if meta_type == "string":
        value: Any = string
    elif meta_type == "number":
        value = float(number)
    else:
        value = ms_to_datetime(int(date))
    return _stored(Meta, key=_nsstring(key), type=meta_type, value=value)


def _status_values(
    status: CameraStatus, imported_by: Optional[str], imported_at: Optional[int]
) -> tuple[Any, ...]:
    regions = [[[point.x, point.y] for point in polygon] for polygon in status.regions]
    return (
        status.status_id, status.camera_id, datetime_to_ms(status.valid_from), status.lens,
        status.sensor, status.inst_url, status.inst_name, status.software_version,
        float(status.location.lat), float(status.location.long), status.location.gps,
        float(status.location.error), float(status.orientation.alt),
        float(status.orientation.az), float(status.orientation.error),
        float(status.orientation.rot), float(status.orientation.width),
        json.dumps(regions, separators=(",", ":")), imported_by, imported_at,
    )


def _status_from_row(row: Sequence[Any]) -> CameraStatus:
    (status_id, camera_id, valid_from, lens, sensor, inst_url, inst_name, software_version,
     lat, long, gps, location_error, alt, az, orientation_error, rot, width, regions,
     valid_to) = row
    return CameraStatus(
        camera_id=camera_id,
        status_id=status_id,
        lens=lens,
        sensor=sensor,
        inst_url=inst_url,
        inst_name=inst_name,
        software_version=int(software_version),
        valid_from=ms_to_datetime(int(valid_from)),
        valid_to=None if valid_to is None else ms_to_datetime(int(valid_to)),
        location=Location(lat=float(lat), long=float(long), gps=bool(gps),
                          error=float(location_error)),
        orientation=Orientation(alt=float(alt), az=float(az), error=float(orientation_error),
                                rot=float(rot), width=float(width)),
        regions=tuple(
            tuple(Point(x=x, y=y) for x, y in polygon) for polygon in json.loads(regions)
        ),
    )


def _file_values(
    record: FileRecord, imported_by: Optional[str], imported_at: Optional[int]
) -> tuple[Any, ...]:
    return (
        record.file_id, record.camera_id, record.status_id, record.mime_type, record.file_name,
        str(record.semantic_type), datetime_to_ms(record.file_time), record.file_size,
        record.md5, record.sha256, imported_by, imported_at,
    )


def _file_from_row(row: Sequence[Any], meta: Sequence[Meta]) -> FileRecord:
    """A FileRecord from the columns of ``_FILE_SELECT`` after the primary key."""
    (file_id, camera_id, status_id, mime_type, file_name, semantic_type, file_time,
     file_size, md5, sha256) = row
    return _stored(
        FileRecord,
        file_id=file_id,
        camera_id=camera_id,
        status_id=status_id,
        mime_type=mime_type,
        file_name=file_name,
        semantic_type=_nsstring(semantic_type),
        file_time=ms_to_datetime(int(file_time)),
        file_size=int(file_size),
        md5=md5,
        sha256=sha256,
        meta=tuple(meta),
    )


# The wire form straight from rows: what ``to_dict`` of the entity the row builds gives, without
# building the entity (the HTTP API's searches and reads; the conformance suite checks they
# agree for every search of its data set).


@functools.lru_cache(maxsize=4096)
def _nsstring_text(text: str) -> str:
    """A stored namespaced string as the entity writes it."""
    return str(_nsstring(text))


def _meta_wire(key: str, meta_type: str, string: Any, number: Any, date: Any) -> dict[str, Any]:
    if meta_type == "string":
        value: Any = string
    elif meta_type == "number":
        value = float(number)
    else:
        value = int(date)
    return {"type": meta_type, "key": _nsstring_text(key), "value": value}


def _file_wire(row: Sequence[Any], meta: list[dict[str, Any]]) -> dict[str, Any]:
    """``FileRecord.to_dict`` from the columns of ``_FILE_SELECT`` after the primary key."""
    (file_id, camera_id, status_id, mime_type, file_name, semantic_type, file_time,
     file_size, md5, sha256) = row
    d: dict[str, Any] = {"file_id": file_id, "camera_id": camera_id, "mime_type": mime_type}
    if file_name is not None:
        d["file_name"] = file_name
    d["semantic_type"] = _nsstring_text(semantic_type)
    d["file_time"] = int(file_time)
    d["file_size"] = int(file_size)
    d["status_id"] = status_id
    d["md5"] = md5
    if sha256 is not None:
        d["sha256"] = sha256
    d["meta"] = meta
    return d


def _event_wire(event_id: str, camera_id: str, event_time: Any, event_type: str,
                status_id: str, files: list[Any], meta: list[Any]) -> dict[str, Any]:
    return {"event_id": event_id, "camera_id": camera_id, "event_time": int(event_time),
            "event_type": _nsstring_text(event_type), "status_id": status_id,
            "files": files, "meta": meta}


def _event_entity(event_id: str, camera_id: str, event_time: Any, event_type: str,
                  status_id: str, files: list[Any], meta: list[Any]) -> Event:
    return _stored(Event, event_id=event_id, camera_id=camera_id,
                   event_time=ms_to_datetime(int(event_time)),
                   event_type=_nsstring(event_type), status_id=status_id,
                   files=tuple(files), meta=tuple(meta))


@attrs.frozen
class _Builder:
    """What ``_read_events`` makes of its rows: entities, or their wire form."""

    meta: Callable[..., Any]
    file: Callable[[Sequence[Any], list[Any]], Any]
    event: Callable[..., Any]


_ENTITIES = _Builder(_meta_from_row, _file_from_row, _event_entity)
_WIRE = _Builder(_meta_wire, _file_wire, _event_wire)


def _event_values(
    event: Event, imported_by: Optional[str], imported_at: Optional[int]
) -> tuple[Any, ...]:
    return (
        event.event_id, event.camera_id, datetime_to_ms(event.event_time),
        str(event.event_type), event.status_id, imported_by, imported_at,
    )


# Reading operations


def _file_metas(file_pks: Sequence[int]) -> Operation[dict[int, list[Meta]]]:
    """The meta of files by primary key, in their stored order."""
    rows = yield from _select_in(
        "SELECT file_pk, key, type, string_value, float_value, date_value FROM file_meta "
        "WHERE file_pk IN ({ids}) ORDER BY file_pk, position",
        list(dict.fromkeys(file_pks)),
    )
    metas: dict[int, list[Meta]] = defaultdict(list)
    for file_pk, key, meta_type, string, number, date in rows:
        metas[file_pk].append(_meta_from_row(key, meta_type, string, number, date))
    return metas


def _files_by_pk(pks: Sequence[int]) -> Operation[dict[int, FileRecord]]:
    """Stored file records by primary key, with their meta."""
    rows = yield from _select_in(f"SELECT {_FILE_SELECT} FROM files f WHERE f.id IN ({{ids}})",
                                 list(dict.fromkeys(pks)))
    metas = yield from _file_metas([row[0] for row in rows])
    return {row[0]: _file_from_row(row[1:], metas.get(row[0], ())) for row in rows}


def _files_from_rows(rows: Sequence[Sequence[Any]]) -> Operation[list[FileRecord]]:
    """File records from rows of ``_FILE_SELECT``, in the same order, with their meta."""
    if not rows:
        return []
    metas = yield from _file_metas([row[0] for row in rows])
    return [_file_from_row(row[1:], metas.get(row[0], ())) for row in rows]


# Events are read with everything behind them in one statement. The events come from a query
# named ``chosen`` in a WITH clause (one event by id, or one page of a search with the total
# count of its matches), and the statement returns rows of four kinds padded to the same
# columns and told apart by the first: an event, a link to a file (with the file's columns),
# a meta item of an event, a meta item of a linked file. The first branch gives every column
# its type, so that NULL padding resolves the same way on both databases.
_EVENT, _LINK, _EVENT_META, _FILE_META = range(4)
_DETAIL_COLUMNS = (
    ("kind", "BIGINT"), ("owner_pk", "BIGINT"), ("position", "BIGINT"), ("file_pk", "BIGINT"),
    ("file_id", "TEXT"), ("f_camera_id", "TEXT"), ("f_status_id", "TEXT"),
    ("mime_type", "TEXT"), ("file_name", "TEXT"), ("semantic_type", "TEXT"),
    ("file_time", "BIGINT"), ("file_size", "BIGINT"), ("md5", "TEXT"), ("sha256", "TEXT"),
    ("key", "TEXT"), ("type", "TEXT"), ("string_value", "TEXT"),
    ("float_value", "DOUBLE PRECISION"), ("date_value", "BIGINT"),
    ("event_id", "TEXT"), ("camera_id", "TEXT"), ("event_time", "BIGINT"),
    ("event_type", "TEXT"), ("status_id", "TEXT"), ("total", "BIGINT"),
)
_CHOSEN_COLUMNS = "id, event_id, camera_id, event_time, event_type, status_id, total"
_FILE_VALUES = dict(zip(
    [name for name, _ in _DETAIL_COLUMNS[3:14]],
    [column.strip() for column in _FILE_SELECT.split(",")],
))
_META_VALUES = {name: f"m.{name}" for name in
                ("position", "key", "type", "string_value", "float_value", "date_value")}


def _detail_branch(kind: int, values: dict[str, str], source: str, typed: bool = False) -> str:
    """One SELECT of the statement: ``values`` by column name, NULL elsewhere."""
    columns = [str(kind)]
    for name, sql_type in _DETAIL_COLUMNS[1:]:
        if name in values:
            columns.append(values[name])
        else:
            columns.append(f"CAST(NULL AS {sql_type})" if typed else "NULL")
    return f"SELECT {', '.join(columns)} {source}"


_EVENT_DETAILS = (
    "WITH chosen (" + _CHOSEN_COLUMNS + ") AS ({chosen}) "
    + _detail_branch(_EVENT, {
        "owner_pk": "c.id", "event_id": "c.event_id", "camera_id": "c.camera_id",
        "event_time": "c.event_time", "event_type": "c.event_type",
        "status_id": "c.status_id", "total": "c.total",
    }, "FROM chosen c", typed=True)
    + " UNION ALL "
    + _detail_branch(_LINK, {"owner_pk": "ef.event_pk", "position": "ef.position",
                             **_FILE_VALUES},
                     "FROM event_files ef JOIN files f ON f.id = ef.file_pk "
                     "WHERE ef.event_pk IN (SELECT id FROM chosen)")
    + " UNION ALL "
    + _detail_branch(_EVENT_META, {"owner_pk": "m.event_pk", **_META_VALUES},
                     "FROM event_meta m WHERE m.event_pk IN (SELECT id FROM chosen)")
    + " UNION ALL "
    + _detail_branch(_FILE_META, {"file_pk": "m.file_pk", **_META_VALUES},
                     "FROM file_meta m WHERE m.file_pk IN (SELECT l.file_pk FROM event_files l "
                     "WHERE l.event_pk IN (SELECT id FROM chosen))")
    + " ORDER BY 1, 22 DESC, 20 DESC"
)


def _read_events(chosen: str, params: Sequence[Any],
                 build: _Builder = _ENTITIES) -> Operation[tuple[list[Any], Any]]:
    """
    The events selected by the query ``chosen`` (columns ``_CHOSEN_COLUMNS``), in its order,
    with their files and the meta of both, as ``build`` makes them, and the ``total`` column of
    the first (None when none was selected): one statement.
    """
    rows = yield Query(_details_sql(chosen), params)
    events, total = _events_from_rows(rows, build)
    return list(events.values()), total


def _events_from_rows(rows: Sequence[Sequence[Any]],
                      build: _Builder) -> tuple[dict[str, Any], Any]:
    """
    The events of a statement's detail rows by event id, in the order of its event rows, and
    the total of the first.
    """
    chosen_rows = []
    links: dict[int, list[tuple[int, int]]] = defaultdict(list)
    file_rows: dict[int, Sequence[Any]] = {}
    event_metas: dict[int, list[tuple[int, Any]]] = defaultdict(list)
    file_metas: dict[int, list[tuple[int, Any]]] = defaultdict(list)
    for row in rows:
        kind, owner_pk, position, file_pk = row[:4]
        if kind == _EVENT:
            chosen_rows.append(row)
        elif kind == _LINK:
            links[owner_pk].append((position, file_pk))
            file_rows[file_pk] = row[4:14]
        else:
            meta = build.meta(*row[14:19])
            if kind == _EVENT_META:
                event_metas[owner_pk].append((position, meta))
            else:
                file_metas[file_pk].append((position, meta))
    files = {
        pk: build.file(row, [meta for _, meta in sorted(file_metas[pk], key=_first)])
        for pk, row in file_rows.items()
    }
    events = {
        event_id: build.event(event_id, camera_id, event_time, event_type, status_id,
                              [files[file_pk] for _, file_pk in sorted(links[pk], key=_first)],
                              [meta for _, meta in sorted(event_metas[pk], key=_first)])
        for _, pk, *_padding, event_id, camera_id, event_time, event_type, status_id, _total
        in chosen_rows
    }
    return events, (chosen_rows[0][-1] if chosen_rows else None)


@functools.lru_cache(maxsize=256)
def _details_sql(chosen: str) -> str:
    """The statement reading the events ``chosen`` selects (cached: one object per text)."""
    return _EVENT_DETAILS.format(chosen=chosen)


def _first(item: tuple[Any, ...]) -> Any:
    return item[0]


@read_only
def _get_file(file_id: str) -> Operation[Optional[FileRecord]]:
    rows = yield Query(f"SELECT {_FILE_SELECT} FROM files f WHERE f.file_id = ?", (file_id,))
    records = yield from _files_from_rows(rows)
    return records[0] if records else None


def entities_by_id(keys: Sequence[tuple[str, str]]) -> Operation[dict[tuple[str, str], Any]]:
    """
    The stored events and file records of ``(kind, public id)`` keys (kind ``event`` or
    ``file``), by key; events are read 32 to a statement, as the batched reads do, and file
    records all in one.
    """
    found: dict[tuple[str, str], Any] = {}
    event_ids = list(dict.fromkeys(entity_id for kind, entity_id in keys if kind == "event"))
    for chunk in _chunks(event_ids, KEYS_A_RUN):
        events = yield from _get_events(chunk, _ENTITIES)
        found.update((("event", event_id), event) for event_id, event in events.items())
    file_ids = list(dict.fromkeys(entity_id for kind, entity_id in keys if kind == "file"))
    rows = yield from _select_in(
        f"SELECT {_FILE_SELECT} FROM files f WHERE f.file_id IN ({{ids}})", file_ids)
    for record in (yield from _files_from_rows(rows)):
        found["file", record.file_id] = record
    return found


_BY_EVENT_IDS = "FROM events e {joins}WHERE e.event_id IN ({ids})"


@functools.lru_cache(maxsize=64)
def _events_by_ids_sql(count: int) -> str:
    """
    The detail rows of ``count`` events, each branch finding them by their indexed public ids
    (four times the ids as parameters): cheaper for the database than the general statement's
    CTE (about 15 % less of its time at 1M events), and no order is needed, as the grouping
    sorts files and meta by position. A file linked twice has its meta once, as in the general
    statement.
    """
    by_ids = _BY_EVENT_IDS.replace("{ids}", _marks(count))
    return " UNION ALL ".join((
        _detail_branch(_EVENT, {
            "owner_pk": "e.id", "event_id": "e.event_id", "camera_id": "e.camera_id",
            "event_time": "e.event_time", "event_type": "e.event_type",
            "status_id": "e.status_id",
        }, by_ids.format(joins=""), typed=True),
        _detail_branch(_LINK, {"owner_pk": "ef.event_pk", "position": "ef.position",
                               **_FILE_VALUES},
                       by_ids.format(joins="JOIN event_files ef ON ef.event_pk = e.id "
                                           "JOIN files f ON f.id = ef.file_pk ")),
        _detail_branch(_EVENT_META, {"owner_pk": "m.event_pk", **_META_VALUES},
                       by_ids.format(joins="JOIN event_meta m ON m.event_pk = e.id ")),
        _detail_branch(_FILE_META, {"file_pk": "m.file_pk", **_META_VALUES},
                       "FROM file_meta m WHERE m.file_pk IN (SELECT l.file_pk "
                       + by_ids.format(joins="JOIN event_files l ON l.event_pk = e.id ")
                       + ")"),
    ))


@read_only
def _get_events(event_ids: Sequence[str], build: _Builder) -> Operation[dict[str, Any]]:
    """The stored events of ``event_ids`` (distinct, checked ids) by id, as ``build`` makes them."""
    rows = yield Query(_events_by_ids_sql(len(event_ids)), list(event_ids) * 4)
    events, _ = _events_from_rows(rows, build)
    return events


@read_only
def _exists(table: str, column: str, value: str) -> Operation[bool]:
    rows = yield Query(f"SELECT 1 FROM {table} WHERE {column} = ?", (value,))
    return bool(rows)


@read_only
def _stored_ids(
    groups: Sequence[tuple[str, str, Sequence[str]]]
) -> Operation[tuple[frozenset[str], ...]]:
    """
    For each (table, id column, ids), the ids that have a row. As few ids as an import asks
    about go in one statement (a round trip saved per group on PostgreSQL); more go a
    group and a chunk at a time.
    """
    groups = [(table, column, list(dict.fromkeys(ids))) for table, column, ids in groups]
    found: list[set[str]] = [set() for _ in groups]
    if sum(len(ids) for _, _, ids in groups) <= _IN_CHUNK:
        branches, params = [], []
        for index, (table, column, ids) in enumerate(groups):
            if ids:
                branches.append(f"SELECT {index}, {column} FROM {table} "
                                f"WHERE {column} IN ({_marks(len(ids))})")
                params.extend(ids)
        rows = (yield Query(" UNION ALL ".join(branches), params)) if branches else ()
        for index, value in rows:
            found[int(index)].add(value)
    else:
        for index, (table, column, ids) in enumerate(groups):
            rows = yield from _select_in(
                f"SELECT {column} FROM {table} WHERE {column} IN ({{ids}})", ids)
            found[index].update(row[0] for row in rows)
    return tuple(frozenset(ids) for ids in found)


def _search_page(search: Any, columns: str) -> Operation[tuple[list[Sequence[Any]], int]]:
    """One page of matching rows (without the count column) and the total count."""
    sql, params = _search.page_query(search, columns)
    rows = yield Query(sql, params)
    if rows:
        return [row[:-1] for row in rows], int(rows[0][-1])
    return [], (yield from _count_without_page(search))


def _count_without_page(search: EventSearch | FileRecordSearch) -> Operation[int]:
    """The count of a search whose page came back empty (skip past the end, or no match)."""
    count = _search.empty_page_count(search)
    if count is None:
        sql, params = _search.count_query(search)
        count = int((yield Query(sql, params))[0][0])
    return count


@read_only
def _search_events(search: EventSearch,
                   build: _Builder = _ENTITIES) -> Operation[tuple[list[Any], int]]:
    events, count = yield from _read_events(*_search.page_query(search, _EVENT_SELECT), build)
    if events:
        return events, int(count)
    return [], (yield from _count_without_page(search))


@read_only
def _search_files(search: FileRecordSearch) -> Operation[tuple[list[FileRecord], int]]:
    rows, count = yield from _search_page(search, _FILE_SELECT)
    records = yield from _files_from_rows(rows)
    return records, count


# Statuses


@read_only
def _status_id_in_force(camera_id: str, at_ms: int) -> Operation[Optional[str]]:
    """The status in force for the camera at that time: latest valid_from, then newest."""
    rows = yield Query(
        "SELECT status_id FROM camera_status WHERE camera_id = ? AND valid_from <= ? "
        "ORDER BY valid_from DESC, id DESC LIMIT 1",
        (camera_id, at_ms),
    )
    return rows[0][0] if rows else None


@read_only
def _status_by_id(status_id: str) -> Operation[Optional[CameraStatus]]:
    rows = yield Query(
        f"SELECT {_STATUS_SELECT} FROM camera_status s WHERE s.status_id = ?", (status_id,))
    return _status_from_row(rows[0]) if rows else None


@read_only
def _status_in_force(camera_id: str, at_ms: int) -> Operation[Optional[CameraStatus]]:
    status_id = yield from _status_id_in_force(camera_id, at_ms)
    if status_id is None:
        return None
    return (yield from _status_by_id(status_id))


@read_only
def _cameras() -> Operation[list[str]]:
    rows = yield Query("SELECT DISTINCT camera_id FROM camera_status")
    return sorted(row[0] for row in rows)


# High-water marks and rollback


def _high_water_mark(camera_id: str, lock: str) -> Operation[Optional[int]]:
    """The camera's mark in ms, or None; ``lock`` keeps it until the commit."""
    rows = yield Query(f"SELECT mark FROM high_water_marks WHERE camera_id = ?{lock}",
                       (camera_id,))
    return int(rows[0][0]) if rows else None


def _roll_back(camera_id: str, after_ms: int) -> Operation[list[str]]:
    """
    Delete the camera's files, events and statuses after ``after_ms`` with their links, meta
    and export tasks; return the deleted files' ids (their bytes go after the commit).
    """
    for kind, table, column in (("event", "events", "event_time"),
                                ("file", "files", "file_time")):
        yield Query(
            "DELETE FROM export_tasks WHERE entity_kind = ? AND entity_pk IN "
            f"(SELECT id FROM {table} WHERE camera_id = ? AND {column} > ?)",
            (kind, camera_id, after_ms),
        )
    yield Query("DELETE FROM events WHERE camera_id = ? AND event_time > ?",
                (camera_id, after_ms))
    deleted = yield Query(
        "DELETE FROM files WHERE camera_id = ? AND file_time > ? RETURNING file_id",
        (camera_id, after_ms),
    )
    yield Query("DELETE FROM camera_status WHERE camera_id = ? AND valid_from > ?",
                (camera_id, after_ms))
    return [row[0] for row in deleted]


def _set_high_water_mark(
    camera_id: str, mark_ms: int, allow_rollback: bool, allow_advance: bool, lock: str
) -> Operation[list[str]]:
    inserted = yield Query(
        "INSERT INTO high_water_marks (camera_id, mark) VALUES (?, ?) "
        "ON CONFLICT (camera_id) DO NOTHING RETURNING mark",
        (camera_id, mark_ms),
    )
    if inserted:
        return []
    current = yield from _high_water_mark(camera_id, lock)
    assert current is not None
    deleted: list[str] = []
    if mark_ms < current and allow_rollback:
        deleted = yield from _roll_back(camera_id, mark_ms)
    elif not (mark_ms > current and allow_advance):
        return []
    yield Query("UPDATE high_water_marks SET mark = ? WHERE camera_id = ?", (mark_ms, camera_id))
    return deleted


def _update_camera_status(
    status: CameraStatus, lock: str
) -> Operation[tuple[CameraStatus, list[str]]]:
    at_ms = datetime_to_ms(status.valid_from)
    current = yield from _high_water_mark(status.camera_id, lock)
    deleted: list[str] = []
    if current is not None and at_ms < current:
        deleted = yield from _roll_back(status.camera_id, at_ms)
        yield Query("UPDATE high_water_marks SET mark = ? WHERE camera_id = ?",
                    (at_ms, status.camera_id))
    yield from _insert_rows("camera_status", _STATUS_COLUMNS,
                            [_status_values(status, None, None)])
    stored = yield from _status_by_id(status.status_id)
    assert stored is not None
    return stored, deleted


# Writing files and events


def _insert_meta(table: str, owner_column: str, owner_pk: int,
                 metas: Sequence[Meta]) -> Operation[None]:
    if metas:
        yield from _insert_rows(
            table, (owner_column, *_META_COLUMNS),
            [(owner_pk, *_meta_row(position, meta)) for position, meta in enumerate(metas)],
        )


def _insert_file(
    record: FileRecord, imported_by: Optional[str], imported_at: Optional[int]
) -> Operation[Optional[int]]:
    """Insert a file row and its meta if its id is new; its primary key, or None."""
    rows = yield from _insert_rows(
        "files", _FILE_COLUMNS, [_file_values(record, imported_by, imported_at)],
        " ON CONFLICT (file_id) DO NOTHING RETURNING id",
    )
    if not rows:
        return None
    yield from _insert_meta("file_meta", "file_pk", rows[0][0], record.meta)
    return rows[0][0]


def _register_file(record: FileRecord) -> Operation[FileRecord]:
    """Record a file whose bytes are stored, against the status in force at its time."""
    status_id = yield from _status_id_in_force(record.camera_id,
                                               datetime_to_ms(record.file_time))
    if status_id is None:
        raise NoCameraStatus(
            f"no status of camera {record.camera_id} in force at {record.file_time.isoformat()}")
    record = attrs.evolve(record, status_id=status_id)
    yield from _insert_file(record, None, None)
    return record


def _file_pks(file_ids: Sequence[str]) -> Operation[dict[str, int]]:
    rows = yield from _select_in("SELECT file_id, id FROM files WHERE file_id IN ({ids})",
                                 list(dict.fromkeys(file_ids)))
    return {file_id: pk for file_id, pk in rows}


def _link_and_describe(event_pk: int, event: Event, pks: dict[str, int]) -> Operation[None]:
    if event.files:
        yield from _insert_rows(
            "event_files", ("event_pk", "position", "file_pk"),
            [(event_pk, position, pks[record.file_id])
             for position, record in enumerate(event.files)],
        )
    yield from _insert_meta("event_meta", "event_pk", event_pk, event.meta)


def _register_event(event: Event) -> Operation[Event]:
    status_id = yield from _status_id_in_force(event.camera_id,
                                               datetime_to_ms(event.event_time))
    if status_id is None:
        raise NoCameraStatus(
            f"no status of camera {event.camera_id} in force at {event.event_time.isoformat()}")
    pks = yield from _file_pks([record.file_id for record in event.files])
    for record in event.files:
        if record.file_id not in pks:
            raise EntityNotFound(record.file_id, "File")
    event = attrs.evolve(event, status_id=status_id)
    rows = yield from _insert_rows("events", _EVENT_COLUMNS, [_event_values(event, None, None)],
                                   " RETURNING id")
    yield from _link_and_describe(rows[0][0], event, pks)
    stored = yield from _files_by_pk(list(pks.values()))
    files = {record.file_id: record for record in stored.values()}
    return attrs.evolve(event, files=[files[record.file_id] for record in event.files])


# Imports


def _import_status(status: CameraStatus, user_id: str, now_ms: int) -> Operation[bool]:
    rows = yield from _insert_rows(
        "camera_status", _STATUS_COLUMNS, [_status_values(status, user_id, now_ms)],
        " ON CONFLICT (status_id) DO NOTHING RETURNING id",
    )
    return bool(rows)


def _import_file(record: FileRecord, user_id: str, now_ms: int) -> Operation[bool]:
    pk = yield from _insert_file(record, user_id, now_ms)
    return pk is not None


def _import_event(event: Event, user_id: str, now_ms: int) -> Operation[bool]:
    rows = yield from _insert_rows(
        "events", _EVENT_COLUMNS, [_event_values(event, user_id, now_ms)],
        " ON CONFLICT (event_id) DO NOTHING RETURNING id",
    )
    if not rows:
        return False
    records = {record.file_id: record for record in event.files}
    for file_id in sorted(records):
        yield from _insert_file(records[file_id], user_id, now_ms)
    pks = yield from _file_pks(list(records))
    yield from _link_and_describe(rows[0][0], event, pks)
    return True


# Bulk loading


def _bulk_insert(
    statuses: Sequence[CameraStatus],
    events: Sequence[Event],
    files: Sequence[FileRecord],
    imported_by: Optional[str],
    imported_at: Optional[int],
) -> Operation[dict[str, int]]:
    stored_statuses = yield from _insert_rows(
        "camera_status", _STATUS_COLUMNS,
        [_status_values(status, imported_by, imported_at) for status in statuses],
        " ON CONFLICT (status_id) DO NOTHING RETURNING id",
    )
    records = {record.file_id: record for record in files}
    for event in events:
        for record in event.files:
            records.setdefault(record.file_id, record)
    new_files = yield from _insert_rows(
        "files", _FILE_COLUMNS,
        [_file_values(record, imported_by, imported_at) for record in records.values()],
        " ON CONFLICT (file_id) DO NOTHING RETURNING id, file_id",
    )
    file_pks = {file_id: pk for pk, file_id in new_files}
    yield from _insert_rows(
        "file_meta", ("file_pk", *_META_COLUMNS),
        [(pk, *_meta_row(position, meta))
         for file_id, pk in file_pks.items()
         for position, meta in enumerate(records[file_id].meta)],
    )
    linked = {record.file_id for event in events for record in event.files}
    old = yield from _file_pks([file_id for file_id in linked if file_id not in file_pks])
    file_pks.update(old)
    by_id = {event.event_id: event for event in events}
    new_events = yield from _insert_rows(
        "events", _EVENT_COLUMNS,
        [_event_values(event, imported_by, imported_at) for event in by_id.values()],
        " ON CONFLICT (event_id) DO NOTHING RETURNING id, event_id",
    )
    yield from _insert_rows(
        "event_files", ("event_pk", "position", "file_pk"),
        [(pk, position, file_pks[record.file_id])
         for pk, event_id in new_events
         for position, record in enumerate(by_id[event_id].files)],
    )
    yield from _insert_rows(
        "event_meta", ("event_pk", *_META_COLUMNS),
        [(pk, *_meta_row(position, meta))
         for pk, event_id in new_events
         for position, meta in enumerate(by_id[event_id].meta)],
    )
    return {"statuses": len(stored_statuses), "files": len(new_files),
            "events": len(new_events)}


# Clearing


def _clear_database(dialect_name: str) -> Operation[None]:
    if dialect_name == "postgresql":
        rows = yield Query(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_type = ?", ("BASE TABLE",))
        tables = sorted(row[0] for row in rows if row[0] != "schema_version")
        if tables:
            yield Query("TRUNCATE " + ", ".join(f'"{table}"' for table in tables))
        return
    rows = yield Query("SELECT name FROM sqlite_master WHERE type = ?", ("table",))
    # Emptied in any order: references are checked only at the commit.
    yield Query("PRAGMA defer_foreign_keys = ON")
    for (table,) in rows:
        if table != "schema_version" and not table.startswith("sqlite_"):
            yield Query(f'DELETE FROM "{table}"')


class RecordOperations:
    """
    The IMeteorStore methods for files, events, camera statuses, high-water marks, searches
    and imports, plus `bulk_insert`. A mixin of `SQLStore`, which provides ``run``,
    ``dialect``, ``file_store``, ``default_camera_id``, ``now`` and ``now_ms``.
    """

    run: Callable[..., Deferred[Any]]
    dialect: Any
    file_store: Any
    default_camera_id: str
    now: Callable[[], datetime]
    now_ms: Callable[[], int]
    in_thread: Callable[..., Deferred[Any]]

    def _camera_id(self, camera_id: Optional[str]) -> str:
        if camera_id is None:
            return self.default_camera_id
        return parse_camera_id(camera_id, "camera_id")

    @property
    def _lock(self) -> str:
        """What makes a SELECT lock the rows it reads until the commit (PostgreSQL only)."""
        return " FOR UPDATE" if self.dialect.name == "postgresql" else ""

    async def _remove_files(self, file_ids: list[str]) -> None:
        if file_ids:
            await self.file_store.remove(file_ids)

    # files and events

    @_deferred
    async def register_file(
        self,
        file_path: Any,
        mime_type: str,
        semantic_type: Any,
        file_time: datetime,
        file_metas: Sequence[Meta] = (),
        camera_id: Optional[str] = None,
        file_name: Optional[str] = None,
    ) -> FileRecord:
        """
        Move the file at ``file_path`` into the file store and record it against the status
        in force at ``file_time``; NoCameraStatus when there is none. When the record cannot
        be made, the file is moved back to ``file_path``.
        """
        camera_id = self._camera_id(camera_id)
        record = FileRecord(
            file_id=new_id(), camera_id=camera_id, mime_type=mime_type,
            semantic_type=semantic_type, file_time=file_time, file_size=0,
            status_id=_PLACEHOLDER_ID, md5=_PLACEHOLDER_ID, file_name=file_name,
            meta=_sequence("file_metas", file_metas),
        )
        at_ms = datetime_to_ms(record.file_time)
        if await self.run(_status_id_in_force, camera_id, at_ms) is None:
            raise NoCameraStatus(
                f"no status of camera {camera_id} in force at {record.file_time.isoformat()}")
        stored = await self.file_store.add_from_path(file_path, record.file_id, move=True)
        record = attrs.evolve(record, file_size=stored.size, md5=stored.md5,
                              sha256=stored.sha256)
        try:
            return await self.run(_register_file, record)
        except Exception:
            await self.file_store.move_out(record.file_id, file_path)
            raise

    @_deferred
    async def register_event(
        self,
        camera_id: Optional[str],
        event_time: datetime,
        event_type: Any,
        file_records: Sequence[FileRecord] = (),
        event_meta: Sequence[Meta] = (),
    ) -> Event:
        """Record an event linking stored files in the order given, with its meta."""
        event = Event(
            event_id=new_id(), camera_id=self._camera_id(camera_id), event_time=event_time,
            event_type=event_type, status_id=_PLACEHOLDER_ID,
            files=_sequence("file_records", file_records),
            meta=_sequence("event_meta", event_meta),
        )
        return await self.run(_register_event, event)

    @_deferred
    async def get_file(self, file_id: str) -> Optional[FileRecord]:
        """The stored file record, or None."""
        return await self.run(_get_file, parse_id(file_id, "file_id"))

    def get_event(self, event_id: str) -> Deferred[Optional[Event]]:
        """The stored event with its files and meta, or None."""
        return self._read_event(self._event_reads, event_id)

    @_deferred
    async def has_file_id(self, file_id: str) -> bool:
        """Whether a file record with this id is stored."""
        return await self.run(_exists, "files", "file_id", parse_id(file_id, "file_id"))

    @_deferred
    async def has_event_id(self, event_id: str) -> bool:
        """Whether an event with this id is stored."""
        return await self.run(_exists, "events", "event_id", parse_id(event_id, "event_id"))

    @_deferred
    async def stored_ids(
        self, event_ids: Sequence[str] = (), file_ids: Sequence[str] = (),
        status_ids: Sequence[str] = (),
    ) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
        """
        Which of these event, file and status ids are stored, as three sets of ids in their
        normal (lowercase) form: what ``has_event_id`` and the others answer, for all of them
        in one call.
        """
        groups = [
            (table, column, [parse_id(value, key) for value in _sequence(key, ids)])
            for table, column, key, ids in (
                ("events", "event_id", "event_ids", event_ids),
                ("files", "file_id", "file_ids", file_ids),
                ("camera_status", "status_id", "status_ids", status_ids),
            )
        ]
        events, files, statuses = await self.run(_stored_ids, groups)
        return events, files, statuses

    @_deferred
    async def search_events(self, search: EventSearch) -> dict[str, Any]:
        """``{"count": n, "events": [Event, ...]}`` for one page of matches."""
        _require("search", search, EventSearch)
        events, count = await self.run(_search_events, search)
        return {"count": count, "events": events}

    @_deferred
    async def search_events_wire(self, search: EventSearch) -> dict[str, Any]:
        """
        ``search_events`` with each event in its wire form (``Event.to_dict``), built straight
        from the rows: what the HTTP API sends, without building the events first.
        """
        _require("search", search, EventSearch)
        events, count = await self.run(_search_events, search, _WIRE)
        return {"count": count, "events": events}

    def get_event_wire(self, event_id: str) -> Deferred[Optional[dict[str, Any]]]:
        """``get_event`` in the event's wire form (``Event.to_dict``), or None."""
        return self._read_event(self._event_wire_reads, event_id)

    @functools.cached_property
    def _event_reads(self) -> BatchedReads[str, Event]:
        return BatchedReads(lambda event_ids: self.run(_get_events, event_ids, _ENTITIES))

    @functools.cached_property
    def _event_wire_reads(self) -> BatchedReads[str, dict[str, Any]]:
        return BatchedReads(lambda event_ids: self.run(_get_events, event_ids, _WIRE))

    def _read_event(self, reads: BatchedReads[str, T], event_id: str) -> Deferred[Optional[T]]:
        """
        The event of ``event_id``, checked first, read with the others asked for meanwhile:
        the one read the API serves most, without the coroutine the other methods go through.
        """
        try:
            checked = parse_id(event_id, "event_id")
        except Exception:
            return fail()
        return reads.read(checked)

    @_deferred
    async def search_files(self, search: FileRecordSearch) -> dict[str, Any]:
        """``{"count": n, "files": [FileRecord, ...]}`` for one page of matches."""
        _require("search", search, FileRecordSearch)
        records, count = await self.run(_search_files, search)
        return {"count": count, "files": records}

    def file_path_for_id(self, file_id: str) -> FilePath:
        """Where the bytes of a file are (or would be) in the file store."""
        return self.file_store.path_for(parse_id(file_id, "file_id"))

    # cameras

    @_deferred
    async def update_camera_status(
        self, status: CameraStatus, time: Optional[datetime] = None,
        camera_id: Optional[str] = None,
    ) -> CameraStatus:
        """
        Store a copy of ``status`` with a new status_id, valid from ``time`` (default now) for
        ``camera_id`` (default this node's), rolling back first if ``time`` is before the
        camera's high-water mark.
        """
        _require("status", status, CameraStatus)
        if time is None:
            time = self.now()
        _time_ms("time", time)
        status = attrs.evolve(status, status_id=new_id(), camera_id=self._camera_id(camera_id),
                              valid_from=time, valid_to=None)
        stored, deleted = await self.run(_update_camera_status, status, self._lock)
        await self._remove_files(deleted)
        return stored

    @_deferred
    async def get_camera_status(
        self, time: Optional[datetime] = None, camera_id: Optional[str] = None
    ) -> Optional[CameraStatus]:
        """The status in force for the camera at ``time`` (default now), or None."""
        at_ms = self.now_ms() if time is None else _time_ms("time", time)
        return await self.run(_status_in_force, self._camera_id(camera_id), at_ms)

    @_deferred
    async def get_camera_status_by_id(self, status_id: str) -> Optional[CameraStatus]:
        """The status with this id, or None."""
        return await self.run(_status_by_id, parse_id(status_id, "status_id"))

    @_deferred
    async def has_status_id(self, status_id: str) -> bool:
        """Whether a status with this id is stored."""
        return await self.run(_exists, "camera_status", "status_id",
                              parse_id(status_id, "status_id"))

    @_deferred
    async def get_cameras(self) -> list[str]:
        """Ids of every camera with a status, sorted ascending (by code point)."""
        return await self.run(_cameras)

    @_deferred
    async def get_high_water_mark(self, camera_id: Optional[str] = None) -> Optional[datetime]:
        """The camera's high-water mark, or None if it has none."""
        mark = await self.run(_high_water_mark, self._camera_id(camera_id), "")
        return None if mark is None else ms_to_datetime(mark)

    @_deferred
    async def set_high_water_mark(
        self, time: datetime, camera_id: Optional[str] = None, allow_rollback: bool = True,
        allow_advance: bool = True,
    ) -> None:
        """
        Move the camera's mark to ``time``; moving it back (if allowed) deletes the camera's
        later files, events and statuses, and after the commit the files' bytes.
        """
        mark_ms = _time_ms("time", time)
        deleted = await self.run(_set_high_water_mark, self._camera_id(camera_id), mark_ms,
                                 bool(allow_rollback), bool(allow_advance), self._lock)
        await self._remove_files(deleted)

    # import

    @_deferred
    async def import_camera_status(self, status: CameraStatus, user_id: str) -> bool:
        """Store a status from another node under its own id if that id is new."""
        _require("status", status, CameraStatus)
        return await self.run(_import_status, status, _user_id(user_id), self.now_ms())

    @_deferred
    async def import_file_record(self, record: FileRecord, user_id: str) -> bool:
        """Store a file record from another node if its id is new (bytes already stored)."""
        _require("record", record, FileRecord)
        return await self.run(_import_file, record, _user_id(user_id), self.now_ms())

    @_deferred
    async def import_event(self, event: Event, user_id: str) -> bool:
        """Store an event from another node with its new files and links, if its id is new."""
        _require("event", event, Event)
        return await self.run(_import_event, event, _user_id(user_id), self.now_ms())

    @_deferred
    async def bulk_insert(
        self,
        statuses: Sequence[CameraStatus] = (),
        events: Sequence[Event] = (),
        files: Sequence[FileRecord] = (),
        imported_by: Optional[str] = None,
    ) -> dict[str, int]:
        """
        Insert many built entities at once (benchmarks, ``meteord-admin import-dir``): the
        statuses under their own ids, the stand-alone ``files`` and the events with their
        files and meta, with multi-row INSERTs in one transaction. File rows only: bytes are
        not touched. Entities whose id is already stored are skipped. ``imported_by`` marks
        every new row as imported by that user, now. -> how many of each were new:
        ``{"statuses": n, "files": n, "events": n}``
        """
        for key, items, cls in (("statuses", statuses, CameraStatus), ("events", events, Event),
                                ("files", files, FileRecord)):
            for index, item in enumerate(items):
                _require(f"{key}[{index}]", item, cls)
        imported_at = None
        if imported_by is not None:
            imported_by, imported_at = _user_id(imported_by), self.now_ms()
        return await self.run(_bulk_insert, list(statuses), list(events), list(files),
                              imported_by, imported_at)

    @_deferred
    async def clear_database(self) -> None:
        """Delete every row of every table but the schema version, then every stored file."""
        await self.run(_clear_database, self.dialect.name)
        file_ids = await self.in_thread(lambda: list(self.file_store.iter_file_ids()))
        await self._remove_files(file_ids)
