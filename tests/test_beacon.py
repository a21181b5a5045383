"""
Tests for meteord.protocols.beacon: the wire format of discovery beacons, signing, and every
reason a datagram is dropped, with crafted bytes and no reactor.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from meteord.protocols import beacon as b
from meteord.protocols.beacon import (
    DROP_REASONS,
    MAX_DATAGRAM_BYTES,
    PROTO,
    Beacon,
    BeaconRejected,
    canonical_json,
    decode_beacon,
    encode_beacon,
    sign,
)

NOW_MS = 1_700_000_000_000
SECRET = b"correct horse battery staple"


def make_beacon(**changes: Any) -> Beacon:
    """A valid announcement, with C{changes} applied."""
    fields: dict[str, Any] = {
        "kind": "announce",
        "node_id": "0123456789ab",
        "name": "Camera on the roof",
        "roles": ("camera", "query"),
        "http_port": 8080,
        "scheme": "http",
        "version": "0.1.0",
        "seq": 4_000_000_000,
        "boot": "5f3a9c1e77d20b64",
        "sent_at": NOW_MS,
        "interval": 10.0,
    }
    fields.update(changes)
    return Beacon(**fields)


def wire(**changes: Any) -> dict[str, Any]:
    """The wire object of a valid announcement, with C{changes} applied."""
    obj = make_beacon().to_json()
    obj.update(changes)
    return obj


def datagram(obj: object, secret: bytes | None = None) -> bytes:
    """C{obj} as a datagram, signed over whatever it holds when C{secret} is given."""
    if secret is not None:
        assert isinstance(obj, dict)
        obj = dict(obj, sig=sign(obj, secret))
    return json.dumps(obj).encode("utf-8")


class RoundTripTests(SynchronousTestCase):
    """Encoding then decoding gives the beacon back."""

    def test_unsigned_round_trip(self) -> None:
        beacon = make_beacon()
        self.assertEqual(decode_beacon(encode_beacon(beacon), NOW_MS), beacon)

    def test_signed_round_trip(self) -> None:
        beacon = make_beacon(kind="probe", name="Kamera über dem Dach", roles=())
        data = encode_beacon(beacon, SECRET)
        self.assertEqual(decode_beacon(data, NOW_MS, secret=SECRET), beacon)

    def test_every_kind_round_trips(self) -> None:
        for kind in ("announce", "probe", "bye"):
            beacon = make_beacon(kind=kind)
            self.assertEqual(decode_beacon(encode_beacon(beacon), NOW_MS).kind, kind)

    def test_encoding_is_canonical_json(self) -> None:
        data = encode_beacon(make_beacon(name="Kamera über dem Dach"))
        obj = json.loads(data)
        self.assertEqual(obj["proto"], PROTO)
        self.assertEqual(
            data,
            json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(),
        )

    def test_integral_interval_survives_as_sent(self) -> None:
        """An interval written as an integer by another implementation still verifies."""
        obj = wire(interval=10)
        decoded = decode_beacon(datagram(obj, SECRET), NOW_MS, secret=SECRET)
        self.assertEqual(decoded.interval, 10)

    def test_unknown_keys_are_ignored(self) -> None:
        decoded = decode_beacon(datagram(wire(future={"x": [1, 2]})), NOW_MS)
        self.assertEqual(decoded, make_beacon())

    def test_encoding_refuses_what_listeners_would_drop(self) -> None:
        for changes in (
            {"name": ""},
            {"name": "n" * 65},
            {"roles": ("camera", "printer")},
            {"http_port": 0},
            {"scheme": "ftp"},
            {"interval": 0.0},
            {"node_id": "has space"},
        ):
            self.assertRaises(ValueError, encode_beacon, make_beacon(**changes))

    def test_largest_beacon_fits(self) -> None:
        """Even the longest names in the widest characters stay under the datagram limit."""
        beacon = make_beacon(
            node_id="x" * 64,
            name="\U0001f320" * 64,
            version="\U0001f320" * 64,
            roles=tuple(sorted(b.ROLES)),
            seq=2**63 - 1,
            sent_at=2**63 - 1,
            boot="f" * 64,
            interval=0.30000000000000004,
        )
        self.assertLessEqual(len(encode_beacon(beacon, SECRET)), MAX_DATAGRAM_BYTES)


class SignatureTests(SynchronousTestCase):
    """HMAC-SHA256 over the canonical JSON of every other key."""

    def test_signature_is_hmac_of_canonical_json(self) -> None:
        obj = json.loads(encode_beacon(make_beacon(), SECRET))
        signature = obj.pop("sig")
        canonical = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")
        expected = hmac.new(SECRET, canonical, hashlib.sha256).hexdigest()
        self.assertEqual(signature, expected)

    def test_signature_covers_unknown_keys(self) -> None:
        obj = wire(future="x")
        signed = dict(obj, sig=sign(obj, SECRET))
        decode_beacon(datagram(signed), NOW_MS, secret=SECRET)
        signed["future"] = "y"
        self.assertRejected(b.REASON_BAD_SIGNATURE, datagram(signed), secret=SECRET)

    def test_tampered_field_fails(self) -> None:
        signed = json.loads(encode_beacon(make_beacon(), SECRET))
        signed["http_port"] = 8443
        self.assertRejected(b.REASON_BAD_SIGNATURE, datagram(signed), secret=SECRET)

    def test_other_secret_fails(self) -> None:
        data = encode_beacon(make_beacon(), b"another secret")
        self.assertRejected(b.REASON_BAD_SIGNATURE, data, secret=SECRET)

    def test_unsigned_fails_when_secret_set(self) -> None:
        self.assertRejected(b.REASON_UNSIGNED, encode_beacon(make_beacon()), secret=SECRET)

    def test_signature_not_checked_without_secret(self) -> None:
        data = datagram(wire(sig="0" * 64))
        self.assertEqual(decode_beacon(data, NOW_MS), make_beacon())

    def test_malformed_signature_is_wrong_type(self) -> None:
        for sig in (12, "abc", "G" * 64, None):
            self.assertRejected(b.REASON_WRONG_TYPE, datagram(wire(sig=sig)), secret=SECRET)

    def test_lone_surrogate_in_unknown_key_fails_verification(self) -> None:
        data = datagram(wire(future="\ud800", sig="a" * 64))
        self.assertRejected(b.REASON_BAD_SIGNATURE, data, secret=SECRET)

    def assertRejected(self, reason: str, data: bytes, **kwargs: Any) -> None:
        rejected = self.assertRaises(BeaconRejected, decode_beacon, data, NOW_MS, **kwargs)
        self.assertEqual(rejected.reason, reason, f"{data[:80]!r} gave {rejected}")


class DropReasonTests(SynchronousTestCase):
    """Each crafted datagram is rejected with the reason the metrics will count."""

    def assertRejected(self, reason: str, data: bytes, **kwargs: Any) -> BeaconRejected:
        rejected = self.assertRaises(BeaconRejected, decode_beacon, data, NOW_MS, **kwargs)
        self.assertEqual(rejected.reason, reason, f"{data[:80]!r} gave {rejected}")
        return rejected

    def test_reasons_are_listed_once(self) -> None:
        constants = {value for key, value in vars(b).items() if key.startswith("REASON_")}
        self.assertEqual(set(DROP_REASONS), constants)
        self.assertEqual(len(DROP_REASONS), len(constants))

    def test_oversize(self) -> None:
        padded = wire(pad="")
        padded["pad"] = "p" * (MAX_DATAGRAM_BYTES - len(datagram(padded)))
        self.assertEqual(len(datagram(padded)), MAX_DATAGRAM_BYTES)
        decode_beacon(datagram(padded), NOW_MS)
        padded["pad"] += "p"
        self.assertRejected(b.REASON_OVERSIZE, datagram(padded))
        self.assertRejected(b.REASON_OVERSIZE, b"\xff" * 65_000)

    def test_not_utf8(self) -> None:
        self.assertRejected(b.REASON_NOT_UTF8, b'{"name": "\xff"}')
        self.assertRejected(b.REASON_NOT_UTF8, '{"x": "\ud800"}'.encode("utf-8", "surrogatepass"))

    def test_not_json(self) -> None:
        for data in (b"", b"hello", b'{"proto": ', b"[" * 1100, b'{"a": NaN}', b"Infinity"):
            self.assertRejected(b.REASON_NOT_JSON, data)

    def test_deep_nesting_is_refused_before_parsing(self) -> None:
        self.assertEqual(
            self.assertRejected(b.REASON_NOT_JSON, b"[" * 193).detail, "nested too deeply"
        )
        self.assertRejected(b.REASON_NOT_JSON, b"{" * 100 + b"[" * 93)
        brackets = make_beacon(name="[" * 64, version="{" * 64)
        self.assertEqual(decode_beacon(encode_beacon(brackets), NOW_MS), brackets)

    def test_not_object(self) -> None:
        for data in (b"[]", b'"announce"', b"42", b"null", b"true"):
            self.assertRejected(b.REASON_NOT_OBJECT, data)

    def test_wrong_proto(self) -> None:
        missing = wire()
        del missing["proto"]
        for obj in (wire(proto="meteord-discovery/2"), wire(proto=1), missing):
            self.assertRejected(b.REASON_WRONG_PROTO, datagram(obj))

    def test_missing_key(self) -> None:
        for key in wire():
            if key == "proto":
                continue
            obj = wire()
            del obj[key]
            rejected = self.assertRejected(b.REASON_MISSING_KEY, datagram(obj))
            self.assertEqual(rejected.detail, key)

    def test_wrong_type(self) -> None:
        cases = [
            ("kind", 1),
            ("node_id", 123456789012),
            ("name", ["roof"]),
            ("roles", "camera"),
            ("http_port", "8080"),
            ("http_port", 8080.0),
            ("http_port", True),
            ("scheme", None),
            ("version", 1.0),
            ("seq", 1.5),
            ("boot", 1234),
            ("sent_at", str(NOW_MS)),
            ("interval", "10"),
            ("interval", False),
        ]
        for key, value in cases:
            rejected = self.assertRejected(b.REASON_WRONG_TYPE, datagram(wire(**{key: value})))
            self.assertEqual(rejected.detail, key)

    def test_out_of_range(self) -> None:
        cases = [
            ("kind", "hello"),
            ("node_id", ""),
            ("node_id", "x" * 65),
            ("node_id", "a/b"),
            ("name", ""),
            ("name", "n" * 65),
            ("name", "tab\there"),
            ("name", "\ud800"),
            ("roles", ["printer"]),
            ("roles", ["camera", "camera"]),
            ("roles", [1]),
            ("http_port", 0),
            ("http_port", 65536),
            ("scheme", "ftp"),
            ("version", ""),
            ("seq", -1),
            ("seq", 2**63),
            ("boot", ""),
            ("boot", "XYZ"),
            ("sent_at", -5),
            ("interval", 0),
            ("interval", -10.0),
            ("interval", 86401),
        ]
        for key, value in cases:
            rejected = self.assertRejected(
                b.REASON_OUT_OF_RANGE, datagram(wire(**{key: value}))
            )
            self.assertEqual(rejected.detail, key)

    def test_infinite_interval_is_out_of_range(self) -> None:
        data = datagram(wire(interval=10.0)).replace(b'"interval": 10.0', b'"interval": 1e400')
        self.assertRejected(b.REASON_OUT_OF_RANGE, data)

    def test_own_id(self) -> None:
        data = encode_beacon(make_beacon(node_id="me"))
        self.assertRejected(b.REASON_OWN_ID, data, own_node_id="me")
        self.assertEqual(decode_beacon(data, NOW_MS, own_node_id="other").node_id, "me")

    def test_unsigned(self) -> None:
        self.assertRejected(b.REASON_UNSIGNED, encode_beacon(make_beacon()), secret=SECRET)

    def test_wrongly_signed(self) -> None:
        obj = json.loads(encode_beacon(make_beacon(), SECRET))
        obj["sig"] = obj["sig"][:-1] + ("0" if obj["sig"][-1] != "0" else "1")
        self.assertRejected(b.REASON_BAD_SIGNATURE, datagram(obj), secret=SECRET)

    def test_skew_with_secret(self) -> None:
        for offset in (60_001, -60_001, 10**9):
            data = encode_beacon(make_beacon(sent_at=NOW_MS + offset), SECRET)
            self.assertRejected(b.REASON_SKEW, data, secret=SECRET)
        for offset in (60_000, -60_000, 0):
            data = encode_beacon(make_beacon(sent_at=NOW_MS + offset), SECRET)
            self.assertEqual(decode_beacon(data, NOW_MS, secret=SECRET).sent_at, NOW_MS + offset)

    def test_no_skew_check_without_secret(self) -> None:
        data = encode_beacon(make_beacon(sent_at=0))
        self.assertEqual(decode_beacon(data, NOW_MS).sent_at, 0)

    def test_rejection_text_names_reason_and_detail(self) -> None:
        self.assertEqual(str(BeaconRejected("missing_key", "seq")), "missing_key: seq")
        self.assertEqual(str(BeaconRejected("not_json")), "not_json")

    def test_canonical_json_is_total(self) -> None:
        self.assertEqual(canonical_json({"b": 1, "a": "\ud800"}), b'{"a":"\xed\xa0\x80","b":1}')
