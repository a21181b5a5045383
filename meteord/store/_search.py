"""
Searches as SQL: pure functions turning an `EventSearch` or `FileRecordSearch` into a WHERE
clause with bound parameters, and into the page and count queries built on it, shared by both
database dialects. Every value from a search is a bound parameter; only table and column names
chosen here are written into the SQL text.

The conditions are written against ``events e`` or ``files f``, so other operations (marking
entities for export) can reuse them, e.g. ``SELECT e.id FROM events e WHERE <conditions>``.

Semantics (model.md), with the choices where it is silent:

- ``after``/``before`` are exclusive on ``event_time``/``file_time``.
- ``after_offset``/``before_offset`` are exclusive on the day offset ``(t - 12h) mod 24h``.
  The offset is computed in integer milliseconds (correct for times before 1970 too, since
  SQL's ``%`` keeps the sign of the dividend) and each bound in seconds is turned into the
  integer millisecond bound that gives exactly ``offset(t) > after_offset`` and
  ``offset(t) < before_offset`` over the reals, so no floating-point rounding is involved.
- ``lat_min``, ``lat_max``, ``long_min``, ``long_max`` are **inclusive** and apply to the
  location of the camera status named by the entity's ``status_id``; an entity whose status is
  not stored here never matches a location bound.
- Meta constraints are inclusive (``after``/``before`` on date metas, ``greater``/``less`` on
  number metas) or exact (``number_equals``, ``string_equals``); each one must be met by some
  meta item with that key (one ``EXISTS`` per constraint). A constraint never matches a meta
  of another type with the same key.
- ``exclude_export_to`` leaves out entities with an export task row of any state for that
  configuration; an unknown configuration id excludes nothing.
- Results are ordered by time, newest first, then by public id descending. ``limit`` 0 means
  no limit.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, Optional, Union

import attrs

from meteord.model import EventSearch, FileRecordSearch, MetaConstraint, datetime_to_ms

__all__ = [
    "EVENTS",
    "FILES",
    "SearchTable",
    "conditions",
    "count_query",
    "empty_page_count",
    "page_query",
]

# The day offset of a time column in ms, (t - 12h) mod 24h, non-negative for negative t too.
_DAY_OFFSET_MS = "((({time} - 43200000) % 86400000) + 86400000) % 86400000"
_NO_LIMIT = 2**63 - 1

# (column compared, operator) per constraint type.
_CONSTRAINT_TESTS = {
    "after": ("date_value", ">="),
    "before": ("date_value", "<="),
    "greater": ("float_value", ">="),
    "less": ("float_value", "<="),
    "number_equals": ("float_value", "="),
    "string_equals": ("string_value", "="),
}


@attrs.frozen
class SearchTable:
    """Where the rows of one kind of entity live and what their columns are called."""

    table: str
    alias: str
    time: str
    public_id: str
    meta_table: str
    meta_owner: str
    export_kind: str

    def column(self, name: str) -> str:
        """A column qualified with this table's alias."""
        return f"{self.alias}.{name}"

    @property
    def order(self) -> str:
        """The result order: newest first, ties by public id descending."""
        return f"{self.column(self.time)} DESC, {self.column(self.public_id)} DESC"


EVENTS = SearchTable("events", "e", "event_time", "event_id", "event_meta", "event_pk", "event")
FILES = SearchTable("files", "f", "file_time", "file_id", "file_meta", "file_pk", "file")

Search = Union[EventSearch, FileRecordSearch]


def _table_of(search: Search) -> SearchTable:
    if isinstance(search, EventSearch):
        return EVENTS
    if isinstance(search, FileRecordSearch):
        return FILES
    raise TypeError(f"expected an EventSearch or FileRecordSearch, not {type(search).__name__}")


def _marks(count: int) -> str:
    return ", ".join("?" * count)


def _constraint_value(constraint: MetaConstraint) -> Any:
    value = constraint.value
    if constraint.type in ("after", "before"):
        return datetime_to_ms(value)
    if constraint.type == "string_equals":
        return value
    return float(value)


def conditions(search: Search) -> tuple[str, list[Any]]:
    """
    The WHERE clause (without ``WHERE``) matching ``search`` against ``events e`` (an
    EventSearch) or ``files f`` (a FileRecordSearch), and its parameters. Paging is not part
    of it.
    """
    t = _table_of(search)
    clauses: list[str] = []
    params: list[Any] = []
    time = t.column(t.time)
    if search.camera_ids is not None:
        clauses.append(f"{t.column('camera_id')} IN ({_marks(len(search.camera_ids))})")
        params.extend(search.camera_ids)
    if search.after is not None:
        clauses.append(f"{time} > ?")
        params.append(datetime_to_ms(search.after))
    if search.before is not None:
        clauses.append(f"{time} < ?")
        params.append(datetime_to_ms(search.before))
    if search.after_offset is not None or search.before_offset is not None:
        offset = _DAY_OFFSET_MS.format(time=time)
        if search.after_offset is not None:
            clauses.append(f"{offset} > ?")
            params.append(math.floor(Fraction(search.after_offset) * 1000))
        if search.before_offset is not None:
            clauses.append(f"{offset} < ?")
            params.append(math.ceil(Fraction(search.before_offset) * 1000))
    location = []
    for column, operator, value in (
        ("lat", ">=", search.lat_min),
        ("lat", "<=", search.lat_max),
        ("long", ">=", search.long_min),
        ("long", "<=", search.long_max),
    ):
        if value is not None:
            location.append(f"s.{column} {operator} ?")
            params.append(float(value))
    if location:
        clauses.append(
            f"EXISTS (SELECT 1 FROM camera_status s WHERE s.status_id = "
            f"{t.column('status_id')} AND {' AND '.join(location)})"
        )
    if isinstance(search, EventSearch):
        if search.event_type is not None:
            clauses.append("e.event_type = ?")
            params.append(str(search.event_type))
    else:
        if search.mime_type is not None:
            clauses.append("f.mime_type = ?")
            params.append(search.mime_type)
        if search.semantic_type is not None:
            clauses.append("f.semantic_type = ?")
            params.append(str(search.semantic_type))
        if search.exclude_events:
            clauses.append("NOT EXISTS (SELECT 1 FROM event_files ef WHERE ef.file_pk = f.id)")
    for constraint in search.meta:
        column, operator = _CONSTRAINT_TESTS[constraint.type]
        clauses.append(
            f"EXISTS (SELECT 1 FROM {t.meta_table} m WHERE m.{t.meta_owner} = "
            f"{t.column('id')} AND m.key = ? AND m.{column} {operator} ?)"
        )
        params.extend((str(constraint.key), _constraint_value(constraint)))
    if search.exclude_imported:
        clauses.append(f"{t.column('imported_by')} IS NULL")
    if search.exclude_export_to is not None:
        clauses.append(
            "NOT EXISTS (SELECT 1 FROM export_tasks x JOIN export_configs c "
            "ON c.id = x.config_pk WHERE c.config_id = ? AND x.entity_kind = ? "
            f"AND x.entity_pk = {t.column('id')})"
        )
        params.extend((search.exclude_export_to, t.export_kind))
    return (" AND ".join(clauses) or "1 = 1"), params


def page_query(search: Search, columns: str) -> tuple[str, list[Any]]:
    """
    The query selecting ``columns`` (qualified with the alias ``e`` or ``f``) of one page of
    matches in result order, each row ending with the total count of matches (so a page and
    its count take one round trip), and its parameters.
    """
    t = _table_of(search)
    where, params = conditions(search)
    sql = (
        f"SELECT {columns}, (SELECT count(*) FROM {t.table} {t.alias} WHERE {where}) "
        f"FROM {t.table} {t.alias} WHERE {where} ORDER BY {t.order} LIMIT ? OFFSET ?"
    )
    return sql, [*params, *params, search.limit or _NO_LIMIT, search.skip]


def count_query(search: Search) -> tuple[str, list[Any]]:
    """The query counting every match of ``search``, ignoring limit and skip."""
    t = _table_of(search)
    where, params = conditions(search)
    return f"SELECT count(*) FROM {t.table} {t.alias} WHERE {where}", params


def empty_page_count(search: Search) -> Optional[int]:
    """
    The total count when a page came back empty: 0 unless the page was skipped past the end,
    in which case only the count query can tell (None).
    """
    return 0 if search.skip == 0 else None
