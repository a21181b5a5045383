"""
The entities of meteord (events, files, camera statuses, users, export configurations) and the
searches over them, as immutable attrs classes with their MeteorPi-compatible JSON form.

Everything here is pure Python (no I/O, no reactor) so that the store, the HTTP layer and the
exporter share one definition of a valid entity: constructors check values, and ``from_dict``
checks everything that can arrive from the network and raises `InvalidEntity` naming the key.

Decisions where the specification is silent:

- Text never contains NUL (PostgreSQL cannot store it) or lone surrogates (not encodable as
  UTF-8); ids, mime types, file names and user ids also refuse other control characters,
  because they end up in HTTP headers. Otherwise strings have any length.
- Datetimes given to constructors must be timezone-aware; they are converted to UTC and
  truncated to the millisecond, so what is built is exactly what the wire carries. Wire times
  are integers in the range of Python's datetime (years 1-9999).
- An optional key whose value is ``null`` counts as absent on input (browser clients send it).
- Booleans on input are ``true``/``1`` (set) or ``false``/``0``/absent (unset); anything
  else is an error. This also covers ``location.gps``, which old nodes stored as 0/1.
- ``file_size`` lies in [0, 2**63 - 1] (a signed 64-bit column). ``software_version``,
  ``priority`` and point coordinates are integers; coordinates are pixels, so not negative.
- ``lat`` lies in [-90, 90] and ``long`` in [-180, 180]; the other angles and the errors only
  have to be finite.
- ``lens`` and ``sensor`` are required (possibly empty) strings; ``inst_url`` and ``inst_name``
  are optional, since old camera nodes left them unset until an operator filled them in.
- A user id is 1-40 characters without ``:`` (HTTP Basic cannot carry one); the same holds
  for the remote ``user_id`` of an export configuration, without the length limit.
- An export configuration's ``password`` may be absent or empty on input (the admin API then
  keeps the stored one); ``config_name`` and ``config_description`` are required strings.
  ``window`` entries are ``HH:MM-HH:MM`` in UTC, ``24:00`` allowed as an end, start and end
  different; a start later than the end wraps past midnight. An empty list is refused (omit
  the key to allow every hour).
- An export configuration's ``ca_file`` is an absolute path (its contents are checked at the
  edges that read it: the admin API and the exporter). ``pinned_certificates`` is a non-empty
  set of SHA-256 fingerprints of DER certificates, given as 64 hex digits, either case,
  optionally ``:``-separated by byte; it is kept and emitted lowercase, without separators,
  sorted and without duplicates. Both need an ``https://`` target. What they mean for the
  handshake is the exporter's business (`meteord.exporter.tls`).
- A search ``limit`` of 0 means "no limit"; ``from_dict`` with a ``max_limit`` (as every HTTP
  request has) refuses it, because an unbounded search is over any maximum. Offsets may be
  integers or floats. The exporter's internal use passes ``max_limit=None``.
"""

from __future__ import annotations

import os
import re
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Mapping, Optional, Union
from urllib.parse import urlsplit

import attrs

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_FILE_SIZE",
    "MAX_LIMIT",
    "META_TYPES",
    "CONSTRAINT_TYPES",
    "DEFAULT_NAMESPACE",
    "ROLES",
    "CameraStatus",
    "Event",
    "EventSearch",
    "ExportConfiguration",
    "ExportOutcome",
    "ExportStatus",
    "ExportTask",
    "FileRecord",
    "FileRecordSearch",
    "InvalidEntity",
    "Location",
    "Meta",
    "MetaConstraint",
    "NSString",
    "Orientation",
    "Point",
    "TimeWindow",
    "User",
    "datetime_to_ms",
    "day_offset",
    "ms_to_datetime",
    "new_id",
    "parse_camera_id",
    "parse_id",
    "role_mask",
    "roles_from_mask",
]

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
# Meta constraints in one search: each is a sub-query of the statement, and SQLite refuses
# a statement nested past a depth of 1,000.
MAX_META_CONSTRAINTS = 32
MAX_FILE_SIZE = 2**63 - 1
ROLES: tuple[str, ...] = ("user", "camera_admin", "import")
META_TYPES = frozenset({"string", "number", "date"})
CONSTRAINT_TYPES = frozenset(
    {"after", "before", "greater", "less", "number_equals", "string_equals"}
)
DEFAULT_NAMESPACE = "meteorpi"

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_MS = timedelta(milliseconds=1)
_NOON_MS = 12 * 3600 * 1000
_DAY_MS = 24 * 3600 * 1000
_MIN_MS = (datetime.min.replace(tzinfo=timezone.utc) - _EPOCH) // _ONE_MS
_MAX_MS = (datetime.max.replace(tzinfo=timezone.utc) - _EPOCH) // _ONE_MS
_INT64_MAX = 2**63 - 1

_HEX32 = re.compile(r"[0-9a-fA-F]{32}")
_DASHED_ID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_CANONICAL_ID = re.compile(r"[0-9a-f]{32}")
_CAMERA_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_MD5 = re.compile(r"[0-9a-f]{32}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_WINDOW = re.compile(r"([0-9]{2}):([0-9]{2})-([0-9]{2}):([0-9]{2})")
_FINGERPRINT = re.compile(r"[0-9a-fA-F]{64}|[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){31}")

# The value of an absent key, distinct from None (which the wire may carry as null).
_ABSENT: Any = object()


class InvalidEntity(ValueError):
    """
    Something given as an entity or search is invalid. ``key`` names the offending key as a
    dotted path (``files[0].md5``; empty when the whole value is wrong) and ``reason`` says
    what is wrong with it.
    """

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"Invalid {key!r}: {reason}" if key else reason)

    def within(self, prefix: str) -> InvalidEntity:
        """The same error seen from the object that holds this one under ``prefix``."""
        if not self.key:
            return InvalidEntity(prefix, self.reason)
        separator = "" if self.key.startswith("[") else "."
        return InvalidEntity(f"{prefix}{separator}{self.key}", self.reason)


# Times


def ms_to_datetime(ms: int) -> datetime:
    """The aware UTC datetime of ``ms`` milliseconds since the Unix epoch (exact)."""
    if isinstance(ms, bool) or not isinstance(ms, int):
        raise TypeError(f"milliseconds must be an int, not {type(ms).__name__}")
    if not _MIN_MS <= ms <= _MAX_MS:
        raise ValueError(f"{ms} ms is outside the years 1-9999")
    return _EPOCH + ms * _ONE_MS


def datetime_to_ms(dt: datetime) -> int:
    """Milliseconds since the Unix epoch of an aware datetime, sub-millisecond part dropped."""
    if dt.__class__ is datetime and dt.tzinfo is timezone.utc:
        return (dt - _EPOCH) // _ONE_MS
    if not isinstance(dt, datetime):
        raise TypeError(f"expected a datetime, not {type(dt).__name__}")
    if dt.utcoffset() is None:
        raise ValueError("naive datetimes are ambiguous; give a timezone-aware one")
    return (dt - _EPOCH) // _ONE_MS


def day_offset(ms: int) -> float:
    """Seconds since the most recent 12:00 UTC at ``ms``: ``(t - 12h) mod 24h``."""
    return ((ms - _NOON_MS) % _DAY_MS) / 1000


def _utc_ms(key: str, value: Any) -> datetime:
    """Normalise an aware datetime to UTC with millisecond precision."""
    if not isinstance(value, datetime):
        raise InvalidEntity(key, f"expected a datetime, not {type(value).__name__}")
    if value.utcoffset() is None:
        raise InvalidEntity(key, "expected a timezone-aware datetime")
    try:
        return ms_to_datetime(datetime_to_ms(value))
    except ValueError as e:
        raise InvalidEntity(key, str(e)) from None


def _time_converter(key: str, optional: bool = False) -> Any:
    """An attrs converter applying `_utc_ms` to the field named key (None allowed if optional)."""

    def convert(value: Any) -> Any:
        if optional and value is None:
            return None
        return _utc_ms(key, value)

    return convert


# Ids


def new_id() -> str:
    """A fresh random id: 32 lowercase hex characters."""
    return uuid.uuid4().hex


def parse_id(value: object, key: str) -> str:
    """
    The canonical form (32 lowercase hex) of an id given as 32 hex characters or in the dashed
    8-4-4-4-12 form; raise InvalidEntity naming ``key`` for anything else.
    """
    if not isinstance(value, str):
        raise InvalidEntity(key, "expected an id (32 hexadecimal characters)")
    if _HEX32.fullmatch(value):
        return value.lower()
    if _DASHED_ID.fullmatch(value):
        return value.replace("-", "").lower()
    raise InvalidEntity(key, "expected an id (32 hexadecimal characters)")


def parse_camera_id(value: object, key: str) -> str:
    """
    A camera id from input: trailing spaces stripped, then 1-64 characters of
    ``[A-Za-z0-9_.:-]``; raise InvalidEntity naming ``key`` otherwise.
    """
    if not isinstance(value, str):
        raise InvalidEntity(key, "expected a camera id string")
    value = value.rstrip(" ")
    if not _CAMERA_ID.fullmatch(value):
        raise InvalidEntity(key, "a camera id is 1-64 characters of A-Z a-z 0-9 _ . : -")
    return value


# Validators (attrs signature: instance, attribute, value)


def _check_text(key: str, value: object, *, empty: bool = True, controls: bool = True) -> str:
    """Check that value is storable text, optionally non-empty and free of control chars."""
    if not isinstance(value, str):
        raise InvalidEntity(key, f"expected a string, not {_json_type(value)}")
    if not empty and not value:
        raise InvalidEntity(key, "must not be empty")
    if "\x00" in value:
        raise InvalidEntity(key, "must not contain NUL characters")
    if not controls and _CONTROL.search(value):
        raise InvalidEntity(key, "must not contain control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidEntity(key, "must be valid Unicode (no lone surrogates)") from None
    return value


def _text(*, empty: bool = True, controls: bool = True) -> Any:
    """An attrs validator for `_check_text`."""

    def validate(instance: object, attribute: attrs.Attribute, value: object) -> None:
        _check_text(attribute.name, value, empty=empty, controls=controls)

    return validate


def _optional(validator: Any) -> Any:
    """An attrs validator that lets None through."""

    def validate(instance: object, attribute: attrs.Attribute, value: object) -> None:
        if value is not None:
            validator(instance, attribute, value)

    return validate


def _matching(pattern: re.Pattern[str], description: str) -> Any:
    """An attrs validator requiring a string that fully matches pattern."""

    def validate(instance: object, attribute: attrs.Attribute, value: object) -> None:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise InvalidEntity(attribute.name, f"expected {description}")

    return validate


_valid_id = _matching(_CANONICAL_ID, "an id of 32 lowercase hexadecimal characters")
_valid_camera_id = _matching(_CAMERA_ID, "a camera id of 1-64 characters of A-Z a-z 0-9 _ . : -")


def _int_in(low: int, high: int) -> Any:
    """An attrs validator requiring an int (not a bool) in [low, high]."""

    def validate(instance: object, attribute: attrs.Attribute, value: object) -> None:
        _check_int(attribute.name, value, low, high)

    return validate


def _check_int(key: str, value: object, low: int, high: int) -> int:
    """Check that value is an int (not a bool) in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidEntity(key, f"expected an integer, not {_json_type(value)}")
    if not low <= value <= high:
        raise InvalidEntity(key, f"must be between {low} and {high}")
    return value


def _check_float(
    key: str, value: object, low: float = float("-inf"), high: float = float("inf")
) -> float:
    """Check that value is a finite number (not a bool) in [low, high] and give it as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidEntity(key, f"expected a number, not {_json_type(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise InvalidEntity(key, "number out of range") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise InvalidEntity(key, "must be a finite number")
    if not low <= number <= high:
        raise InvalidEntity(key, f"must be between {low:g} and {high:g}")
    return number


def _float_in(low: float = float("-inf"), high: float = float("inf")) -> Any:
    """An attrs validator requiring a finite number in [low, high]."""

    def validate(instance: object, attribute: attrs.Attribute, value: object) -> None:
        _check_float(attribute.name, value, low, high)

    return validate


def _one_of(*choices: str) -> Any:
    """An attrs validator requiring one of the given strings."""

    def validate(instance: object, attribute: attrs.Attribute, value: object) -> None:
        if value not in choices:
            raise InvalidEntity(attribute.name, f"must be one of {', '.join(sorted(choices))}")

    return validate


def _instance_of(cls: type) -> Any:
    """An attrs validator requiring an instance of cls."""

    def validate(instance: object, attribute: attrs.Attribute, value: object) -> None:
        if not isinstance(value, cls):
            raise InvalidEntity(attribute.name, f"expected a {cls.__name__}")

    return validate


def _is_bool(instance: object, attribute: attrs.Attribute, value: object) -> None:
    """An attrs validator requiring a bool."""
    if not isinstance(value, bool):
        raise InvalidEntity(attribute.name, "expected true or false")


def _instances_of(cls: type) -> Any:
    """An attrs validator requiring a tuple whose items are all instances of cls."""

    def validate(instance: object, attribute: attrs.Attribute, value: object) -> None:
        for index, item in enumerate(value):  # type: ignore[arg-type]
            if not isinstance(item, cls):
                raise InvalidEntity(
                    f"{attribute.name}[{index}]", f"expected a {cls.__name__}"
                )

    return validate


def _json_type(value: object) -> str:
    """The JSON name of value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


# Reading the wire form


def _mapping(value: object) -> Mapping[str, Any]:
    """Check that value is a JSON object."""
    if not isinstance(value, Mapping):
        raise InvalidEntity("", f"expected an object, not {_json_type(value)}")
    return value


def _get(d: Mapping[str, Any], key: str, required: bool = True) -> Any:
    """The value of key in d; missing or null gives an error if required, else _ABSENT."""
    value = d.get(key)
    if value is None:
        if required:
            raise InvalidEntity(key, "is required")
        return _ABSENT
    return value


def _read_text(d: Mapping[str, Any], key: str, required: bool = True, **checks: bool) -> Any:
    """A string under key (see `_check_text` for checks), or None when optional and absent."""
    value = _get(d, key, required)
    if value is _ABSENT:
        return None
    return _check_text(key, value, **checks)


def _read_int(d: Mapping[str, Any], key: str, low: int, high: int, required: bool = True) -> Any:
    """An integer under key, or None when optional and absent."""
    value = _get(d, key, required)
    if value is _ABSENT:
        return None
    return _check_int(key, value, low, high)


def _read_float(
    d: Mapping[str, Any],
    key: str,
    low: float = float("-inf"),
    high: float = float("inf"),
    required: bool = True,
) -> Any:
    """A finite number under key as a float, or None when optional and absent."""
    value = _get(d, key, required)
    if value is _ABSENT:
        return None
    return _check_float(key, value, low, high)


def _check_time(key: str, value: object) -> datetime:
    """A datetime from integer milliseconds."""
    return ms_to_datetime(_check_int(key, value, _MIN_MS, _MAX_MS))


def _read_time(d: Mapping[str, Any], key: str, required: bool = True) -> Any:
    """A datetime from integer ms under key, or None when optional and absent."""
    value = _get(d, key, required)
    if value is _ABSENT:
        return None
    return _check_time(key, value)


def _read_id(d: Mapping[str, Any], key: str, required: bool = True) -> Any:
    """A canonical id under key, or None when optional and absent."""
    value = _get(d, key, required)
    if value is _ABSENT:
        return None
    return parse_id(value, key)


def _read_camera_id(d: Mapping[str, Any], key: str) -> str:
    """A camera id under key."""
    return parse_camera_id(_get(d, key), key)


def _read_nsstring(d: Mapping[str, Any], key: str, required: bool = True) -> Any:
    """An NSString under key, or None when optional and absent."""
    value = _get(d, key, required)
    if value is _ABSENT:
        return None
    return NSString.parse(value, key)


def _read_flag(d: Mapping[str, Any], key: str) -> bool:
    """A boolean under key: true or 1 set it; false, 0, null or absence leave it unset."""
    value = d.get(key)
    if value is None or value is False or (type(value) is int and value == 0):
        return False
    if value is True or (type(value) is int and value == 1):
        return True
    raise InvalidEntity(key, f"expected true or false, not {_json_type(value)}")


def _read_list(d: Mapping[str, Any], key: str, required: bool = True) -> list[Any]:
    """A JSON array under key; an optional absent one is empty."""
    value = _get(d, key, required)
    if value is _ABSENT:
        return []
    if not isinstance(value, list):
        raise InvalidEntity(key, f"expected a list, not {_json_type(value)}")
    return value


def _read_items(d: Mapping[str, Any], key: str, parse: Any, required: bool = True) -> tuple:
    """Parse every item of the list under key, naming ``key[i]`` in errors."""
    result = []
    for index, item in enumerate(_read_list(d, key, required)):
        try:
            result.append(parse(item))
        except InvalidEntity as e:
            raise e.within(f"{key}[{index}]") from None
    return tuple(result)


def _read_object(d: Mapping[str, Any], key: str, parse: Any) -> Any:
    """Parse the object under key, naming ``key.sub`` in errors."""
    value = _get(d, key)
    try:
        return parse(value)
    except InvalidEntity as e:
        raise e.within(key) from None


def _omit_none(d: dict[str, Any]) -> dict[str, Any]:
    """d without the keys whose value is None (absent optional values are omitted)."""
    return {key: value for key, value in d.items() if value is not None}


def _ms_or_none(value: Optional[datetime]) -> Optional[int]:
    """Wire form of an optional datetime."""
    return None if value is None else datetime_to_ms(value)


# Entities


@attrs.frozen(kw_only=True)
class NSString:
    """A namespaced string, ``ns:value`` on the wire, e.g. ``meteorpi:meteor``."""

    ns: str = attrs.field(validator=_text(empty=False, controls=False))
    value: str = attrs.field(validator=_text(empty=False, controls=False))

    def __attrs_post_init__(self) -> None:
        if ":" in self.ns:
            raise InvalidEntity("ns", "a namespace must not contain ':'")

    def __str__(self) -> str:
        return f"{self.ns}:{self.value}"

    @classmethod
    def parse(cls, text: object, key: str = "") -> NSString:
        """
        Split ``ns:value`` at the first colon; text without a colon is in the ``meteorpi``
        namespace. Raise InvalidEntity naming ``key`` if a part is empty.
        """
        _check_text(key, text, empty=False, controls=False)
        assert isinstance(text, str)
        ns, colon, value = text.partition(":")
        if not colon:
            ns, value = DEFAULT_NAMESPACE, text
        if not ns:
            raise InvalidEntity(key, "the namespace before ':' must not be empty")
        if not value:
            raise InvalidEntity(key, "the value after ':' must not be empty")
        return cls(ns=ns, value=value)


def _nsstring_converter(key: str) -> Any:
    """An attrs converter letting constructors take an NSString in its text form too."""

    def convert(value: Any) -> Any:
        return NSString.parse(value, key) if isinstance(value, str) else value

    return convert


_is_nsstring = _instance_of(NSString)


@attrs.frozen(kw_only=True)
class Meta:
    """
    A metadata item of an event or file: a string, a number (kept as a 64-bit float) or a
    date (an aware UTC datetime with millisecond precision).
    """

    key: NSString = attrs.field(
        converter=_nsstring_converter("key"), validator=_is_nsstring
    )
    type: str = attrs.field(validator=_one_of(*META_TYPES))
    value: Union[str, float, datetime] = attrs.field()

    def __attrs_post_init__(self) -> None:
        # Normalised here (frozen class) because the right conversion depends on ``type``.
        object.__setattr__(self, "value", _typed_value(self.type, self.value, "value"))

    def to_dict(self) -> dict[str, Any]:
        """The wire form."""
        return {"type": self.type, "key": str(self.key), "value": _value_to_wire(self.value)}

    @classmethod
    def from_dict(cls, d: object) -> Meta:
        """Parse and check the wire form."""
        d = _mapping(d)
        meta_type = _read_text(d, "type")
        if meta_type not in META_TYPES:
            raise InvalidEntity("type", "must be one of date, number, string")
        key = _read_nsstring(d, "key")
        value = _wire_value(meta_type, _get(d, "value"), "value")
        return cls(key=key, type=meta_type, value=value)


def _value_to_wire(value: Union[str, float, datetime]) -> Union[str, float, int]:
    """A meta or constraint value as JSON carries it: dates as ms."""
    return datetime_to_ms(value) if isinstance(value, datetime) else value


def _typed_value(value_type: str, value: Any, key: str) -> Any:
    """Check a Python value against a meta or constraint type and normalise it."""
    if value_type in ("string", "string_equals"):
        return _check_text(key, value)
    if value_type in ("date", "after", "before"):
        return _utc_ms(key, value)
    return _check_float(key, value)


def _wire_value(value_type: str, value: Any, key: str) -> Any:
    """Read a wire value of a meta or constraint type (dates as integer ms)."""
    if value_type in ("date", "after", "before"):
        return _check_time(key, value)
    return _typed_value(value_type, value, key)


def _md5_converter(value: Any) -> Any:
    """Accept upper-case hex digests from constructors."""
    return value.lower() if isinstance(value, str) else value


def _to_tuple(value: Any) -> Any:
    """Store sequences as tuples so that entities stay immutable and hashable."""
    return tuple(value)


@attrs.frozen(kw_only=True)
class FileRecord:
    """A file (image, video, log, ...) recorded by a camera, with its checksums and meta."""

    file_id: str = attrs.field(validator=_valid_id)
    camera_id: str = attrs.field(validator=_valid_camera_id)
    mime_type: str = attrs.field(validator=_text(empty=False, controls=False))
    semantic_type: NSString = attrs.field(
        converter=_nsstring_converter("semantic_type"), validator=_is_nsstring
    )
    file_time: datetime = attrs.field(converter=_time_converter("file_time"))
    file_size: int = attrs.field(validator=_int_in(0, MAX_FILE_SIZE))
    status_id: str = attrs.field(validator=_valid_id)
    md5: str = attrs.field(converter=_md5_converter, validator=_matching(_MD5, "32 hex digits"))
    file_name: Optional[str] = attrs.field(
        default=None, validator=_optional(_text(empty=False, controls=False))
    )
    sha256: Optional[str] = attrs.field(
        default=None,
        converter=_md5_converter,
        validator=_optional(_matching(_SHA256, "64 hex digits")),
    )
    meta: tuple[Meta, ...] = attrs.field(
        default=(), converter=_to_tuple, validator=_instances_of(Meta)
    )

    def to_dict(self) -> dict[str, Any]:
        """The wire form (written out rather than filtered: it is on every search's path)."""
        d: dict[str, Any] = {
            "file_id": self.file_id,
            "camera_id": self.camera_id,
            "mime_type": self.mime_type,
        }
        if self.file_name is not None:
            d["file_name"] = self.file_name
        d["semantic_type"] = str(self.semantic_type)
        d["file_time"] = datetime_to_ms(self.file_time)
        d["file_size"] = self.file_size
        d["status_id"] = self.status_id
        d["md5"] = self.md5
        if self.sha256 is not None:
            d["sha256"] = self.sha256
        d["meta"] = [m.to_dict() for m in self.meta]
        return d

    @classmethod
    def from_dict(cls, d: object) -> FileRecord:
        """Parse and check the wire form."""
        d = _mapping(d)
        return cls(
            file_id=_read_id(d, "file_id"),
            camera_id=_read_camera_id(d, "camera_id"),
            mime_type=_read_text(d, "mime_type", empty=False, controls=False),
            file_name=_read_text(d, "file_name", required=False, empty=False, controls=False),
            semantic_type=_read_nsstring(d, "semantic_type"),
            file_time=_read_time(d, "file_time"),
            file_size=_read_int(d, "file_size", 0, MAX_FILE_SIZE),
            status_id=_read_id(d, "status_id"),
            md5=_read_digest(d, "md5", _MD5, "32 hex digits", required=True),
            sha256=_read_digest(d, "sha256", _SHA256, "64 hex digits", required=False),
            meta=_read_items(d, "meta", Meta.from_dict),
        )


def _read_digest(
    d: Mapping[str, Any], key: str, pattern: re.Pattern[str], description: str, required: bool
) -> Any:
    """A hex digest under key, lower-cased."""
    value = _read_text(d, key, required)
    if value is None:
        return None
    value = value.lower()
    if not pattern.fullmatch(value):
        raise InvalidEntity(key, f"expected {description}")
    return value


@attrs.frozen(kw_only=True)
class Event:
    """A meteor (or other) observation, with its files in registration order and its meta."""

    event_id: str = attrs.field(validator=_valid_id)
    camera_id: str = attrs.field(validator=_valid_camera_id)
    event_time: datetime = attrs.field(converter=_time_converter("event_time"))
    event_type: NSString = attrs.field(
        converter=_nsstring_converter("event_type"), validator=_is_nsstring
    )
    status_id: str = attrs.field(validator=_valid_id)
    files: tuple[FileRecord, ...] = attrs.field(
        default=(), converter=_to_tuple, validator=_instances_of(FileRecord)
    )
    meta: tuple[Meta, ...] = attrs.field(
        default=(), converter=_to_tuple, validator=_instances_of(Meta)
    )

    def to_dict(self) -> dict[str, Any]:
        """The wire form."""
        return {
            "event_id": self.event_id,
            "camera_id": self.camera_id,
            "event_time": datetime_to_ms(self.event_time),
            "event_type": str(self.event_type),
            "status_id": self.status_id,
            "files": [f.to_dict() for f in self.files],
            "meta": [m.to_dict() for m in self.meta],
        }

    @classmethod
    def from_dict(cls, d: object) -> Event:
        """Parse and check the wire form."""
        d = _mapping(d)
        return cls(
            event_id=_read_id(d, "event_id"),
            camera_id=_read_camera_id(d, "camera_id"),
            event_time=_read_time(d, "event_time"),
            event_type=_read_nsstring(d, "event_type"),
            status_id=_read_id(d, "status_id"),
            files=_read_items(d, "files", FileRecord.from_dict),
            meta=_read_items(d, "meta", Meta.from_dict),
        )


@attrs.frozen(kw_only=True)
class Location:
    """Where a camera is: degrees north and east, a GPS fix or not, and an error in metres."""

    lat: float = attrs.field(validator=_float_in(-90.0, 90.0))
    long: float = attrs.field(validator=_float_in(-180.0, 180.0))
    gps: bool = attrs.field(validator=_is_bool)
    error: float = attrs.field(validator=_float_in())

    def to_dict(self) -> dict[str, Any]:
        """The wire form."""
        return {"lat": self.lat, "long": self.long, "gps": self.gps, "error": self.error}

    @classmethod
    def from_dict(cls, d: object) -> Location:
        """Parse and check the wire form."""
        d = _mapping(d)
        return cls(
            lat=_read_float(d, "lat", -90.0, 90.0),
            long=_read_float(d, "long", -180.0, 180.0),
            gps=_read_flag(d, "gps"),
            error=_read_float(d, "error"),
        )


@attrs.frozen(kw_only=True)
class Orientation:
    """Where a camera points, in degrees: altitude, azimuth, error, rotation, field width."""

    alt: float = attrs.field(validator=_float_in())
    az: float = attrs.field(validator=_float_in())
    error: float = attrs.field(validator=_float_in())
    rot: float = attrs.field(validator=_float_in())
    width: float = attrs.field(validator=_float_in())

    def to_dict(self) -> dict[str, Any]:
        """The wire form."""
        return {
            "alt": self.alt,
            "az": self.az,
            "error": self.error,
            "rot": self.rot,
            "width": self.width,
        }

    @classmethod
    def from_dict(cls, d: object) -> Orientation:
        """Parse and check the wire form."""
        d = _mapping(d)
        return cls(**{key: _read_float(d, key) for key in ("alt", "az", "error", "rot", "width")})


@attrs.frozen(kw_only=True)
class Point:
    """A vertex of a sky region polygon, in image pixels (origin top left)."""

    x: int = attrs.field(validator=_int_in(0, _INT64_MAX))
    y: int = attrs.field(validator=_int_in(0, _INT64_MAX))

    def to_dict(self) -> dict[str, Any]:
        """The wire form."""
        return {"x": self.x, "y": self.y}

    @classmethod
    def from_dict(cls, d: object) -> Point:
        """Parse and check the wire form."""
        d = _mapping(d)
        return cls(x=_read_int(d, "x", 0, _INT64_MAX), y=_read_int(d, "y", 0, _INT64_MAX))


def _to_regions(value: Any) -> Any:
    """Store regions as a tuple of tuples of points."""
    return tuple(tuple(polygon) for polygon in value)


def _are_regions(instance: object, attribute: attrs.Attribute, value: Any) -> None:
    """An attrs validator requiring polygons of Points."""
    for index, polygon in enumerate(value):
        for vertex, point in enumerate(polygon):
            if not isinstance(point, Point):
                raise InvalidEntity(f"regions[{index}][{vertex}]", "expected a Point")


def _read_polygon(value: object) -> tuple[Point, ...]:
    """One polygon of the wire form: a list of points, naming ``[i]`` in errors."""
    if not isinstance(value, list):
        raise InvalidEntity("", f"expected a list of points, not {_json_type(value)}")
    result = []
    for index, item in enumerate(value):
        try:
            result.append(Point.from_dict(item))
        except InvalidEntity as e:
            raise e.within(f"[{index}]") from None
    return tuple(result)


@attrs.frozen(kw_only=True)
class CameraStatus:
    """
    A camera's set-up from ``valid_from``: hardware, installation, location, orientation and
    the regions of the image that show sky. ``valid_to`` is derived from the next status.
    """

    camera_id: str = attrs.field(validator=_valid_camera_id)
    status_id: str = attrs.field(validator=_valid_id)
    lens: str = attrs.field(validator=_text())
    sensor: str = attrs.field(validator=_text())
    software_version: int = attrs.field(validator=_int_in(0, _INT64_MAX))
    valid_from: datetime = attrs.field(converter=_time_converter("valid_from"))
    location: Location = attrs.field(validator=_instance_of(Location))
    orientation: Orientation = attrs.field(validator=_instance_of(Orientation))
    regions: tuple[tuple[Point, ...], ...] = attrs.field(
        default=(), converter=_to_regions, validator=_are_regions
    )
    inst_url: Optional[str] = attrs.field(default=None, validator=_optional(_text()))
    inst_name: Optional[str] = attrs.field(default=None, validator=_optional(_text()))
    valid_to: Optional[datetime] = attrs.field(
        default=None, converter=_time_converter("valid_to", optional=True)
    )

    def __attrs_post_init__(self) -> None:
        if self.valid_to is not None and self.valid_to < self.valid_from:
            raise InvalidEntity("valid_to", "must not be before valid_from")

    def to_dict(self) -> dict[str, Any]:
        """The wire form."""
        return _omit_none(
            {
                "camera_id": self.camera_id,
                "status_id": self.status_id,
                "lens": self.lens,
                "sensor": self.sensor,
                "inst_url": self.inst_url,
                "inst_name": self.inst_name,
                "software_version": self.software_version,
                "valid_from": datetime_to_ms(self.valid_from),
                "valid_to": _ms_or_none(self.valid_to),
                "location": self.location.to_dict(),
                "orientation": self.orientation.to_dict(),
                "regions": [[p.to_dict() for p in polygon] for polygon in self.regions],
            }
        )

    @classmethod
    def from_dict(cls, d: object) -> CameraStatus:
        """Parse and check the wire form."""
        d = _mapping(d)
        return cls(
            camera_id=_read_camera_id(d, "camera_id"),
            status_id=_read_id(d, "status_id"),
            lens=_read_text(d, "lens"),
            sensor=_read_text(d, "sensor"),
            inst_url=_read_text(d, "inst_url", required=False),
            inst_name=_read_text(d, "inst_name", required=False),
            software_version=_read_int(d, "software_version", 0, _INT64_MAX),
            valid_from=_read_time(d, "valid_from"),
            valid_to=_read_time(d, "valid_to", required=False),
            location=_read_object(d, "location", Location.from_dict),
            orientation=_read_object(d, "orientation", Orientation.from_dict),
            regions=_read_items(d, "regions", _read_polygon),
        )


# Users


def role_mask(roles: Iterable[str]) -> int:
    """The bit mask of a set of roles: user=1, camera_admin=2, import=4."""
    mask = 0
    for role in roles:
        if role not in ROLES:
            raise InvalidEntity("roles", f"unknown role {role!r}")
        mask |= 1 << ROLES.index(role)
    return mask


def roles_from_mask(mask: int) -> frozenset[str]:
    """The roles whose bits are set in mask (unknown bits are ignored)."""
    return frozenset(role for index, role in enumerate(ROLES) if mask & (1 << index))


def _check_user_id(key: str, value: object, max_length: Optional[int]) -> str:
    """A user id: non-empty, no control characters, no ':' (HTTP Basic cannot carry one)."""
    _check_text(key, value, empty=False, controls=False)
    assert isinstance(value, str)
    if ":" in value:
        raise InvalidEntity(key, "must not contain ':'")
    if max_length is not None and len(value) > max_length:
        raise InvalidEntity(key, f"must be at most {max_length} characters")
    return value


def _user_id_validator(max_length: Optional[int]) -> Any:
    """An attrs validator for `_check_user_id`."""

    def validate(instance: object, attribute: attrs.Attribute, value: object) -> None:
        _check_user_id(attribute.name, value, max_length)

    return validate


def _roles_validator(instance: object, attribute: attrs.Attribute, value: Any) -> None:
    """An attrs validator requiring known role names."""
    for role in value:
        if role not in ROLES:
            raise InvalidEntity("roles", f"unknown role {role!r}; roles are {', '.join(ROLES)}")


@attrs.frozen(kw_only=True)
class User:
    """A user of this node and their roles. Passwords are never part of the model."""

    user_id: str = attrs.field(validator=_user_id_validator(40))
    roles: frozenset[str] = attrs.field(converter=frozenset, validator=_roles_validator)

    @property
    def role_mask(self) -> int:
        """The MeteorPi bit mask of the roles."""
        return role_mask(self.roles)

    def has_role(self, role: str) -> bool:
        """Whether the user may act in role."""
        return role in self.roles

    def to_dict(self) -> dict[str, Any]:
        """The wire form: user id, sorted roles and the role mask."""
        return {"user_id": self.user_id, "roles": sorted(self.roles), "role_mask": self.role_mask}

    @classmethod
    def from_dict(cls, d: object) -> User:
        """Parse and check the wire form; ``roles`` wins, an old ``role_mask`` alone is enough."""
        d = _mapping(d)
        user_id = _check_user_id("user_id", _get(d, "user_id"), 40)
        if d.get("roles") is not None:
            roles = _read_roles(d)
            if d.get("role_mask") is not None:
                mask = _read_int(d, "role_mask", 0, 2 ** len(ROLES) - 1)
                if mask != role_mask(roles):
                    raise InvalidEntity("role_mask", "does not match roles")
        elif d.get("role_mask") is not None:
            roles = roles_from_mask(_read_int(d, "role_mask", 0, 2 ** len(ROLES) - 1))
        else:
            raise InvalidEntity("roles", "is required")
        return cls(user_id=user_id, roles=roles)


def _read_roles(d: Mapping[str, Any]) -> frozenset[str]:
    """The list of role names under ``roles``."""
    roles = []
    for index, role in enumerate(_read_list(d, "roles")):
        if role not in ROLES:
            raise InvalidEntity(f"roles[{index}]", f"unknown role; roles are {', '.join(ROLES)}")
        roles.append(role)
    return frozenset(roles)


# Searches


@attrs.frozen(kw_only=True)
class MetaConstraint:
    """
    A condition on one meta item: ``after``/``before`` (dates) and ``greater``/``less``
    (numbers) are inclusive; ``number_equals`` and ``string_equals`` are exact.
    """

    key: NSString = attrs.field(
        converter=_nsstring_converter("key"), validator=_is_nsstring
    )
    type: str = attrs.field(validator=_one_of(*CONSTRAINT_TYPES))
    value: Union[str, float, datetime] = attrs.field()

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "value", _typed_value(self.type, self.value, "value"))

    def to_dict(self) -> dict[str, Any]:
        """The wire form."""
        return {"key": str(self.key), "type": self.type, "value": _value_to_wire(self.value)}

    @classmethod
    def from_dict(cls, d: object) -> MetaConstraint:
        """Parse and check the wire form."""
        d = _mapping(d)
        constraint_type = _read_text(d, "type")
        if constraint_type not in CONSTRAINT_TYPES:
            raise InvalidEntity(
                "type", f"unknown constraint type; one of {', '.join(sorted(CONSTRAINT_TYPES))}"
            )
        key = _read_nsstring(d, "key")
        value = _wire_value(constraint_type, _get(d, "value"), "value")
        return cls(key=key, type=constraint_type, value=value)


def _to_camera_ids(value: Any) -> Any:
    """A single camera id counts as a one-element list."""
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def _camera_ids_validator(instance: object, attribute: attrs.Attribute, value: Any) -> None:
    """An attrs validator for a non-empty tuple of camera ids (or None)."""
    if value is None:
        return
    if not value:
        raise InvalidEntity("camera_ids", "must not be empty (omit it to search every camera)")
    for index, camera_id in enumerate(value):
        if not isinstance(camera_id, str) or not _CAMERA_ID.fullmatch(camera_id):
            raise InvalidEntity(f"camera_ids[{index}]", "expected a camera id")


_optional_float = _optional(_float_in())


def _check_offset(key: str, value: object) -> float:
    """An offset in seconds since 12:00 UTC, in [0, 86400)."""
    offset = _check_float(key, value)
    if not 0 <= offset < 86400:
        raise InvalidEntity(key, "must be at least 0 and less than 86400 (seconds since 12:00 UTC)")
    return offset


def _offset_validator(instance: object, attribute: attrs.Attribute, value: object) -> None:
    """An attrs validator for an optional `_check_offset`."""
    if value is not None:
        _check_offset(attribute.name, value)


@attrs.frozen(kw_only=True)
class _Search:
    """The keys and rules shared by event and file searches."""

    camera_ids: Optional[tuple[str, ...]] = attrs.field(
        default=None, converter=_to_camera_ids, validator=_camera_ids_validator
    )
    lat_min: Optional[float] = attrs.field(default=None, validator=_optional_float)
    lat_max: Optional[float] = attrs.field(default=None, validator=_optional_float)
    long_min: Optional[float] = attrs.field(default=None, validator=_optional_float)
    long_max: Optional[float] = attrs.field(default=None, validator=_optional_float)
    after: Optional[datetime] = attrs.field(
        default=None, converter=_time_converter("after", optional=True)
    )
    before: Optional[datetime] = attrs.field(
        default=None, converter=_time_converter("before", optional=True)
    )
    after_offset: Optional[float] = attrs.field(default=None, validator=_offset_validator)
    before_offset: Optional[float] = attrs.field(default=None, validator=_offset_validator)
    meta: tuple[MetaConstraint, ...] = attrs.field(
        default=(), converter=_to_tuple, validator=_instances_of(MetaConstraint)
    )
    limit: int = attrs.field(default=DEFAULT_LIMIT, validator=_int_in(0, _INT64_MAX))
    skip: int = attrs.field(default=0, validator=_int_in(0, _INT64_MAX))
    exclude_imported: bool = attrs.field(default=False, validator=_is_bool)
    exclude_export_to: Optional[str] = attrs.field(default=None, validator=_optional(_valid_id))

    def __attrs_post_init__(self) -> None:
        if len(self.meta) > MAX_META_CONSTRAINTS:
            raise InvalidEntity("meta", f"at most {MAX_META_CONSTRAINTS} constraints")
        for low, high in (
            ("lat_min", "lat_max"),
            ("long_min", "long_max"),
            ("after", "before"),
            ("after_offset", "before_offset"),
        ):
            low_value, high_value = getattr(self, low), getattr(self, high)
            if low_value is not None and high_value is not None and high_value < low_value:
                raise InvalidEntity(high, f"must not be less than {low}")

    def _common_dict(self) -> dict[str, Any]:
        """The wire form of the shared keys: absent ones omitted, flags only when set."""
        return {
            "camera_ids": None if self.camera_ids is None else list(self.camera_ids),
            "lat_min": self.lat_min,
            "lat_max": self.lat_max,
            "long_min": self.long_min,
            "long_max": self.long_max,
            "after": _ms_or_none(self.after),
            "before": _ms_or_none(self.before),
            "after_offset": self.after_offset,
            "before_offset": self.before_offset,
            "meta": [c.to_dict() for c in self.meta],
            "limit": self.limit,
            "skip": self.skip,
            "exclude_imported": True if self.exclude_imported else None,
            "exclude_export_to": self.exclude_export_to,
        }

    @staticmethod
    def _read_common(d: Mapping[str, Any], max_limit: Optional[int]) -> dict[str, Any]:
        """The shared keys of a search's wire form as constructor arguments."""
        limit = _read_int(d, "limit", 0, _INT64_MAX, required=False)
        if limit is None:
            limit = DEFAULT_LIMIT
        if max_limit is not None and (limit == 0 or limit > max_limit):
            raise InvalidEntity("limit", f"must be between 1 and {max_limit}")
        skip = _read_int(d, "skip", 0, _INT64_MAX, required=False)
        return {
            "camera_ids": _read_camera_ids(d),
            "lat_min": _read_float(d, "lat_min", required=False),
            "lat_max": _read_float(d, "lat_max", required=False),
            "long_min": _read_float(d, "long_min", required=False),
            "long_max": _read_float(d, "long_max", required=False),
            "after": _read_time(d, "after", required=False),
            "before": _read_time(d, "before", required=False),
            "after_offset": _read_offset(d, "after_offset"),
            "before_offset": _read_offset(d, "before_offset"),
            "meta": _read_items(d, "meta", MetaConstraint.from_dict, required=False),
            "limit": limit,
            "skip": 0 if skip is None else skip,
            "exclude_imported": _read_flag(d, "exclude_imported"),
            "exclude_export_to": _read_id(d, "exclude_export_to", required=False),
        }


def _read_offset(d: Mapping[str, Any], key: str) -> Optional[float]:
    """An optional offset in seconds since 12:00 UTC."""
    value = d.get(key)
    return None if value is None else _check_offset(key, value)


def _read_camera_ids(d: Mapping[str, Any]) -> Optional[tuple[str, ...]]:
    """``camera_ids``: a list of camera ids, or one camera id as a string."""
    value = d.get("camera_ids")
    if value is None:
        return None
    if isinstance(value, str):
        return (parse_camera_id(value, "camera_ids"),)
    if not isinstance(value, list):
        raise InvalidEntity("camera_ids", f"expected a list of camera ids, not {_json_type(value)}")
    if not value:
        raise InvalidEntity("camera_ids", "must not be empty (omit it to search every camera)")
    return tuple(parse_camera_id(item, f"camera_ids[{i}]") for i, item in enumerate(value))


@attrs.frozen(kw_only=True)
class EventSearch(_Search):
    """What to look for among events; every key left unset matches everything."""

    event_type: Optional[NSString] = attrs.field(
        default=None, converter=_nsstring_converter("event_type"), validator=_optional(_is_nsstring)
    )

    def to_dict(self) -> dict[str, Any]:
        """The wire form."""
        d = self._common_dict()
        d["event_type"] = None if self.event_type is None else str(self.event_type)
        return _omit_none(d)

    @classmethod
    def from_dict(cls, d: object, max_limit: Optional[int] = MAX_LIMIT) -> EventSearch:
        """
        Parse and check the wire form; unknown keys are ignored. ``max_limit`` is the largest
        ``limit`` allowed (None: no maximum, and 0 for "no limit" is allowed).
        """
        d = _mapping(d)
        return cls(
            event_type=_read_nsstring(d, "event_type", required=False),
            **cls._read_common(d, max_limit),
        )


@attrs.frozen(kw_only=True)
class FileRecordSearch(_Search):
    """What to look for among files; every key left unset matches everything."""

    mime_type: Optional[str] = attrs.field(
        default=None, validator=_optional(_text(empty=False, controls=False))
    )
    semantic_type: Optional[NSString] = attrs.field(
        default=None,
        converter=_nsstring_converter("semantic_type"),
        validator=_optional(_is_nsstring),
    )
    exclude_events: bool = attrs.field(default=False, validator=_is_bool)

    def to_dict(self) -> dict[str, Any]:
        """The wire form."""
        d = self._common_dict()
        d["mime_type"] = self.mime_type
        d["semantic_type"] = None if self.semantic_type is None else str(self.semantic_type)
        d["exclude_events"] = True if self.exclude_events else None
        return _omit_none(d)

    @classmethod
    def from_dict(cls, d: object, max_limit: Optional[int] = MAX_LIMIT) -> FileRecordSearch:
        """
        Parse and check the wire form; unknown keys are ignored. ``max_limit`` is the largest
        ``limit`` allowed (None: no maximum, and 0 for "no limit" is allowed).
        """
        d = _mapping(d)
        return cls(
            mime_type=_read_text(d, "mime_type", required=False, empty=False, controls=False),
            semantic_type=_read_nsstring(d, "semantic_type", required=False),
            exclude_events=_read_flag(d, "exclude_events"),
            **cls._read_common(d, max_limit),
        )


# Export configurations


@attrs.frozen(kw_only=True)
class TimeWindow:
    """
    A daily UTC time window ``HH:MM-HH:MM`` in which an export may run; ``start`` and ``end``
    are minutes of the day, and a start after the end wraps past midnight.
    """

    start: int = attrs.field(validator=_int_in(0, 1439))
    end: int = attrs.field(validator=_int_in(1, 1440))

    def __attrs_post_init__(self) -> None:
        if self.start == self.end:
            raise InvalidEntity("window", "start and end must differ (use 00:00-24:00 for all day)")

    def __str__(self) -> str:
        return "%02d:%02d-%02d:%02d" % (*divmod(self.start, 60), *divmod(self.end, 60))

    def contains(self, ms: int) -> bool:
        """Whether the time ``ms`` (milliseconds since the epoch) lies inside this window."""
        of_day = ms % _DAY_MS
        start, end = self.start * 60_000, self.end * 60_000
        if start < end:
            return start <= of_day < end
        return of_day >= start or of_day < end

    @classmethod
    def parse(cls, text: object, key: str = "window") -> TimeWindow:
        """Parse ``HH:MM-HH:MM``; raise InvalidEntity naming ``key`` if it is not one."""
        match = _WINDOW.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise InvalidEntity(key, "expected a time window HH:MM-HH:MM (UTC)")
        start_h, start_m, end_h, end_m = (int(part) for part in match.groups())
        start, end = start_h * 60 + start_m, end_h * 60 + end_m
        if start_h > 23 or start_m > 59 or end_m > 59 or end > 1440 or end == 0:
            raise InvalidEntity(key, "hours run 00-23 (24:00 only as an end), minutes 00-59")
        if start == end:
            raise InvalidEntity(key, "start and end must differ (use 00:00-24:00 for all day)")
        return cls(start=start, end=end)


def _check_target_url(key: str, value: object) -> str:
    """An http or https URL with a host, no credentials and no control characters."""
    _check_text(key, value, empty=False, controls=False)
    assert isinstance(value, str)
    try:
        parts = urlsplit(value)
        parts.port
    except ValueError as e:
        raise InvalidEntity(key, f"not a valid URL ({e})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidEntity(key, "expected an http:// or https:// URL with a host")
    if " " in value:
        raise InvalidEntity(key, "must not contain spaces")
    if parts.username is not None or parts.password is not None:
        raise InvalidEntity(key, "must not contain credentials (use user_id and password)")
    return value


def _target_url_validator(instance: object, attribute: attrs.Attribute, value: object) -> None:
    """An attrs validator for `_check_target_url`."""
    _check_target_url(attribute.name, value)


def _check_ca_file(key: str, value: object) -> str:
    """An absolute path (checked as text only: the model does no I/O)."""
    _check_text(key, value, empty=False, controls=False)
    assert isinstance(value, str)
    if not os.path.isabs(value):
        raise InvalidEntity(key, "must be an absolute path")
    return value


def _ca_file_validator(instance: object, attribute: attrs.Attribute, value: object) -> None:
    """An attrs validator for `_check_ca_file`."""
    _check_ca_file(attribute.name, value)


def _to_fingerprints(value: Any) -> Any:
    """Pins as a sorted tuple of lowercase hex without separators; None stays None."""
    if value is None:
        return None
    key = "pinned_certificates"
    if not isinstance(value, (list, tuple, set, frozenset)):
        raise InvalidEntity(key, f"expected a list of fingerprints, not {_json_type(value)}")
    if not value:
        raise InvalidEntity(key, "must not be empty (omit it to verify against CA roots only)")
    pins = set()
    for index, item in enumerate(value):
        if not isinstance(item, str) or not _FINGERPRINT.fullmatch(item):
            raise InvalidEntity(f"{key}[{index}]", "expected a SHA-256 fingerprint: 64 hex "
                                "digits, optionally separated by ':' after every two")
        pins.add(item.replace(":", "").lower())
    return tuple(sorted(pins))


def _to_windows(value: Any) -> Any:
    """Windows as a tuple; their text form is accepted too."""
    if value is None:
        return None
    return tuple(TimeWindow.parse(w) if isinstance(w, str) else w for w in value)


def _windows_validator(instance: object, attribute: attrs.Attribute, value: Any) -> None:
    """An attrs validator for a non-empty tuple of TimeWindows (or None)."""
    if value is None:
        return
    if not value:
        raise InvalidEntity("window", "must not be empty (omit it to allow every hour)")
    for index, window in enumerate(value):
        if not isinstance(window, TimeWindow):
            raise InvalidEntity(f"window[{index}]", "expected a TimeWindow")


@attrs.frozen(kw_only=True)
class ExportConfiguration:
    """
    What to push to another node's import API (an event or file search), where, with which
    credentials, and when. The password is write-only: outputs carry ``"password": ""``.
    """

    config_id: str = attrs.field(validator=_valid_id)
    type: str = attrs.field(validator=_one_of("event", "file"))
    target_url: str = attrs.field(validator=_target_url_validator)
    user_id: str = attrs.field(validator=_user_id_validator(None))
    password: str = attrs.field(validator=_text(), repr=False)
    search: Union[EventSearch, FileRecordSearch] = attrs.field()
    config_name: str = attrs.field(validator=_text())
    config_description: str = attrs.field(validator=_text())
    enabled: bool = attrs.field(default=False, validator=_is_bool)
    window: Optional[tuple[TimeWindow, ...]] = attrs.field(
        default=None, converter=_to_windows, validator=_windows_validator
    )
    max_bytes_per_second: Optional[int] = attrs.field(
        default=None, validator=_optional(_int_in(1, _INT64_MAX))
    )
    priority: Optional[int] = attrs.field(
        default=None, validator=_optional(_int_in(-_INT64_MAX - 1, _INT64_MAX))
    )
    ca_file: Optional[str] = attrs.field(default=None, validator=_optional(_ca_file_validator))
    pinned_certificates: Optional[tuple[str, ...]] = attrs.field(
        default=None, converter=_to_fingerprints
    )

    def __attrs_post_init__(self) -> None:
        expected = EventSearch if self.type == "event" else FileRecordSearch
        if type(self.search) is not expected:
            raise InvalidEntity("search", f"a {self.type} export needs a {expected.__name__}")
        if urlsplit(self.target_url).scheme != "https":
            for key in ("ca_file", "pinned_certificates"):
                if getattr(self, key) is not None:
                    raise InvalidEntity(key, "only applies to an https:// target_url")

    def in_window(self, ms: int) -> bool:
        """Whether an export may run at ``ms``: inside any window, or always without one."""
        return self.window is None or any(w.contains(ms) for w in self.window)

    def to_dict(self, include_password: bool = False) -> dict[str, Any]:
        """
        The wire form. The password is blanked unless ``include_password`` (only for the
        node's own storage, never for a response).
        """
        return _omit_none(
            {
                "config_id": self.config_id,
                "type": self.type,
                "target_url": self.target_url,
                "user_id": self.user_id,
                "password": self.password if include_password else "",
                "search": self.search.to_dict(),
                "config_name": self.config_name,
                "config_description": self.config_description,
                "enabled": self.enabled,
                "window": None if self.window is None else [str(w) for w in self.window],
                "max_bytes_per_second": self.max_bytes_per_second,
                "priority": self.priority,
                "ca_file": self.ca_file,
                "pinned_certificates": (
                    None if self.pinned_certificates is None else list(self.pinned_certificates)
                ),
            }
        )

    @classmethod
    def from_dict(cls, d: object) -> ExportConfiguration:
        """
        Parse and check the wire form. An absent password reads as ``""`` (the admin API then
        keeps the stored one); the search's ``limit`` and ``skip`` are not bounded here, since
        marking ignores them.
        """
        d = _mapping(d)
        export_type = _read_text(d, "type")
        if export_type not in ("event", "file"):
            raise InvalidEntity("type", "must be 'event' or 'file'")
        search_class = EventSearch if export_type == "event" else FileRecordSearch
        window = d.get("window")
        if window is not None:
            window = _read_windows(d)
        password = _read_text(d, "password", required=False)
        return cls(
            config_id=_read_id(d, "config_id"),
            type=export_type,
            target_url=_check_target_url("target_url", _get(d, "target_url")),
            user_id=_check_user_id("user_id", _get(d, "user_id"), None),
            password="" if password is None else password,
            search=_read_object(d, "search", lambda s: search_class.from_dict(s, max_limit=None)),
            config_name=_read_text(d, "config_name"),
            config_description=_read_text(d, "config_description"),
            enabled=_read_flag(d, "enabled"),
            window=window,
            max_bytes_per_second=_read_int(d, "max_bytes_per_second", 1, _INT64_MAX, False),
            priority=_read_int(d, "priority", -_INT64_MAX - 1, _INT64_MAX, False),
            ca_file=_read_ca_file(d),
            pinned_certificates=_read_pins(d),
        )


def _read_ca_file(d: Mapping[str, Any]) -> Optional[str]:
    """``ca_file``: an absolute path, or None when absent."""
    value = _get(d, "ca_file", required=False)
    return None if value is _ABSENT else _check_ca_file("ca_file", value)


def _read_pins(d: Mapping[str, Any]) -> Optional[tuple[str, ...]]:
    """``pinned_certificates``: normalised fingerprints, or None when absent."""
    value = _get(d, "pinned_certificates", required=False)
    return None if value is _ABSENT else _to_fingerprints(value)


def _read_windows(d: Mapping[str, Any]) -> tuple[TimeWindow, ...]:
    """``window``: a non-empty list of ``HH:MM-HH:MM`` strings."""
    items = _read_list(d, "window")
    if not items:
        raise InvalidEntity("window", "must not be empty (omit it to allow every hour)")
    return tuple(TimeWindow.parse(item, f"window[{i}]") for i, item in enumerate(items))


# Export bookkeeping


@attrs.frozen(kw_only=True)
class ExportTask:
    """
    One queued export of one entity under one export configuration, as claimed by the
    exporter: ``attempts`` counts the claims so far, this one included.
    """

    task_id: int = attrs.field(validator=_int_in(1, _INT64_MAX))
    config_id: str = attrs.field(validator=_valid_id)
    kind: str = attrs.field(validator=_one_of("event", "file"))
    entity: Union[Event, FileRecord] = attrs.field()
    attempts: int = attrs.field(validator=_int_in(0, _INT64_MAX))

    def __attrs_post_init__(self) -> None:
        expected = Event if self.kind == "event" else FileRecord
        if type(self.entity) is not expected:
            raise InvalidEntity("entity", f"a {self.kind} task needs a {expected.__name__}")

    @property
    def entity_id(self) -> str:
        """The public id of the entity (event_id or file_id), for logs."""
        if isinstance(self.entity, Event):
            return self.entity.event_id
        return self.entity.file_id


@attrs.frozen(kw_only=True)
class ExportOutcome:
    """
    The failure accounting of an export configuration as the exporter stores it after a
    round trip (see ``meteord.exporter.policy.FailureAccount``). ``last_error`` and
    ``last_success`` of None leave the stored values as they are: they record the most recent
    error and success ever seen, not the current state.
    """

    consecutive_failures: int = attrs.field(default=0, validator=_int_in(0, _INT64_MAX))
    deferred_until: Optional[datetime] = attrs.field(
        default=None, converter=_time_converter("deferred_until", optional=True)
    )
    enabled: bool = attrs.field(default=True, validator=_is_bool)
    disabled_reason: Optional[str] = attrs.field(default=None, validator=_optional(_text()))
    last_error: Optional[str] = attrs.field(default=None, validator=_optional(_text()))
    last_success: Optional[datetime] = attrs.field(
        default=None, converter=_time_converter("last_success", optional=True)
    )


@attrs.frozen(kw_only=True)
class ExportStatus:
    """
    What an operator sees of one export configuration: task counts by state, the oldest
    pending task's queueing time, the failure accounting and the bytes sent so far.
    ``next_attempt`` is the earliest due time of a pending task; ``deferred_until`` (kept for
    the exporter, not part of the wire form) is the stored back-off.
    """

    config_id: str = attrs.field(validator=_valid_id)
    enabled: bool = attrs.field(validator=_is_bool)
    pending: int = attrs.field(default=0, validator=_int_in(0, _INT64_MAX))
    done: int = attrs.field(default=0, validator=_int_in(0, _INT64_MAX))
    failed: int = attrs.field(default=0, validator=_int_in(0, _INT64_MAX))
    oldest_pending: Optional[datetime] = attrs.field(
        default=None, converter=_time_converter("oldest_pending", optional=True)
    )
    consecutive_failures: int = attrs.field(default=0, validator=_int_in(0, _INT64_MAX))
    last_success: Optional[datetime] = attrs.field(
        default=None, converter=_time_converter("last_success", optional=True)
    )
    last_error: Optional[str] = attrs.field(default=None, validator=_optional(_text()))
    next_attempt: Optional[datetime] = attrs.field(
        default=None, converter=_time_converter("next_attempt", optional=True)
    )
    bytes_sent: int = attrs.field(default=0, validator=_int_in(0, _INT64_MAX))
    disabled_reason: Optional[str] = attrs.field(default=None, validator=_optional(_text()))
    deferred_until: Optional[datetime] = attrs.field(
        default=None, converter=_time_converter("deferred_until", optional=True)
    )

    def outcome(self) -> ExportOutcome:
        """The stored failure accounting, for the exporter to update and store again."""
        return ExportOutcome(
            consecutive_failures=self.consecutive_failures,
            deferred_until=self.deferred_until,
            enabled=self.enabled,
            disabled_reason=self.disabled_reason,
            last_error=self.last_error,
            last_success=self.last_success,
        )

    def to_dict(self) -> dict[str, Any]:
        """The wire form of ``GET /export/{config_id}/status``; unknown values are omitted."""
        return _omit_none(
            {
                "config_id": self.config_id,
                "enabled": self.enabled,
                "pending": self.pending,
                "done": self.done,
                "failed": self.failed,
                "oldest_pending_ms": _ms_or_none(self.oldest_pending),
                "consecutive_failures": self.consecutive_failures,
                "last_success": _ms_or_none(self.last_success),
                "last_error": self.last_error,
                "next_attempt": _ms_or_none(self.next_attempt),
                "bytes_sent": self.bytes_sent,
                "disabled_reason": self.disabled_reason,
            }
        )
