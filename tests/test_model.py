"""
Tests for meteord.model: the wire form of every entity and search, its round trips, and the
validation that turns bad input into an InvalidEntity naming the key at fault.
"""

import copy
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from meteord.model import (
    DEFAULT_LIMIT,
    MAX_FILE_SIZE,
    MAX_META_CONSTRAINTS,
    ROLES,
    CameraStatus,
    Event,
    EventSearch,
    ExportConfiguration,
    FileRecord,
    FileRecordSearch,
    InvalidEntity,
    Location,
    Meta,
    MetaConstraint,
    NSString,
    Orientation,
    Point,
    TimeWindow,
    User,
    datetime_to_ms,
    day_offset,
    ms_to_datetime,
    new_id,
    parse_camera_id,
    parse_id,
    role_mask,
    roles_from_mask,
)

UTC = timezone.utc
T_MS = 1437000000123
T = datetime(2015, 7, 15, 22, 40, 0, 123000, tzinfo=UTC)
ID_A = "a" * 32
ID_B = "b" * 32
ID_C = "c" * 32
ID_D = "0123456789abcdef0123456789abcdef"
MD5 = "d41d8cd98f00b204e9800998ecf8427e"
SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
MIN_MS = -62135596800000
MAX_MS = 253402300799999


def file_dict(**changes: Any) -> dict[str, Any]:
    """A valid FileRecord wire form with every optional key."""
    d = {
        "file_id": ID_A,
        "camera_id": "b827eb0a1b2c",
        "mime_type": "image/png",
        "file_name": "meteor.png",
        "semantic_type": "meteorpi:triggers/event/maxBrightness",
        "file_time": T_MS,
        "file_size": 1234,
        "status_id": ID_B,
        "md5": MD5,
        "sha256": SHA256,
        "meta": [{"type": "number", "key": "meteorpi:brightness", "value": 2.5}],
    }
    d.update(changes)
    return d


def event_dict(**changes: Any) -> dict[str, Any]:
    """A valid Event wire form with one file and one meta item."""
    d = {
        "event_id": ID_C,
        "camera_id": "b827eb0a1b2c",
        "event_time": T_MS,
        "event_type": "meteorpi:meteor",
        "status_id": ID_B,
        "files": [file_dict()],
        "meta": [{"type": "string", "key": "meteorpi:label", "value": "bright"}],
    }
    d.update(changes)
    return d


def status_dict(**changes: Any) -> dict[str, Any]:
    """A valid CameraStatus wire form of a past status."""
    d = {
        "camera_id": "b827eb0a1b2c",
        "status_id": ID_B,
        "lens": "VF-DCD-AI-3.5-18-C-2MP",
        "sensor": "WATEC_902H",
        "inst_url": "https://school.example",
        "inst_name": "Cambridge, south camera",
        "software_version": 2,
        "valid_from": T_MS,
        "valid_to": T_MS + 1000,
        "location": {"lat": 52.2, "long": 0.12, "gps": True, "error": 5.0},
        "orientation": {"alt": 45.0, "az": 180.0, "error": 1.5, "rot": 0.0, "width": 30.0},
        "regions": [[{"x": 0, "y": 0}, {"x": 720, "y": 0}, {"x": 720, "y": 480}]],
    }
    d.update(changes)
    return d


PIN_A = "0f" * 32
PIN_B = "a1" * 32


def export_dict(**changes: Any) -> dict[str, Any]:
    """A valid ExportConfiguration wire form with every optional key."""
    d = {
        "config_id": ID_D,
        "type": "event",
        "target_url": "https://hub.example/api/import",
        "user_id": "camera-7",
        "password": "s3cret",
        "search": {"camera_ids": ["b827eb0a1b2c"], "meta": [], "limit": 100, "skip": 0},
        "config_name": "to hub",
        "config_description": "everything to the hub",
        "enabled": True,
        "window": ["22:00-06:00"],
        "max_bytes_per_second": 65536,
        "priority": 2,
        "ca_file": "/etc/meteord/hub-ca.pem",
        "pinned_certificates": [PIN_A],
    }
    d.update(changes)
    return d


def without(d: dict[str, Any], key: str) -> dict[str, Any]:
    """A copy of d without key."""
    d = dict(d)
    del d[key]
    return d


def plain_export_dict(**changes: Any) -> dict[str, Any]:
    """`export_dict` without the TLS keys, which an http:// target refuses."""
    return without(without(export_dict(**changes), "ca_file"), "pinned_certificates")


class InvalidMixin:
    """assertInvalid: from_dict or a constructor refuses, naming the key."""

    def assertInvalid(
        self, expected_key: str, f: Any, /, *args: Any, **kwargs: Any
    ) -> InvalidEntity:
        e = self.assertRaises(InvalidEntity, f, *args, **kwargs)  # type: ignore[attr-defined]
        self.assertEqual(e.key, expected_key)  # type: ignore[attr-defined]
        if expected_key:
            self.assertIn(repr(expected_key), str(e))  # type: ignore[attr-defined]
        return e


class TimeTests(SynchronousTestCase):
    """Millisecond times, exact in both directions, and the offset since noon."""

    def test_ms_to_datetime(self) -> None:
        self.assertEqual(ms_to_datetime(T_MS), T)
        self.assertEqual(ms_to_datetime(T_MS).tzinfo, UTC)

    def test_datetime_to_ms(self) -> None:
        self.assertEqual(datetime_to_ms(T), T_MS)

    def test_epoch(self) -> None:
        self.assertEqual(ms_to_datetime(0), datetime(1970, 1, 1, tzinfo=UTC))

    def test_negative(self) -> None:
        self.assertEqual(ms_to_datetime(-1), datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC))

    def test_other_timezone(self) -> None:
        plus_two = timezone(timedelta(hours=2))
        self.assertEqual(datetime_to_ms(T.astimezone(plus_two)), T_MS)

    def test_sub_millisecond_part_dropped(self) -> None:
        self.assertEqual(datetime_to_ms(T + timedelta(microseconds=999)), T_MS)
        self.assertEqual(datetime_to_ms(datetime(1969, 12, 31, 23, 59, 59, 999999, UTC)), -1)

    def test_naive_refused(self) -> None:
        self.assertRaises(ValueError, datetime_to_ms, datetime(2015, 1, 1))

    def test_non_int_refused(self) -> None:
        self.assertRaises(TypeError, ms_to_datetime, 1.0)
        self.assertRaises(TypeError, ms_to_datetime, True)

    def test_range(self) -> None:
        self.assertEqual(ms_to_datetime(MIN_MS), datetime.min.replace(tzinfo=UTC))
        self.assertEqual(ms_to_datetime(MAX_MS).year, 9999)
        self.assertRaises(ValueError, ms_to_datetime, MIN_MS - 1)
        self.assertRaises(ValueError, ms_to_datetime, MAX_MS + 1)

    @given(st.integers(MIN_MS, MAX_MS))
    def test_ms_round_trip(self, ms: int) -> None:
        self.assertEqual(datetime_to_ms(ms_to_datetime(ms)), ms)

    @given(st.datetimes(timezones=st.just(UTC)))
    def test_datetime_round_trip_at_ms_precision(self, dt: datetime) -> None:
        dt = dt.replace(microsecond=dt.microsecond // 1000 * 1000)
        self.assertEqual(ms_to_datetime(datetime_to_ms(dt)), dt)

    def test_day_offset_noon_is_zero(self) -> None:
        self.assertEqual(day_offset(datetime_to_ms(datetime(2015, 7, 15, 12, tzinfo=UTC))), 0.0)

    def test_day_offset_evening_and_morning(self) -> None:
        self.assertEqual(day_offset(datetime_to_ms(datetime(2015, 7, 15, 22, tzinfo=UTC))), 36000.0)
        self.assertEqual(day_offset(datetime_to_ms(datetime(2015, 7, 16, 2, tzinfo=UTC))), 50400.0)

    def test_day_offset_just_before_noon(self) -> None:
        ms = datetime_to_ms(datetime(2015, 7, 16, 11, 59, 59, 999000, tzinfo=UTC))
        self.assertEqual(day_offset(ms), 86399.999)

    def test_day_offset_before_epoch(self) -> None:
        self.assertEqual(day_offset(-1), 43199.999)

    @given(st.integers(MIN_MS, MAX_MS))
    def test_day_offset_range(self, ms: int) -> None:
        offset = day_offset(ms)
        self.assertTrue(0 <= offset < 86400)
        self.assertEqual(offset, day_offset(ms + 86_400_000))


class IdTests(InvalidMixin, SynchronousTestCase):
    """Ids are 32 lowercase hex; camera ids are short and plain."""

    def test_new_id(self) -> None:
        a, b = new_id(), new_id()
        self.assertRegex(a, r"^[0-9a-f]{32}$")
        self.assertNotEqual(a, b)

    def test_parse_id_plain(self) -> None:
        self.assertEqual(parse_id(ID_D, "k"), ID_D)

    def test_parse_id_dashed_and_upper(self) -> None:
        self.assertEqual(parse_id("01234567-89AB-CDEF-0123-456789ABCDEF", "k"), ID_D)

    def test_parse_id_refusals(self) -> None:
        for bad in ("", "a" * 31, "a" * 33, "g" * 32, "{" + ID_D + "}", 123, None, " " + ID_D):
            self.assertInvalid("event_id", parse_id, bad, "event_id")

    def test_camera_id_trailing_spaces_stripped(self) -> None:
        self.assertEqual(parse_camera_id("cam-1.a:b_c  ", "camera_id"), "cam-1.a:b_c")

    def test_camera_id_lengths(self) -> None:
        self.assertEqual(parse_camera_id("x" * 64, "camera_id"), "x" * 64)
        self.assertInvalid("camera_id", parse_camera_id, "x" * 65, "camera_id")
        self.assertInvalid("camera_id", parse_camera_id, "", "camera_id")
        self.assertInvalid("camera_id", parse_camera_id, "   ", "camera_id")

    def test_camera_id_characters(self) -> None:
        for bad in (" cam", "cam/1", "cam 1", "kamera\u00e9", "cam\x00", 12):
            self.assertInvalid("camera_id", parse_camera_id, bad, "camera_id")


class NSStringTests(InvalidMixin, SynchronousTestCase):
    """Namespaced strings: ns:value, meteorpi by default."""

    def test_parse(self) -> None:
        self.assertEqual(NSString.parse("acme:meteor"), NSString(ns="acme", value="meteor"))

    def test_default_namespace(self) -> None:
        self.assertEqual(NSString.parse("meteor"), NSString(ns="meteorpi", value="meteor"))

    def test_splits_at_first_colon(self) -> None:
        self.assertEqual(NSString.parse("a:b:c"), NSString(ns="a", value="b:c"))

    def test_str(self) -> None:
        self.assertEqual(str(NSString(ns="acme", value="x/y")), "acme:x/y")
        self.assertEqual(str(NSString.parse("meteor")), "meteorpi:meteor")

    def test_empty_parts_refused(self) -> None:
        for bad in (":x", "x:", "", ":"):
            self.assertInvalid("event_type", NSString.parse, bad, "event_type")

    def test_non_string_refused(self) -> None:
        self.assertInvalid("event_type", NSString.parse, 5, "event_type")

    def test_nul_refused(self) -> None:
        e = self.assertInvalid("event_type", NSString.parse, "a:b\x00", "event_type")
        self.assertIn("NUL", str(e))

    def test_constructor_checks(self) -> None:
        self.assertInvalid("ns", NSString, ns="a:b", value="c")
        self.assertInvalid("ns", NSString, ns="", value="c")
        self.assertInvalid("value", NSString, ns="a", value="")


class MetaTests(InvalidMixin, SynchronousTestCase):
    """Meta items of the three types."""

    def test_string_to_dict(self) -> None:
        meta = Meta(key="label", type="string", value="bright")
        self.assertEqual(
            meta.to_dict(), {"type": "string", "key": "meteorpi:label", "value": "bright"}
        )

    def test_number_to_dict(self) -> None:
        meta = Meta(key=NSString(ns="x", value="n"), type="number", value=3)
        self.assertEqual(meta.to_dict(), {"type": "number", "key": "x:n", "value": 3.0})
        self.assertIs(type(meta.value), float)

    def test_date_to_dict(self) -> None:
        meta = Meta(key="when", type="date", value=T)
        self.assertEqual(meta.to_dict(), {"type": "date", "key": "meteorpi:when", "value": T_MS})

    def test_from_dict(self) -> None:
        self.assertEqual(
            Meta.from_dict({"type": "date", "key": "when", "value": T_MS}),
            Meta(key="when", type="date", value=T),
        )
        self.assertEqual(
            Meta.from_dict({"type": "number", "key": "n", "value": 7}).value, 7.0
        )

    def test_huge_number_is_kept_as_double(self) -> None:
        meta = Meta.from_dict({"type": "number", "key": "n", "value": 1.7976931348623157e308})
        self.assertEqual(meta.value, 1.7976931348623157e308)

    def test_wrong_value_types(self) -> None:
        cases = [
            ("number", True),
            ("number", "3"),
            ("number", 10**400),
            ("string", 3),
            ("date", 1.5),
            ("date", "2015-01-01"),
            ("date", MAX_MS + 1),
        ]
        for meta_type, value in cases:
            self.assertInvalid(
                "value", Meta.from_dict, {"type": meta_type, "key": "k", "value": value}
            )

    def test_unknown_type(self) -> None:
        self.assertInvalid("type", Meta.from_dict, {"type": "blob", "key": "k", "value": 1})
        self.assertInvalid("type", Meta, key="k", type="blob", value=1)

    def test_missing_keys(self) -> None:
        d = {"type": "string", "key": "k", "value": "v"}
        for key in d:
            self.assertInvalid(key, Meta.from_dict, without(d, key))

    def test_not_an_object(self) -> None:
        self.assertInvalid("", Meta.from_dict, ["type"])

    def test_constructor_checks_value(self) -> None:
        self.assertInvalid("value", Meta, key="k", type="number", value=float("nan"))
        self.assertInvalid("value", Meta, key="k", type="date", value=datetime(2015, 1, 1))
        self.assertInvalid("value", Meta, key="k", type="string", value="a\x00b")

    def test_constructor_normalises_dates(self) -> None:
        local = (T + timedelta(microseconds=456)).astimezone(timezone(timedelta(hours=-5)))
        meta = Meta(key="k", type="date", value=local)
        self.assertEqual(meta.value, T)
        self.assertEqual(meta.value.utcoffset(), timedelta(0))

    def test_long_strings_allowed(self) -> None:
        value = "x" * 100000
        meta = Meta.from_dict({"type": "string", "key": "k", "value": value})
        self.assertEqual(meta.value, value)


class FileRecordTests(InvalidMixin, SynchronousTestCase):
    """File records."""

    def test_to_dict(self) -> None:
        record = FileRecord(
            file_id=ID_A,
            camera_id="b827eb0a1b2c",
            mime_type="image/png",
            file_name="meteor.png",
            semantic_type="meteorpi:triggers/event/maxBrightness",
            file_time=T,
            file_size=1234,
            status_id=ID_B,
            md5=MD5,
            sha256=SHA256,
            meta=[Meta(key="brightness", type="number", value=2.5)],
        )
        self.assertEqual(record.to_dict(), file_dict())

    def test_to_dict_omits_absent_optionals(self) -> None:
        record = FileRecord.from_dict(without(without(file_dict(), "file_name"), "sha256"))
        self.assertEqual(
            record.to_dict(),
            {
                "file_id": ID_A,
                "camera_id": "b827eb0a1b2c",
                "mime_type": "image/png",
                "semantic_type": "meteorpi:triggers/event/maxBrightness",
                "file_time": T_MS,
                "file_size": 1234,
                "status_id": ID_B,
                "md5": MD5,
                "meta": [{"type": "number", "key": "meteorpi:brightness", "value": 2.5}],
            },
        )

    def test_round_trip(self) -> None:
        self.assertEqual(FileRecord.from_dict(file_dict()).to_dict(), file_dict())

    def test_normalises_input(self) -> None:
        record = FileRecord.from_dict(
            file_dict(
                file_id="AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAAA",
                camera_id="b827eb0a1b2c ",
                md5=MD5.upper(),
                semantic_type="maxBrightness",
            )
        )
        self.assertEqual(record.file_id, ID_A)
        self.assertEqual(record.camera_id, "b827eb0a1b2c")
        self.assertEqual(record.md5, MD5)
        self.assertEqual(record.semantic_type, NSString(ns="meteorpi", value="maxBrightness"))

    def test_null_optional_is_absent(self) -> None:
        record = FileRecord.from_dict(file_dict(file_name=None, sha256=None))
        self.assertIsNone(record.file_name)
        self.assertNotIn("file_name", record.to_dict())

    def test_unknown_keys_ignored(self) -> None:
        self.assertEqual(
            FileRecord.from_dict(file_dict(extra=1)), FileRecord.from_dict(file_dict())
        )

    def test_missing_required_keys(self) -> None:
        for key in file_dict():
            if key in ("file_name", "sha256"):
                continue
            self.assertInvalid(key, FileRecord.from_dict, without(file_dict(), key))

    def test_file_size_bounds(self) -> None:
        self.assertEqual(FileRecord.from_dict(file_dict(file_size=0)).file_size, 0)
        self.assertEqual(
            FileRecord.from_dict(file_dict(file_size=MAX_FILE_SIZE)).file_size, 2**63 - 1
        )
        for bad in (-1, 2**63, 1.0, "3", True):
            self.assertInvalid("file_size", FileRecord.from_dict, file_dict(file_size=bad))

    def test_bad_values(self) -> None:
        cases = {
            "md5": ["abc", "z" * 32, 5],
            "sha256": [MD5, "g" * 64],
            "mime_type": ["", "image/png\r\nX-Evil: 1", 3],
            "file_name": ["", "a\nb", []],
            "file_time": [1.5, "1437000000123", True],
            "status_id": ["nope"],
            "camera_id": ["a b"],
            "semantic_type": ["x:"],
        }
        for key, values in cases.items():
            for value in values:
                self.assertInvalid(key, FileRecord.from_dict, file_dict(**{key: value}))

    def test_meta_error_path(self) -> None:
        d = file_dict(meta=[{"type": "number", "key": "a", "value": 1}, {"type": "number"}])
        self.assertInvalid("meta[1].key", FileRecord.from_dict, d)

    def test_meta_must_be_list(self) -> None:
        self.assertInvalid("meta", FileRecord.from_dict, file_dict(meta={}))

    def test_frozen(self) -> None:
        record = FileRecord.from_dict(file_dict())
        self.assertRaises(attrs.exceptions.FrozenInstanceError, setattr, record, "md5", MD5)

    def test_constructor_checks(self) -> None:
        kwargs = attrs.asdict(FileRecord.from_dict(file_dict()), recurse=False)
        self.assertInvalid("file_id", FileRecord, **{**kwargs, "file_id": ID_A.upper()})
        self.assertInvalid("file_time", FileRecord, **{**kwargs, "file_time": datetime(2015, 1, 1)})
        self.assertInvalid("meta[0]", FileRecord, **{**kwargs, "meta": [{"type": "string"}]})


class EventTests(InvalidMixin, SynchronousTestCase):
    """Events with their files."""

    def test_to_dict(self) -> None:
        event = Event(
            event_id=ID_C,
            camera_id="b827eb0a1b2c",
            event_time=T,
            event_type="meteor",
            status_id=ID_B,
            files=[FileRecord.from_dict(file_dict())],
            meta=[Meta(key="label", type="string", value="bright")],
        )
        self.assertEqual(event.to_dict(), event_dict())

    def test_empty_lists_always_present(self) -> None:
        event = Event(
            event_id=ID_C, camera_id="c", event_time=T, event_type="meteor", status_id=ID_B
        )
        self.assertEqual(
            event.to_dict(),
            {
                "event_id": ID_C,
                "camera_id": "c",
                "event_time": T_MS,
                "event_type": "meteorpi:meteor",
                "status_id": ID_B,
                "files": [],
                "meta": [],
            },
        )

    def test_round_trip_keeps_file_order(self) -> None:
        files = [file_dict(file_id=ID_D), file_dict(file_id=ID_A)]
        event = Event.from_dict(event_dict(files=files))
        self.assertEqual([f.file_id for f in event.files], [ID_D, ID_A])
        self.assertEqual(Event.from_dict(event.to_dict()), event)

    def test_equal_and_hashable(self) -> None:
        self.assertEqual(hash(Event.from_dict(event_dict())), hash(Event.from_dict(event_dict())))

    def test_nested_error_paths(self) -> None:
        bad_file = event_dict(files=[file_dict(), file_dict(md5="x")])
        self.assertInvalid("files[1].md5", Event.from_dict, bad_file)
        bad_meta = event_dict(files=[file_dict(meta=[{"type": "date", "key": "k", "value": "x"}])])
        self.assertInvalid("files[0].meta[0].value", Event.from_dict, bad_meta)

    def test_within_prefixes_paths(self) -> None:
        bad = event_dict(files=[file_dict(md5="x")])
        e = self.assertRaises(InvalidEntity, Event.from_dict, bad)
        outer = e.within("event")
        self.assertEqual(outer.key, "event.files[0].md5")
        self.assertIn("'event.files[0].md5'", str(outer))

    def test_missing_required_keys(self) -> None:
        for key in event_dict():
            self.assertInvalid(key, Event.from_dict, without(event_dict(), key))

    def test_files_must_be_objects(self) -> None:
        self.assertInvalid("files[0]", Event.from_dict, event_dict(files=["x"]))

    def test_invalid_entity_is_value_error(self) -> None:
        self.assertTrue(issubclass(InvalidEntity, ValueError))


class CameraStatusTests(InvalidMixin, SynchronousTestCase):
    """Camera statuses."""

    def test_to_dict(self) -> None:
        status = CameraStatus(
            camera_id="b827eb0a1b2c",
            status_id=ID_B,
            lens="VF-DCD-AI-3.5-18-C-2MP",
            sensor="WATEC_902H",
            inst_url="https://school.example",
            inst_name="Cambridge, south camera",
            software_version=2,
            valid_from=T,
            valid_to=T + timedelta(seconds=1),
            location=Location(lat=52.2, long=0.12, gps=True, error=5.0),
            orientation=Orientation(alt=45.0, az=180.0, error=1.5, rot=0.0, width=30.0),
            regions=[[Point(x=0, y=0), Point(x=720, y=0), Point(x=720, y=480)]],
        )
        self.assertEqual(status.to_dict(), status_dict())

    def test_current_status_omits_valid_to(self) -> None:
        status = CameraStatus.from_dict(
            without(without(without(status_dict(), "valid_to"), "inst_url"), "inst_name")
        )
        self.assertEqual(
            status.to_dict(),
            {
                "camera_id": "b827eb0a1b2c",
                "status_id": ID_B,
                "lens": "VF-DCD-AI-3.5-18-C-2MP",
                "sensor": "WATEC_902H",
                "software_version": 2,
                "valid_from": T_MS,
                "location": {"lat": 52.2, "long": 0.12, "gps": True, "error": 5.0},
                "orientation": {
                    "alt": 45.0,
                    "az": 180.0,
                    "error": 1.5,
                    "rot": 0.0,
                    "width": 30.0,
                },
                "regions": [[{"x": 0, "y": 0}, {"x": 720, "y": 0}, {"x": 720, "y": 480}]],
            },
        )

    def test_round_trip(self) -> None:
        self.assertEqual(CameraStatus.from_dict(status_dict()).to_dict(), status_dict())

    def test_ints_accepted_for_floats(self) -> None:
        status = CameraStatus.from_dict(
            status_dict(location={"lat": 52, "long": 0, "gps": False, "error": 0})
        )
        self.assertEqual(status.location, Location(lat=52.0, long=0.0, gps=False, error=0.0))

    def test_gps_as_number(self) -> None:
        location = {"lat": 1.0, "long": 1.0, "gps": 1, "error": 0.0}
        self.assertIs(CameraStatus.from_dict(status_dict(location=location)).location.gps, True)

    def test_missing_required_keys(self) -> None:
        for key in status_dict():
            if key in ("valid_to", "inst_url", "inst_name"):
                continue
            self.assertInvalid(key, CameraStatus.from_dict, without(status_dict(), key))

    def test_nested_errors(self) -> None:
        location = {"lat": 91.0, "long": 0.0, "gps": True, "error": 1.0}
        self.assertInvalid("location.lat", CameraStatus.from_dict, status_dict(location=location))
        location = {"lat": 1.0, "long": -180.5, "gps": True, "error": 1.0}
        self.assertInvalid("location.long", CameraStatus.from_dict, status_dict(location=location))
        location = {"lat": 1.0, "long": 1.0, "gps": "yes", "error": 1.0}
        self.assertInvalid("location.gps", CameraStatus.from_dict, status_dict(location=location))
        orientation = {"alt": 1.0, "az": "south", "error": 1.0, "rot": 0.0, "width": 1.0}
        self.assertInvalid(
            "orientation.az", CameraStatus.from_dict, status_dict(orientation=orientation)
        )
        orientation = {"alt": 1.0, "az": 1.0, "error": 1.0, "rot": 0.0}
        self.assertInvalid(
            "orientation.width", CameraStatus.from_dict, status_dict(orientation=orientation)
        )
        self.assertInvalid("location", CameraStatus.from_dict, status_dict(location=[1, 2]))

    def test_region_errors(self) -> None:
        regions = [[{"x": 0, "y": 0}, {"x": 1.5, "y": 0}]]
        self.assertInvalid("regions[0][1].x", CameraStatus.from_dict, status_dict(regions=regions))
        regions = [[{"x": 0, "y": -1}]]
        self.assertInvalid("regions[0][0].y", CameraStatus.from_dict, status_dict(regions=regions))
        regions = [{"x": 0, "y": 0}]
        self.assertInvalid("regions[0]", CameraStatus.from_dict, status_dict(regions=regions))

    def test_other_bad_values(self) -> None:
        cases = {
            "software_version": [1.0, "2", -1, True],
            "valid_from": [1.5],
            "lens": [None, 3],
            "inst_url": [7],
        }
        for key, values in cases.items():
            for value in values:
                self.assertInvalid(key, CameraStatus.from_dict, status_dict(**{key: value}))

    def test_valid_to_before_valid_from(self) -> None:
        self.assertInvalid(
            "valid_to", CameraStatus.from_dict, status_dict(valid_to=T_MS - 1)
        )
        self.assertEqual(
            CameraStatus.from_dict(status_dict(valid_to=T_MS)).valid_to, T
        )


class UserTests(InvalidMixin, SynchronousTestCase):
    """Users and role masks."""

    def test_role_mask(self) -> None:
        self.assertEqual(ROLES, ("user", "camera_admin", "import"))
        self.assertEqual(role_mask([]), 0)
        self.assertEqual(role_mask(["user"]), 1)
        self.assertEqual(role_mask(["camera_admin"]), 2)
        self.assertEqual(role_mask(["import"]), 4)
        self.assertEqual(role_mask(["import", "user", "camera_admin"]), 7)
        self.assertInvalid("roles", role_mask, ["root"])

    def test_roles_from_mask(self) -> None:
        self.assertEqual(roles_from_mask(5), frozenset({"user", "import"}))
        self.assertEqual(roles_from_mask(0), frozenset())

    def test_to_dict(self) -> None:
        user = User(user_id="alice", roles={"user", "camera_admin"})
        self.assertEqual(
            user.to_dict(),
            {"user_id": "alice", "roles": ["camera_admin", "user"], "role_mask": 3},
        )

    def test_from_dict_never_keeps_password(self) -> None:
        user = User.from_dict({"user_id": "bob", "roles": ["import"], "password": "pw"})
        self.assertEqual(user.to_dict(), {"user_id": "bob", "roles": ["import"], "role_mask": 4})
        self.assertNotIn("pw", repr(user))

    def test_from_old_role_mask(self) -> None:
        user = User.from_dict({"user_id": "bob", "role_mask": 6})
        self.assertEqual(user.roles, frozenset({"camera_admin", "import"}))
        self.assertTrue(user.has_role("import"))
        self.assertFalse(user.has_role("user"))

    def test_from_dict_errors(self) -> None:
        self.assertInvalid("roles[1]", User.from_dict, {"user_id": "u", "roles": ["user", "x"]})
        self.assertInvalid("roles", User.from_dict, {"user_id": "u"})
        self.assertInvalid("roles", User.from_dict, {"user_id": "u", "roles": "user"})
        self.assertInvalid(
            "role_mask", User.from_dict, {"user_id": "u", "roles": ["user"], "role_mask": 3}
        )
        self.assertInvalid("role_mask", User.from_dict, {"user_id": "u", "role_mask": 8})
        self.assertInvalid("user_id", User.from_dict, {"roles": ["user"]})

    def test_user_id_rules(self) -> None:
        self.assertEqual(User(user_id="x" * 40, roles=()).user_id, "x" * 40)
        for bad in ("x" * 41, "", "a:b", "a\nb", 5):
            self.assertInvalid("user_id", User.from_dict, {"user_id": bad, "roles": []})

    def test_constructor_refuses_unknown_role(self) -> None:
        self.assertInvalid("roles", User, user_id="u", roles={"admin"})


class MetaConstraintTests(InvalidMixin, SynchronousTestCase):
    """Constraints over meta items."""

    def test_wire_forms(self) -> None:
        cases = [
            ({"key": "meteorpi:when", "type": "after", "value": T_MS}, T),
            ({"key": "meteorpi:when", "type": "before", "value": T_MS}, T),
            ({"key": "meteorpi:n", "type": "greater", "value": 1.5}, 1.5),
            ({"key": "meteorpi:n", "type": "less", "value": 2.0}, 2.0),
            ({"key": "meteorpi:n", "type": "number_equals", "value": 3.0}, 3.0),
            ({"key": "meteorpi:s", "type": "string_equals", "value": "x"}, "x"),
        ]
        for d, value in cases:
            constraint = MetaConstraint.from_dict(d)
            self.assertEqual(constraint.value, value)
            self.assertEqual(constraint.to_dict(), d)

    def test_unknown_type(self) -> None:
        e = self.assertInvalid(
            "type", MetaConstraint.from_dict, {"key": "k", "type": "like", "value": "x"}
        )
        self.assertIn("string_equals", str(e))

    def test_wrong_value_types(self) -> None:
        cases = [
            ("after", "yesterday"),
            ("before", 1.5),
            ("greater", True),
            ("less", "1"),
            ("number_equals", None),
            ("string_equals", 3),
        ]
        for constraint_type, value in cases:
            self.assertInvalid(
                "value",
                MetaConstraint.from_dict,
                {"key": "k", "type": constraint_type, "value": value},
            )

    def test_bad_key(self) -> None:
        self.assertInvalid(
            "key", MetaConstraint.from_dict, {"key": "k:", "type": "less", "value": 1}
        )


class SearchTests(InvalidMixin, SynchronousTestCase):
    """Event and file searches: wire form and validation."""

    def test_defaults(self) -> None:
        search = EventSearch.from_dict({})
        self.assertEqual(search.limit, DEFAULT_LIMIT)
        self.assertEqual(search.skip, 0)
        self.assertEqual(search.to_dict(), {"meta": [], "limit": 100, "skip": 0})
        self.assertEqual(FileRecordSearch().to_dict(), {"meta": [], "limit": 100, "skip": 0})

    def test_event_search_full(self) -> None:
        d = {
            "camera_ids": ["a", "b"],
            "lat_min": 50.0,
            "lat_max": 53.5,
            "long_min": -1.0,
            "long_max": 1.0,
            "after": T_MS,
            "before": T_MS + 1000,
            "after_offset": 36000.0,
            "before_offset": 50400.0,
            "event_type": "meteorpi:meteor",
            "meta": [{"key": "meteorpi:n", "type": "greater", "value": 1.0}],
            "limit": 10,
            "skip": 20,
            "exclude_imported": True,
            "exclude_export_to": ID_D,
        }
        search = EventSearch.from_dict(d)
        self.assertEqual(search.camera_ids, ("a", "b"))
        self.assertEqual(search.after, T)
        self.assertEqual(search.event_type, NSString(ns="meteorpi", value="meteor"))
        self.assertTrue(search.exclude_imported)
        self.assertEqual(search.to_dict(), d)

    def test_file_search_full(self) -> None:
        d = {
            "camera_ids": ["a"],
            "after": T_MS,
            "mime_type": "image/png",
            "semantic_type": "meteorpi:timelapse/frame",
            "meta": [{"key": "meteorpi:s", "type": "string_equals", "value": "x"}],
            "limit": 5,
            "skip": 0,
            "exclude_events": True,
            "exclude_imported": True,
        }
        search = FileRecordSearch.from_dict(d)
        self.assertTrue(search.exclude_events)
        self.assertEqual(search.to_dict(), d)

    def test_file_search_has_no_event_type(self) -> None:
        self.assertNotIn("event_type", attrs.fields_dict(FileRecordSearch))
        self.assertNotIn("exclude_events", attrs.fields_dict(EventSearch))

    def test_ints_accepted_as_numbers(self) -> None:
        search = EventSearch.from_dict({"lat_min": 50, "after_offset": 7200})
        self.assertEqual(search.lat_min, 50.0)
        self.assertEqual(search.after_offset, 7200.0)

    def test_single_camera_id_is_a_list(self) -> None:
        self.assertEqual(EventSearch.from_dict({"camera_ids": "cam  "}).camera_ids, ("cam",))
        self.assertEqual(EventSearch(camera_ids="cam").camera_ids, ("cam",))
        self.assertEqual(
            FileRecordSearch.from_dict({"camera_ids": "cam"}).to_dict()["camera_ids"], ["cam"]
        )

    def test_booleans(self) -> None:
        for value, expected in ((True, True), (1, True), (False, False), (0, False), (None, False)):
            d = {"exclude_events": value, "exclude_imported": value}
            search = FileRecordSearch.from_dict(d)
            self.assertIs(search.exclude_events, expected)
            self.assertIs(search.exclude_imported, expected)
        for bad in ("true", 2, 1.0, []):
            d = {"exclude_events": bad}
            self.assertInvalid("exclude_events", FileRecordSearch.from_dict, d)

    def test_unset_flags_omitted(self) -> None:
        d = FileRecordSearch.from_dict({"exclude_events": False}).to_dict()
        self.assertNotIn("exclude_events", d)
        self.assertNotIn("exclude_imported", d)

    def test_unknown_keys_ignored(self) -> None:
        self.assertEqual(EventSearch.from_dict({"exclude_incomplete": True}), EventSearch())

    def test_null_is_absent(self) -> None:
        self.assertEqual(
            EventSearch.from_dict({"camera_ids": None, "limit": None, "meta": None}), EventSearch()
        )

    def test_range_errors(self) -> None:
        cases = [
            ("camera_ids", {"camera_ids": []}),
            ("camera_ids[1]", {"camera_ids": ["ok", "not ok"]}),
            ("camera_ids", {"camera_ids": 5}),
            ("lat_max", {"lat_min": 10.0, "lat_max": 9.0}),
            ("long_max", {"long_min": 10.0, "long_max": 9.0}),
            ("before", {"after": T_MS, "before": T_MS - 1}),
            ("before_offset", {"after_offset": 100, "before_offset": 99}),
            ("after_offset", {"after_offset": -1}),
            ("after_offset", {"after_offset": 86400}),
            ("before_offset", {"before_offset": 86400.0}),
        ]
        for key, d in cases:
            self.assertInvalid(key, EventSearch.from_dict, d)
            self.assertInvalid(key, FileRecordSearch.from_dict, d)

    def test_equal_bounds_allowed(self) -> None:
        search = EventSearch.from_dict(
            {"after": T_MS, "before": T_MS, "lat_min": 1, "lat_max": 1, "before_offset": 86399.5}
        )
        self.assertEqual(search.before, T)
        self.assertEqual(search.before_offset, 86399.5)

    def test_limit_and_skip(self) -> None:
        for bad in (-1, 1.5, 10.0, "10", True, 10001, 0):
            self.assertInvalid("limit", EventSearch.from_dict, {"limit": bad})
        for bad in (-1, 2.0, "1", False):
            self.assertInvalid("skip", EventSearch.from_dict, {"skip": bad})
        self.assertEqual(EventSearch.from_dict({"limit": 10000}).limit, 10000)

    def test_max_limit(self) -> None:
        self.assertInvalid("limit", EventSearch.from_dict, {"limit": 51}, max_limit=50)
        self.assertEqual(FileRecordSearch.from_dict({"limit": 50}, max_limit=50).limit, 50)
        self.assertEqual(EventSearch.from_dict({"limit": 0}, max_limit=None).limit, 0)
        self.assertEqual(EventSearch.from_dict({"limit": 10**6}, max_limit=None).limit, 10**6)

    def test_wrong_types(self) -> None:
        cases = [
            ("lat_min", {"lat_min": "50"}),
            ("long_max", {"long_max": True}),
            ("after", {"after": 1.5}),
            ("before", {"before": "2015-07-15"}),
            ("exclude_export_to", {"exclude_export_to": "config-1"}),
            ("event_type", {"event_type": "meteorpi:"}),
            ("meta", {"meta": {"key": "k"}}),
            ("meta[0].type", {"meta": [{"key": "k", "type": "about", "value": 1}]}),
            ("meta[0].value", {"meta": [{"key": "k", "type": "after", "value": "x"}]}),
        ]
        for key, d in cases:
            self.assertInvalid(key, EventSearch.from_dict, d)
        self.assertInvalid("mime_type", FileRecordSearch.from_dict, {"mime_type": 5})
        self.assertInvalid("semantic_type", FileRecordSearch.from_dict, {"semantic_type": ":x"})

    def test_not_an_object(self) -> None:
        self.assertInvalid("", EventSearch.from_dict, [])

    def test_constructor_checks(self) -> None:
        self.assertInvalid("lat_max", EventSearch, lat_min=2, lat_max=1)
        many = [MetaConstraint(key="a:b", type="greater", value=1.0)] * (MAX_META_CONSTRAINTS + 1)
        self.assertInvalid("meta", EventSearch, meta=many)
        self.assertInvalid("meta", FileRecordSearch.from_dict,
                           {"meta": [c.to_dict() for c in many]})
        self.assertEqual(len(EventSearch(meta=many[1:]).meta), MAX_META_CONSTRAINTS)
        self.assertInvalid("camera_ids", EventSearch, camera_ids=[])
        self.assertInvalid("after_offset", EventSearch, after_offset=86400)
        self.assertInvalid("before", EventSearch, before=datetime(2015, 1, 1))
        self.assertInvalid("limit", EventSearch, limit=-1)

    def test_round_trip(self) -> None:
        search = FileRecordSearch(
            camera_ids=["x"],
            after=T,
            after_offset=1.25,
            semantic_type="a:b",
            meta=[MetaConstraint(key="k", type="before", value=T)],
            exclude_export_to=ID_D,
        )
        self.assertEqual(FileRecordSearch.from_dict(search.to_dict()), search)


class TimeWindowTests(InvalidMixin, SynchronousTestCase):
    """Daily export windows."""

    def test_parse_and_str(self) -> None:
        window = TimeWindow.parse("22:00-06:30")
        self.assertEqual(window, TimeWindow(start=22 * 60, end=6 * 60 + 30))
        self.assertEqual(str(window), "22:00-06:30")
        self.assertEqual(str(TimeWindow.parse("00:00-24:00")), "00:00-24:00")

    def test_bad_windows(self) -> None:
        bad_windows = (
            "25:00-01:00",
            "22:60-23:00",
            "24:00-01:00",
            "01:00-00:00",
            "10:00-10:00",
            "2200-0600",
            "22:00 - 06:00",
            "1:00-2:00",
            5,
        )
        for bad in bad_windows:
            self.assertInvalid("window", TimeWindow.parse, bad)
        self.assertInvalid("window", TimeWindow, start=600, end=600)
        self.assertInvalid("end", TimeWindow, start=600, end=1441)

    def test_contains(self) -> None:
        day = datetime_to_ms(datetime(2015, 7, 15, tzinfo=UTC))
        hour = 3_600_000
        day_window = TimeWindow.parse("09:00-17:00")
        self.assertTrue(day_window.contains(day + 9 * hour))
        self.assertFalse(day_window.contains(day + 17 * hour))
        self.assertFalse(day_window.contains(day + 8 * hour))
        night = TimeWindow.parse("22:00-06:00")
        self.assertTrue(night.contains(day + 23 * hour))
        self.assertTrue(night.contains(day + 2 * hour))
        self.assertFalse(night.contains(day + 6 * hour))
        self.assertFalse(night.contains(day + 12 * hour))
        self.assertTrue(TimeWindow.parse("00:00-24:00").contains(day - 1))


class ExportConfigurationTests(InvalidMixin, SynchronousTestCase):
    """Export configurations."""

    def test_to_dict_blanks_password(self) -> None:
        config = ExportConfiguration(
            config_id=ID_D,
            type="event",
            target_url="https://hub.example/api/import",
            user_id="camera-7",
            password="s3cret",
            search=EventSearch(camera_ids=["b827eb0a1b2c"]),
            config_name="to hub",
            config_description="everything to the hub",
            enabled=True,
            window=["22:00-06:00"],
            max_bytes_per_second=65536,
            priority=2,
            ca_file="/etc/meteord/hub-ca.pem",
            pinned_certificates=[PIN_A.upper()],
        )
        self.assertEqual(config.to_dict(), export_dict(password=""))
        self.assertEqual(config.to_dict(include_password=True), export_dict())
        self.assertNotIn("s3cret", repr(config))

    def test_minimal_to_dict(self) -> None:
        d = export_dict(type="file", search={}, enabled=False)
        for key in ("window", "max_bytes_per_second", "priority", "password", "ca_file",
                    "pinned_certificates"):
            del d[key]
        config = ExportConfiguration.from_dict(d)
        self.assertEqual(config.password, "")
        self.assertEqual(
            config.to_dict(),
            {
                "config_id": ID_D,
                "type": "file",
                "target_url": "https://hub.example/api/import",
                "user_id": "camera-7",
                "password": "",
                "search": {"meta": [], "limit": 100, "skip": 0},
                "config_name": "to hub",
                "config_description": "everything to the hub",
                "enabled": False,
            },
        )

    def test_round_trip(self) -> None:
        config = ExportConfiguration.from_dict(export_dict())
        self.assertIsInstance(config.search, EventSearch)
        self.assertEqual(config.window, (TimeWindow(start=1320, end=360),))
        self.assertEqual(ExportConfiguration.from_dict(config.to_dict(True)), config)

    def test_search_type_follows_type(self) -> None:
        config = ExportConfiguration.from_dict(export_dict(type="file", search={"limit": 0}))
        self.assertIsInstance(config.search, FileRecordSearch)
        self.assertEqual(config.search.limit, 0)

    def test_search_type_mismatch(self) -> None:
        config = ExportConfiguration.from_dict(export_dict())
        kwargs = attrs.asdict(config, recurse=False)
        kwargs["search"] = FileRecordSearch()
        self.assertInvalid("search", ExportConfiguration, **kwargs)

    def test_search_errors_are_nested(self) -> None:
        self.assertInvalid(
            "search.camera_ids",
            ExportConfiguration.from_dict,
            export_dict(search={"camera_ids": []}),
        )
        self.assertInvalid("search", ExportConfiguration.from_dict, export_dict(search="all"))

    def test_missing_required_keys(self) -> None:
        optional = ("password", "enabled", "window", "max_bytes_per_second", "priority",
                    "ca_file", "pinned_certificates")
        for key in export_dict():
            if key not in optional:
                self.assertInvalid(key, ExportConfiguration.from_dict, without(export_dict(), key))

    def test_enabled(self) -> None:
        self.assertIs(ExportConfiguration.from_dict(export_dict(enabled=1)).enabled, True)
        self.assertIs(
            ExportConfiguration.from_dict(without(export_dict(), "enabled")).enabled, False
        )
        self.assertInvalid("enabled", ExportConfiguration.from_dict, export_dict(enabled="yes"))

    def test_target_url(self) -> None:
        self.assertEqual(
            ExportConfiguration.from_dict(
                plain_export_dict(target_url="http://10.0.0.2:8080/api/import")
            ).target_url,
            "http://10.0.0.2:8080/api/import",
        )
        for bad in (
            "ftp://hub.example/import",
            "hub.example/import",
            "https:///import",
            "https://user:pw@hub.example/import",
            "https://hub.example:99999/import",
            "https://hub.example/a b",
            "https://hub.example/\r\n",
            "",
            5,
        ):
            d = export_dict(target_url=bad)
            self.assertInvalid("target_url", ExportConfiguration.from_dict, d)

    def test_window_errors(self) -> None:
        self.assertInvalid("window", ExportConfiguration.from_dict, export_dict(window=[]))
        d = export_dict(window="22:00-06:00")
        self.assertInvalid("window", ExportConfiguration.from_dict, d)
        self.assertInvalid(
            "window[1]",
            ExportConfiguration.from_dict,
            export_dict(window=["22:00-06:00", "22:00"]),
        )

    def test_in_window(self) -> None:
        noon = datetime_to_ms(datetime(2015, 7, 15, 12, tzinfo=UTC))
        midnight = datetime_to_ms(datetime(2015, 7, 16, tzinfo=UTC))
        config = ExportConfiguration.from_dict(export_dict(window=["22:00-06:00", "11:00-11:30"]))
        self.assertFalse(config.in_window(noon))
        self.assertTrue(config.in_window(midnight))
        always = ExportConfiguration.from_dict(without(export_dict(), "window"))
        self.assertTrue(always.in_window(noon))

    def test_numbers(self) -> None:
        cases = {
            "max_bytes_per_second": [0, -5, 1.5, "10", True],
            "priority": [1.5, "1", False, 2**63],
        }
        for key, values in cases.items():
            for value in values:
                self.assertInvalid(key, ExportConfiguration.from_dict, export_dict(**{key: value}))
        self.assertEqual(ExportConfiguration.from_dict(export_dict(priority=-3)).priority, -3)

    def test_other_bad_values(self) -> None:
        cases = {
            "type": ["events", None],
            "config_id": ["x"],
            "user_id": ["a:b", ""],
            "password": [5, "a\x00"],
            "config_name": [3],
        }
        for key, values in cases.items():
            for value in values:
                self.assertInvalid(key, ExportConfiguration.from_dict, export_dict(**{key: value}))

    def test_pins_are_normalised(self) -> None:
        colons = ":".join(PIN_B[i:i + 2] for i in range(0, 64, 2)).upper()
        config = ExportConfiguration.from_dict(
            export_dict(pinned_certificates=[colons, PIN_A.upper(), PIN_A]))
        self.assertEqual(config.pinned_certificates, (PIN_A, PIN_B))
        self.assertEqual(config.to_dict()["pinned_certificates"], [PIN_A, PIN_B])
        self.assertEqual(ExportConfiguration.from_dict(config.to_dict(True)), config)
        built = attrs.evolve(config, pinned_certificates={PIN_B, colons.lower()})
        self.assertEqual(built.pinned_certificates, (PIN_B,))

    def test_null_tls_keys_are_absent(self) -> None:
        config = ExportConfiguration.from_dict(
            export_dict(ca_file=None, pinned_certificates=None))
        self.assertEqual((config.ca_file, config.pinned_certificates), (None, None))
        self.assertNotIn("ca_file", config.to_dict())
        self.assertNotIn("pinned_certificates", config.to_dict())

    def test_bad_pins(self) -> None:
        whole = [[], "0f" * 32, {"pin": PIN_A}, 5, True]
        for value in whole:
            self.assertInvalid("pinned_certificates", ExportConfiguration.from_dict,
                               export_dict(pinned_certificates=value))
        items = [
            "0f" * 31,
            "0f" * 33,
            "0g" + "0f" * 31,
            "sha256:" + PIN_A,
            ":".join(["0f"] * 31) + ":",
            "0f:" + "0f" * 31,
            "0f-" * 31 + "0f",
            " " + PIN_A,
            PIN_A + "\n",
            "",
            None,
            64,
            ["0f"] * 32,
        ]
        for value in items:
            self.assertInvalid("pinned_certificates[1]", ExportConfiguration.from_dict,
                               export_dict(pinned_certificates=[PIN_B, value]))
        config = ExportConfiguration.from_dict(export_dict())
        self.assertInvalid("pinned_certificates", attrs.evolve, config, pinned_certificates=())
        self.assertInvalid("pinned_certificates", attrs.evolve, config,
                           pinned_certificates=PIN_A)

    def test_bad_ca_files(self) -> None:
        for value in ("", "hub-ca.pem", "./hub-ca.pem", "~/ca.pem", "/etc/ca\n.pem",
                      "/etc/ca\x00.pem", 5, ["/etc/ca.pem"], {"path": "/etc/ca.pem"}, True):
            self.assertInvalid("ca_file", ExportConfiguration.from_dict,
                               export_dict(ca_file=value))
        config = ExportConfiguration.from_dict(export_dict())
        self.assertInvalid("ca_file", attrs.evolve, config, ca_file="relative.pem")

    def test_tls_keys_need_an_https_target(self) -> None:
        http = "http://hub.example/api/import"
        self.assertInvalid("ca_file", ExportConfiguration.from_dict,
                           export_dict(target_url=http, pinned_certificates=None))
        self.assertInvalid("pinned_certificates", ExportConfiguration.from_dict,
                           export_dict(target_url=http, ca_file=None))
        config = ExportConfiguration.from_dict(plain_export_dict(target_url=http))
        self.assertInvalid("ca_file", attrs.evolve, config, ca_file="/etc/ca.pem")
        upper = ExportConfiguration.from_dict(export_dict(target_url="HTTPS://hub.example/"))
        self.assertEqual(upper.ca_file, "/etc/meteord/hub-ca.pem")

    def test_input_not_mutated(self) -> None:
        d = export_dict()
        before = copy.deepcopy(d)
        ExportConfiguration.from_dict(d)
        self.assertEqual(d, before)
