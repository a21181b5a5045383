"""
The discovery beacon: encoding, signing, decoding and validation of one UDP datagram.

Pure code, no I/O and no reactor, so that every rule of the wire format can be tested with
crafted bytes and the protocol can drop junk cheaply: the length is checked before anything is
decoded, and every rejection is a `BeaconRejected` carrying one of the short `REASON_*` strings,
which the protocol counts and the metrics layer exposes.

Choices where the specification is silent:

- A datagram without `proto` counts as `wrong_proto`, like one of another protocol.
- Every kind (`announce`, `probe`, `bye`) carries every key: a probe or a bye also describes
  its sender, so listeners can record it.
- Unknown extra keys are ignored (a later protocol revision may add some), but they are covered
  by the signature like every other key. Without a configured secret, `sig` is not checked.
- Limits: `node_id` is a camera id (1-64 of `[A-Za-z0-9_.:-]`), `name` and `version` 1-64
  printable characters, `boot` 1-64 lowercase hex characters, `roles` distinct known
  roles, `seq` and `sent_at` in 0..2**63-1, `interval` a finite number in 0.1..86400 seconds,
  `sig` 64 lowercase hex characters.
- A datagram holding more than 192 `[` and `{` bytes (in strings or not) counts as
  `not_json` without being parsed: no beacon needs that many, and parsing deep nesting is slow.
- `sent_at` is checked against the local clock (60 s either way) only when a secret is set:
  without one nothing stops forgery, so clock drift is tolerated rather than enforced.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from typing import Any, Callable

import attrs

PROTO = "meteord-discovery/1"
MAX_DATAGRAM_BYTES = 1200
DEFAULT_PORT = 47623
MAX_SKEW_MS = 60_000

KIND_ANNOUNCE = "announce"
KIND_PROBE = "probe"
KIND_BYE = "bye"
KINDS = frozenset({KIND_ANNOUNCE, KIND_PROBE, KIND_BYE})

ROLES = frozenset({"camera", "hub", "query", "admin", "import"})
SCHEMES = frozenset({"http", "https"})

# Never raised here: the kernel dropped the datagram before it was read (see discovery.py).
REASON_SOCKET_BUFFER_FULL = "socket_buffer_full"
REASON_OVERSIZE = "oversize"
REASON_NOT_UTF8 = "not_utf8"
REASON_NOT_JSON = "not_json"
REASON_NOT_OBJECT = "not_object"
REASON_WRONG_PROTO = "wrong_proto"
REASON_MISSING_KEY = "missing_key"
REASON_WRONG_TYPE = "wrong_type"
REASON_OUT_OF_RANGE = "out_of_range"
REASON_OWN_ID = "own_id"
REASON_UNSIGNED = "unsigned"
REASON_BAD_SIGNATURE = "bad_signature"
REASON_SKEW = "skew"
REASON_REPLAY = "replay"
REASON_REGISTRY_FULL = "registry_full"

#: Every reason a datagram can be dropped for, in the order the checks run; the metrics layer
#: can create one labelled series per reason up front.
DROP_REASONS = (
    REASON_SOCKET_BUFFER_FULL,
    REASON_OVERSIZE,
    REASON_NOT_UTF8,
    REASON_NOT_JSON,
    REASON_NOT_OBJECT,
    REASON_WRONG_PROTO,
    REASON_MISSING_KEY,
    REASON_WRONG_TYPE,
    REASON_OUT_OF_RANGE,
    REASON_OWN_ID,
    REASON_UNSIGNED,
    REASON_BAD_SIGNATURE,
    REASON_SKEW,
    REASON_REPLAY,
    REASON_REGISTRY_FULL,
)

_MAX_INT = 2**63 - 1
# Parsing costs time in proportion to nesting depth (and raises RecursionError past ~1,000), so
# datagrams with more "[" and "{" than a beacon can hold are refused before parsing; counting
# bytes is cheap. A beacon needs 2, and 64-character name and version made of brackets 128 more.
_MAX_OPENERS = 192
_NODE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}\Z")
_BOOT = re.compile(r"[0-9a-f]{1,64}\Z")
_SIG = re.compile(r"[0-9a-f]{64}\Z")


class BeaconRejected(Exception):
    """
    A datagram that is not an acceptable beacon.

    @ivar reason: one of the C{REASON_*} constants, used as a metrics label.
    @ivar detail: a short human explanation (the key at fault, for instance) for debug logs.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


@attrs.frozen
class Beacon:
    """One decoded, validated beacon (the `proto` and `sig` keys are not kept)."""

    kind: str
    node_id: str
    name: str
    roles: tuple[str, ...]
    http_port: int
    scheme: str
    version: str
    seq: int
    boot: str
    sent_at: int
    interval: float

    def to_json(self) -> dict[str, Any]:
        """The wire object of this beacon, without a signature."""
        return {
            "proto": PROTO,
            "kind": self.kind,
            "node_id": self.node_id,
            "name": self.name,
            "roles": list(self.roles),
            "http_port": self.http_port,
            "scheme": self.scheme,
            "version": self.version,
            "seq": self.seq,
            "boot": self.boot,
            "sent_at": self.sent_at,
            "interval": self.interval,
        }


def _is_int(value: object) -> bool:
    return type(value) is int


def _is_number(value: object) -> bool:
    return type(value) is int or type(value) is float


def _is_str(value: object) -> bool:
    return type(value) is str


def _is_list(value: object) -> bool:
    return type(value) is list


def _valid_roles(roles: list[object]) -> bool:
    return (
        len(roles) <= len(ROLES)
        and all(type(role) is str and role in ROLES for role in roles)
        and len(set(roles)) == len(roles)  # type: ignore[arg-type]
    )


def _valid_text(value: str) -> bool:
    # isprintable() also refuses lone surrogates (from JSON escapes such as \ud800), which the
    # HTTP layer could not write back out as UTF-8.
    return 1 <= len(value) <= 64 and value.isprintable()


def _valid_interval(value: float) -> bool:
    return math.isfinite(value) and 0.1 <= value <= 86400


# (key, type check, range check), in the order they are validated.
_FIELDS: tuple[tuple[str, Callable[[Any], bool], Callable[[Any], bool]], ...] = (
    ("kind", _is_str, KINDS.__contains__),
    ("node_id", _is_str, lambda v: _NODE_ID.match(v) is not None),
    ("name", _is_str, _valid_text),
    ("roles", _is_list, _valid_roles),
    ("http_port", _is_int, lambda v: 1 <= v <= 65535),
    ("scheme", _is_str, SCHEMES.__contains__),
    ("version", _is_str, _valid_text),
    ("seq", _is_int, lambda v: 0 <= v <= _MAX_INT),
    ("boot", _is_str, lambda v: _BOOT.match(v) is not None),
    ("sent_at", _is_int, lambda v: 0 <= v <= _MAX_INT),
    ("interval", _is_number, _valid_interval),
)


def _refuse_constant(name: str) -> None:
    """Refuse C{NaN} and C{Infinity}, which Python's JSON parser accepts but JSON does not."""
    raise ValueError(name)


# Built once: json.dumps and json.loads build a new coder at every call with non-default
# options, which costs as much as the coding itself for a beacon.
_CANONICAL_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def canonical_json(obj: dict[str, Any]) -> bytes:
    """The canonical form that signatures cover: sorted keys, no spaces, UTF-8."""
    text = _CANONICAL_ENCODER.encode(obj)
    # Unknown keys may hold lone surrogates; "surrogatepass" keeps signing total (such a beacon
    # simply fails verification) instead of raising.
    return text.encode("utf-8", "surrogatepass")


def sign(obj: dict[str, Any], secret: bytes) -> str:
    """The hex HMAC-SHA256 of the canonical JSON of every key of C{obj} except C{sig}."""
    unsigned = {key: value for key, value in obj.items() if key != "sig"}
    return hmac.new(secret, canonical_json(unsigned), hashlib.sha256).hexdigest()


def encode_beacon(beacon: Beacon, secret: bytes | None = None) -> bytes:
    """
    The datagram for C{beacon}, signed when C{secret} is given.

    @raise ValueError: the beacon would not be accepted by a listener (a field out of range or
        the datagram over L{MAX_DATAGRAM_BYTES}); a node must not send what it would drop.
    """
    obj = beacon.to_json()
    for key, type_ok, range_ok in _FIELDS:
        if not (type_ok(obj[key]) and range_ok(obj[key])):
            raise ValueError(f"beacon field {key!r} is invalid: {obj[key]!r}")
    if secret:
        obj["sig"] = sign(obj, secret)
    data = canonical_json(obj)
    if len(data) > MAX_DATAGRAM_BYTES:
        raise ValueError(f"beacon is {len(data)} bytes, over {MAX_DATAGRAM_BYTES}")
    return data


def decode_beacon(
    data: bytes,
    now_ms: int,
    own_node_id: str | None = None,
    secret: bytes | None = None,
) -> Beacon:
    """
    Validate one datagram and return its beacon.

    Replays and a full registry are not judged here: they depend on what the registry holds
    (see L{meteord.protocols.registry.NodeRegistry.observe}).

    @param now_ms: the local clock, ms since the epoch, for the skew check.
    @param own_node_id: this node's id; its own beacons are rejected.
    @param secret: the network secret; when set, only correctly signed beacons pass.
    @raise BeaconRejected: for anything else than an acceptable beacon.
    """
    if len(data) > MAX_DATAGRAM_BYTES:
        raise BeaconRejected(REASON_OVERSIZE, f"{len(data)} bytes")
    if data.count(b"[") + data.count(b"{") > _MAX_OPENERS:
        raise BeaconRejected(REASON_NOT_JSON, "nested too deeply")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BeaconRejected(REASON_NOT_UTF8) from None
    try:
        obj = _DECODER.decode(text)
    except (ValueError, RecursionError):
        raise BeaconRejected(REASON_NOT_JSON) from None
    if type(obj) is not dict:
        raise BeaconRejected(REASON_NOT_OBJECT, type(obj).__name__)
    if obj.get("proto") != PROTO:
        raise BeaconRejected(REASON_WRONG_PROTO, repr(obj.get("proto"))[:80])
    for key, type_ok, range_ok in _FIELDS:
        try:
            value = obj[key]
        except KeyError:
            raise BeaconRejected(REASON_MISSING_KEY, key) from None
        if not type_ok(value):
            raise BeaconRejected(REASON_WRONG_TYPE, key)
        if not range_ok(value):
            raise BeaconRejected(REASON_OUT_OF_RANGE, key)
    signature = obj.get("sig")
    if "sig" in obj and not (type(signature) is str and _SIG.match(signature)):
        raise BeaconRejected(REASON_WRONG_TYPE, "sig")
    if obj["node_id"] == own_node_id:
        raise BeaconRejected(REASON_OWN_ID)
    if secret:
        if signature is None:
            raise BeaconRejected(REASON_UNSIGNED)
        if not hmac.compare_digest(signature, sign(obj, secret)):
            raise BeaconRejected(REASON_BAD_SIGNATURE)
        if abs(obj["sent_at"] - now_ms) > MAX_SKEW_MS:
            raise BeaconRejected(REASON_SKEW, f"{obj['sent_at'] - now_ms} ms")
    return Beacon(
        kind=obj["kind"],
        node_id=obj["node_id"],
        name=obj["name"],
        roles=tuple(obj["roles"]),
        http_port=obj["http_port"],
        scheme=obj["scheme"],
        version=obj["version"],
        seq=obj["seq"],
        boot=obj["boot"],
        sent_at=obj["sent_at"],
        interval=obj["interval"],
    )
