"""
JSON encoding and decoding for everything meteord sends or receives, and the one header meteord
adds to the MeteorPi import protocol (`ENTITY_HEADER`).

The published MeteorPi client parses responses with a YAML 1.1 parser, which reads ``1e-05``
as a string, so floats are written in positional notation and always with a ``.`` (or as an
integral ``100.0``); the value still parses back to exactly the same float. Decoding is strict:
UTF-8 only, no ``NaN``/``Infinity``, no number that overflows to infinity, no duplicate keys.
"""

from __future__ import annotations

import enum
import json
import math
import re
import uuid
from decimal import Decimal
from typing import Any, Callable

try:
    import orjson
except ImportError:  # no wheel for this machine (setup.py leaves it out on armv6)
    orjson = None

__all__ = ["ENTITY_HEADER", "InvalidJSON", "decode_json", "encode_json", "format_float"]

# Sent by meteord's exporter with each upload: the id of the entity the file is uploaded for,
# so that meteord's importer can store that entity with its last file and answer ``complete``
# (see ``meteord.web.importer``). Other importers ignore it.
ENTITY_HEADER = "Meteord-Entity"

_encode_string: Callable[[str], str] = json.encoder.encode_basestring  # type: ignore[attr-defined]

# Documents are written by orjson (ten times faster than the standard library's C encoder,
# which takes its place where orjson is not installed). Either writes floats from 1e16 up, and
# small ones, with an exponent (``1e+16``), and orjson writes NaN and infinity as ``null`` and
# refuses keys that are not strings: when the output holds an exponent or a ``null`` (or text
# that merely looks like one), or the fast encoder refuses the value, the document is written
# again by ``_encode``, which raises for what JSON cannot carry.
_ORJSON_OPTIONS = (orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
                   if orjson is not None else 0)
_EXPONENT = re.compile(rb"[0-9]e[-+]")
_encode_key = json.JSONEncoder(allow_nan=False).encode
_encode_stdlib = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False, check_circular=False).encode


class InvalidJSON(ValueError):
    """
    The bytes received are not one strict JSON document (bad UTF-8, bad syntax, a non-finite
    number or a duplicated key).
    """


def format_float(value: float) -> str:
    """
    Write a finite float as YAML-1.1-safe JSON: the shortest digits that round-trip
    (``repr``), never an exponent, always a ``.``.
    """
    if not math.isfinite(value):
        raise ValueError(f"cannot encode non-finite float {value!r} as JSON")
    text = float.__repr__(value)
    if "e" in text or "E" in text:
        # Decimal(repr) is exactly the shortest round-tripping decimal, so the positional form
        # denotes the same number and parses back to the same float.
        text = format(Decimal(text), "f")
    if "." not in text:
        text += ".0"
    return text


def _encode(value: Any, out: list[str]) -> None:
    """Append the JSON text of value to out."""
    if isinstance(value, str):
        out.append(_encode_string(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(int.__repr__(value))
    elif isinstance(value, float):
        out.append(format_float(value))
    elif isinstance(value, dict):
        out.append("{")
        first = True
        for key, item in value.items():
            if not isinstance(key, str):
                if not isinstance(key, (int, float)) and key is not None:
                    raise TypeError(f"JSON object keys must be strings, not {type(key).__name__}")
                key = _encode_key(key)
            if not first:
                out.append(",")
            first = False
            out.append(_encode_string(key))
            out.append(":")
            _encode(item, out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _encode(item, out)
        out.append("]")
    elif isinstance(value, enum.Enum):
        _encode(value.value, out)
    elif isinstance(value, uuid.UUID):
        out.append(_encode_string(str(value)))
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def encode_json(value: object) -> bytes:
    """
    Encode dicts, lists, tuples, strings, ints, floats, booleans and None as compact UTF-8
    JSON with YAML-1.1-safe floats. Raises ValueError for NaN or infinity and TypeError for
    sets, bytes, datetimes and other objects; enums are written as their value and UUIDs as
    strings, and object keys that are numbers, booleans or None as strings, as the ``json``
    module does.
    """
    data = _encode_fast(value)
    if (data is None or b"null" in data
            or ((b"e-" in data or b"e+" in data) and _EXPONENT.search(data) is not None)):
        out: list[str] = []
        _encode(value, out)
        return "".join(out).encode("utf-8")
    return data


def _encode_fast(value: object) -> bytes | None:
    """The document as orjson (or else the standard library) writes it; None if refused."""
    if orjson is not None:
        try:
            return orjson.dumps(value, option=_ORJSON_OPTIONS)
        except TypeError:
            return None
    try:
        return _encode_stdlib(value).encode("utf-8")
    except (ValueError, TypeError, RecursionError):
        return None


def _refuse_constant(name: str) -> None:
    """Refuse the non-standard NaN, Infinity and -Infinity literals."""
    raise InvalidJSON(f"Invalid JSON: {name} is not allowed")


def _finite_float(text: str) -> float:
    """Parse a JSON number with a fraction or exponent, refusing ones that overflow."""
    value = float(text)
    if not math.isfinite(value):
        raise InvalidJSON(f"Invalid JSON: the number {text} is out of range")
    return value


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Build an object, refusing a key that appears twice (which value wins is ambiguous)."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidJSON(f"Invalid JSON: duplicate key {key!r}")
        result[key] = value
    return result


def decode_json(data: bytes) -> object:
    """
    Decode one strict JSON document from UTF-8 bytes; raise InvalidJSON with a clear
    message for anything else.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode_json needs bytes, not {type(data).__name__}")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidJSON(f"Invalid JSON: not UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        return json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            object_pairs_hook=_unique_object,
        )
    except InvalidJSON:
        raise
    except json.JSONDecodeError as e:
        raise InvalidJSON(f"Invalid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise InvalidJSON("Invalid JSON: nested too deeply") from None
    except ValueError as e:
        # e.g. an integer literal longer than Python's int-conversion digit limit
        raise InvalidJSON(f"Invalid JSON: {e}") from None
