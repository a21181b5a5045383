"""
Conformance tests of the records half of the store (meteord.store._records and _search) on
SQLite and PostgreSQL: round trips of every entity, a fixed small data set searched with every
key and constraint type, statuses in force, high-water mark rollback, typed errors that change
nothing, imports (idempotent, concurrent) and bulk loading.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
from twisted.internet.defer import DeferredList, fail, gatherResults
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from meteord.errors import EntityNotFound, NoCameraStatus, StoreUnavailable
from meteord.model import (
    MAX_META_CONSTRAINTS,
    CameraStatus,
    Event,
    EventSearch,
    FileRecord,
    FileRecordSearch,
    InvalidEntity,
    Location,
    Meta,
    MetaConstraint,
    Orientation,
    Point,
    datetime_to_ms,
    ms_to_datetime,
)
from meteord.store import _records
from meteord.store._sql import Query, migrations
from meteord.wire import encode_json
from tests._stores import CAMERA, PostgresStoreMixin, SQLiteStoreMixin

T0 = datetime(2024, 1, 1, 12, 0, tzinfo=timezone.utc)
# 1969-12-31 23:00 UTC: before the epoch, 11 hours after the previous noon.
BEFORE_EPOCH = ms_to_datetime(-3_600_000)
NASTY = "O'Brien\"; DROP TABLE events; -- ?%s %% _*"


def at(days: float = 0, hours: float = 0, seconds: float = 0, ms: int = 0) -> datetime:
    return T0 + timedelta(days=days, hours=hours, seconds=seconds, milliseconds=ms)


def a_status(camera_id: str = "cam-a", lat: float = 50.0, long: float = -1.0,
             **changes: Any) -> CameraStatus:
    """A camera status to hand to update_camera_status (which gives it id and time)."""
    status = CameraStatus(
        camera_id=camera_id,
        status_id="0" * 32,
        lens="Fujinon 4mm",
        sensor="Sony IMX",
        software_version=2,
        valid_from=T0,
        location=Location(lat=lat, long=long, gps=True, error=12.5),
        orientation=Orientation(alt=89.5, az=180.0, error=0.25, rot=-3.0, width=90.0),
        regions=[[Point(x=0, y=0), Point(x=1919, y=0), Point(x=960, y=1079)],
                 [Point(x=5, y=6)]],
        inst_url="https://example.org/station?a=1&b='2'",
        inst_name="Station; -- 100%",
    )
    return attrs.evolve(status, **changes)


def number(key: str, value: float) -> Meta:
    return Meta(key=key, type="number", value=value)


def date(key: str, value: datetime) -> Meta:
    return Meta(key=key, type="date", value=value)


def string(key: str, value: str) -> Meta:
    return Meta(key=key, type="string", value=value)


def constraint(key: str, constraint_type: str, value: Any) -> MetaConstraint:
    return MetaConstraint(key=key, type=constraint_type, value=value)


# Direct database access for what the store API does not show.


def _add_export_config(config_id: str, tasks: list[tuple[str, str]]):
    """An export config with a pending task for each (kind, public id) given."""
    rows = yield Query(
        "INSERT INTO export_configs (config_id, type, target_url, user_id, password, search, "
        "config_name, config_description, enabled) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "RETURNING id",
        (config_id, "event", "https://hub.example/api/import", "u", "p", "{}", "n", "d", False),
    )
    for kind, public_id in tasks:
        table, column = ("events", "event_id") if kind == "event" else ("files", "file_id")
        entity = yield Query(f"SELECT id FROM {table} WHERE {column} = ?", (public_id,))
        yield Query(
            "INSERT INTO export_tasks (config_pk, entity_kind, entity_pk, state, due_time, "
            "created) VALUES (?, ?, ?, ?, ?, ?)",
            (rows[0][0], kind, entity[0][0], "pending", 0, 0),
        )


def _count(table: str):
    rows = yield Query(f"SELECT count(*) FROM {table}")
    return rows[0][0]


def _imported(table: str, column: str, public_id: str):
    rows = yield Query(f"SELECT imported_by, imported_at FROM {table} WHERE {column} = ?",
                       (public_id,))
    return tuple(rows[0])


def _add_user(user_id: str):
    yield Query("INSERT INTO users (user_id, password_hash, role_mask) VALUES (?, ?, ?)",
                (user_id, "x", 1))


class _Helpers:
    """
    One database per test class, since creating a PostgreSQL database per test would make the
    suite slow: each test opens the store on it and, in `prepare`, empties it. Also writing
    source files and counting rows.
    """

    def database_url(self) -> str:
        cls = type(self)
        if "_class_url" not in cls.__dict__:
            cls._class_url = super().database_url()
        return cls._class_url

    async def setUp(self) -> None:
        await super().setUp()
        await self.prepare()

    async def prepare(self) -> None:
        await self.store.clear_database()

    def source_file(self, content: bytes) -> str:
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "upload.bin")
        with open(path, "wb") as f:
            f.write(content)
        return path

    async def count(self, table: str) -> int:
        return await self.store.run(_count, table)

    def stored_file_ids(self) -> list[str]:
        return list(self.store.file_store.iter_file_ids())


class RoundTripTests(_Helpers):
    """Every entity comes back from the store as it went in."""

    async def test_status_round_trip(self) -> None:
        given = a_status()
        stored = await self.store.update_camera_status(given, at(hours=-1), "cam-a")
        self.assertNotEqual(stored.status_id, given.status_id)
        self.assertEqual(stored, attrs.evolve(given, status_id=stored.status_id,
                                              valid_from=at(hours=-1)))
        self.assertEqual(await self.store.get_camera_status_by_id(stored.status_id), stored)
        self.assertTrue(await self.store.has_status_id(stored.status_id))
        self.assertFalse(await self.store.has_status_id("1" * 32))
        self.assertIsNone(await self.store.get_camera_status_by_id("1" * 32))

    async def test_status_without_optional_fields_round_trip(self) -> None:
        given = a_status(inst_url=None, inst_name=None, regions=[],
                         location=Location(lat=-90.0, long=180.0, gps=False, error=0.0))
        stored = await self.store.update_camera_status(given, at(), "cam-a")
        self.assertEqual(await self.store.get_camera_status(at(), "cam-a"), stored)
        self.assertEqual(stored.to_dict()["location"],
                         {"lat": -90.0, "long": 180.0, "gps": False, "error": 0.0})
        self.assertNotIn("inst_url", stored.to_dict())

    async def test_status_defaults_to_own_camera_and_now(self) -> None:
        clock = Clock()
        clock.advance(datetime_to_ms(at()) / 1000 + 0.0125)
        self.store.clock = clock
        stored = await self.store.update_camera_status(a_status())
        self.assertEqual((stored.camera_id, stored.valid_from), (CAMERA, at(ms=12)))
        self.assertEqual(await self.store.get_camera_status(), stored)
        self.assertEqual(await self.store.get_cameras(), [CAMERA])

    async def test_registered_file_round_trip(self) -> None:
        content = b"\x89PNG\r\n" + bytes(range(256)) * 40
        status = await self.store.update_camera_status(a_status(), at(days=-1), "cam-a")
        source = self.source_file(content)
        metas = [number("meteorpi:exposure", 1e-05), date("meteorpi:peak", at(ms=-1)),
                 string("other:note", "")]
        record = await self.store.register_file(source, "image/png", "meteorpi:image",
                                                at(ms=7), metas, "cam-a", "sky.png")
        self.assertEqual(record, FileRecord(
            file_id=record.file_id, camera_id="cam-a", mime_type="image/png",
            semantic_type="meteorpi:image", file_time=at(ms=7), file_size=len(content),
            status_id=status.status_id, md5=hashlib.md5(content).hexdigest(),
            sha256=hashlib.sha256(content).hexdigest(), file_name="sky.png", meta=metas))
        self.assertFalse(os.path.exists(source))
        with open(self.store.file_path_for_id(record.file_id).path, "rb") as f:
            self.assertEqual(f.read(), content)
        self.assertEqual(await self.store.get_file(record.file_id), record)
        self.assertEqual(await self.store.get_file(record.file_id.upper()), record)
        self.assertTrue(await self.store.has_file_id(record.file_id))
        self.assertFalse(await self.store.has_file_id("2" * 32))
        self.assertIsNone(await self.store.get_file("2" * 32))

    async def test_a_file_whose_record_fails_goes_back_to_its_source(self) -> None:
        await self.store.update_camera_status(a_status(), at(days=-1), "cam-a")
        source = self.source_file(b"precious bytes")
        run = self.store.run
        calls = []

        def insert_fails(operation: Any, *args: Any) -> Any:
            calls.append(operation)
            if len(calls) == 2:  # the check passed; the insert is refused
                return fail(StoreUnavailable("database unavailable"))
            return run(operation, *args)

        self.patch(self.store, "run", insert_fails)
        with self.assertRaises(StoreUnavailable):
            await self.store.register_file(source, "image/png", "meteorpi:image", at(), [],
                                           "cam-a")
        with open(source, "rb") as f:
            self.assertEqual(f.read(), b"precious bytes")
        self.assertEqual(list(self.store.file_store.iter_file_ids()), [])

    async def test_registered_event_round_trip(self) -> None:
        status = await self.store.update_camera_status(a_status(), at(days=-1), "cam-a")
        first = await self.store.register_file(self.source_file(b"one"), "image/png",
                                               "meteorpi:image", at(), [], "cam-a")
        second = await self.store.register_file(
            self.source_file(b"two"), "video/mp4", "meteorpi:video", at(seconds=1),
            [string("meteorpi:codec", "h264")], "cam-a")
        metas = [number("meteorpi:mag", -2.5), date("meteorpi:peak", at(ms=500)),
                 string("meteorpi:note", NASTY), number("meteorpi:mag", 3.0)]
        event = await self.store.register_event("cam-a", at(), "meteorpi:meteor",
                                                [second, first, second], metas)
        self.assertEqual(event, Event(
            event_id=event.event_id, camera_id="cam-a", event_time=at(),
            event_type="meteorpi:meteor", status_id=status.status_id,
            files=[second, first, second], meta=metas))
        self.assertEqual(await self.store.get_event(event.event_id), event)
        self.assertEqual(encode_json(await self.store.get_event_wire(event.event_id)),
                         encode_json(event.to_dict()))
        self.assertTrue(await self.store.has_event_id(event.event_id))
        self.assertFalse(await self.store.has_event_id("3" * 32))
        self.assertIsNone(await self.store.get_event("3" * 32))

    async def test_stored_ids(self) -> None:
        """Which ids are stored, each kind looked up in its own table, in one call."""
        status = await self.store.update_camera_status(a_status(), at(days=-1), "cam-a")
        record = await self.store.register_file(self.source_file(b"one"), "image/png",
                                                "meteorpi:image", at(), [], "cam-a")
        event = await self.store.register_event("cam-a", at(), "meteorpi:meteor", [record], [])
        missing = "4" * 32
        self.assertEqual(
            await self.store.stored_ids([event.event_id.upper(), missing, event.event_id],
                                        (missing, record.file_id), [status.status_id]),
            (frozenset([event.event_id]), frozenset([record.file_id]),
             frozenset([status.status_id])))
        self.assertEqual(
            await self.store.stored_ids([record.file_id], [status.status_id], [event.event_id]),
            (frozenset(), frozenset(), frozenset()))
        self.assertEqual(await self.store.stored_ids(), (frozenset(), frozenset(), frozenset()))
        many = [f"{n:032x}" for n in range(1, 1201)] + [record.file_id]
        self.assertEqual(await self.store.stored_ids(file_ids=many),
                         (frozenset(), frozenset([record.file_id]), frozenset()))

    async def test_event_without_files_or_meta_round_trip(self) -> None:
        await self.store.update_camera_status(a_status(), at(days=-1))
        event = await self.store.register_event(None, at(), "other:plane")
        self.assertEqual((event.camera_id, event.files, event.meta), (CAMERA, (), ()))
        self.assertEqual(await self.store.get_event(event.event_id), event)


class StatusTests(_Helpers):
    """Which status is in force when, and what valid_to says."""

    async def setUp(self) -> None:
        await super().setUp()
        self.first = await self.store.update_camera_status(a_status(), at(), "cam-a")
        self.second = await self.store.update_camera_status(a_status(lat=51.0), at(days=2),
                                                            "cam-a")
        # Two statuses valid from the same time: the later created one is in force.
        self.tie_old = await self.store.update_camera_status(a_status(lat=1.0), at(days=5),
                                                             "cam-a")
        self.tie_new = await self.store.update_camera_status(a_status(lat=2.0), at(days=5),
                                                             "cam-a")
        self.other = await self.store.update_camera_status(a_status(), at(days=1), "cam-b")

    async def test_status_in_force_at_times(self) -> None:
        expected = [
            (at(ms=-1), None),
            (at(), self.first.status_id),
            (at(days=2, ms=-1), self.first.status_id),
            (at(days=2), self.second.status_id),
            (at(days=5, ms=-1), self.second.status_id),
            (at(days=5), self.tie_new.status_id),
            (at(days=500), self.tie_new.status_id),
        ]
        for time, status_id in expected:
            status = await self.store.get_camera_status(time, "cam-a")
            self.assertEqual(None if status is None else status.status_id, status_id, time)

    async def test_valid_to_is_the_next_valid_from(self) -> None:
        valid_to = {}
        for status in (self.first, self.second, self.tie_old, self.tie_new, self.other):
            stored = await self.store.get_camera_status_by_id(status.status_id)
            valid_to[status.status_id] = stored.valid_to
        self.assertEqual(valid_to, {
            self.first.status_id: at(days=2),
            self.second.status_id: at(days=5),
            self.tie_old.status_id: at(days=5),
            self.tie_new.status_id: None,
            self.other.status_id: None,
        })
        self.assertEqual(self.first.valid_to, None)

    async def test_status_inserted_before_a_later_one_has_valid_to(self) -> None:
        middle = await self.store.update_camera_status(a_status(), at(days=1), "cam-a")
        self.assertEqual(middle.valid_to, at(days=2))
        first = await self.store.get_camera_status(at(), "cam-a")
        self.assertEqual(first.valid_to, at(days=1))

    async def test_unknown_camera_has_no_status(self) -> None:
        self.assertIsNone(await self.store.get_camera_status(at(days=3), "cam-z"))

    async def test_cameras_sorted(self) -> None:
        await self.store.update_camera_status(a_status(), at(), "Z-cam")
        await self.store.update_camera_status(a_status(), at(), "_cam")
        self.assertEqual(await self.store.get_cameras(), ["Z-cam", "_cam", "cam-a", "cam-b"])


class DataSetTests(_Helpers):
    """
    The fixed data set, with deterministic ids (so ties in time have a known order), and the
    exact results of searches with every key and constraint type.
    """

    async def prepare(self) -> None:
        """Build the data set in the first test of the class; the tests only read it."""
        cls = type(self)
        if "_data_set" not in cls.__dict__:
            await self.store.clear_database()
            cls._data_set = await self.build_data_set()
        self.names, entities = cls._data_set
        for name, entity in entities.items():
            setattr(self, name, entity)

    async def build_data_set(self) -> tuple[dict[str, str], dict[str, Any]]:
        counter = itertools.count(1)
        self.patch(_records, "new_id", lambda: f"{next(counter):032x}")
        names: dict[str, str] = {}
        entities: dict[str, Any] = {}
        store = self.store

        async def status(name: str, camera_id: str, time: datetime, lat: float,
                         long: float) -> None:
            stored = await store.update_camera_status(a_status(lat=lat, long=long), time,
                                                      camera_id)
            names[stored.status_id] = name
            entities[name] = stored

        async def file(name: str, camera_id: str, time: datetime, mime_type: str,
                       semantic_type: str, metas: list[Meta]) -> None:
            stored = await store.register_file(self.source_file(name.encode()), mime_type,
                                               semantic_type, time, metas, camera_id)
            names[stored.file_id] = name
            entities[name] = stored

        async def event(name: str, camera_id: str, time: datetime, event_type: str,
                        files: list[str], metas: list[Meta]) -> None:
            stored = await store.register_event(camera_id, time, event_type,
                                                [entities[f] for f in files], metas)
            names[stored.event_id] = name
            entities[name] = stored

        await status("SA1", "cam-a", at(days=-10), 50.0, -1.0)
        await status("SA2", "cam-a", at(days=1), 52.0, 0.0)
        await status("SB1", "cam-b", at(days=-10), 40.0, 10.0)
        await status("SC1", "cam-c", ms_to_datetime(-86_400_000 * 30), -30.0, 150.0)
        await status("SC2", "cam-c", ms_to_datetime(-86_400_000 * 30), -31.0, 151.0)

        await file("F1", "cam-a", at(hours=1), "image/png", "meteorpi:image",
                   [number("meteorpi:exposure", 10.0)])
        await file("F2", "cam-a", at(hours=1, seconds=1), "video/mp4", "meteorpi:video", [])
        await file("F3", "cam-a", at(days=2), "image/png", "meteorpi:image",
                   [number("meteorpi:exposure", 2.5)])
        await file("F4", "cam-b", at(hours=1), "image/png", "meteorpi:image",
                   [string("meteorpi:note", "100%")])
        await file("F5", "cam-b", at(hours=12.5), "image/jpeg", "meteorpi:image",
                   [date("meteorpi:peak", at(hours=12.5))])
        await file("F6", "cam-a", at(hours=3), "text/plain", "meteorpi:log",
                   [string("meteorpi:note", NASTY)])
        await file("F7", "cam-c", at(days=5), "image/jpeg", "other:sky",
                   [number("meteorpi:exposure", 0.5)])
        await file("F8", "cam-c", BEFORE_EPOCH + timedelta(seconds=1), "image/png",
                   "meteorpi:image", [])

        await event("E1", "cam-a", at(hours=1), "meteorpi:meteor", ["F2", "F1"],
                    [number("meteorpi:mag", -2.5), date("meteorpi:peak", at(hours=1, ms=500)),
                     string("meteorpi:note", NASTY)])
        await event("E2", "cam-a", at(days=2), "meteorpi:meteor", ["F3"],
                    [number("meteorpi:mag", 1.0), string("meteorpi:note", "100%")])
        await event("E3", "cam-b", at(hours=1), "meteorpi:plane", ["F4"],
                    [number("meteorpi:mag", 1.0), string("meteorpi:note", "100x")])
        await event("E4", "cam-b", at(hours=12.5), "meteorpi:meteor", ["F4", "F5"],
                    [date("meteorpi:peak", at(hours=13)), string("meteorpi:note", "a?b")])
        await event("E5", "cam-c", at(hours=1), "meteorpi:meteor", [],
                    [number("meteorpi:mag", 3.0)])
        await event("E6", "cam-c", BEFORE_EPOCH, "meteorpi:meteor", [],
                    [date("meteorpi:peak", BEFORE_EPOCH + timedelta(milliseconds=100))])

        SB1, SC2 = entities["SB1"], entities["SC2"]
        IF1 = FileRecord(
            file_id="f" * 32, camera_id="cam-b", mime_type="image/png",
            semantic_type="meteorpi:image", file_time=at(days=3), file_size=3,
            status_id=SB1.status_id, md5="a" * 32)
        IF2 = attrs.evolve(IF1, file_id="fd" * 16, camera_id="cam-c", file_time=at(days=4),
                           status_id=SC2.status_id)
        IE = Event(
            event_id="e" * 32, camera_id="cam-b", event_time=at(days=3),
            event_type="meteorpi:meteor", status_id=SB1.status_id, files=[IF1],
            meta=[string("meteorpi:note", "imported")])
        entities.update({"IF1": IF1, "IF2": IF2, "IE": IE})
        names.update({"f" * 32: "IF1", "fd" * 16: "IF2", "e" * 32: "IE"})
        self.assertTrue(await store.import_event(IE, "hub"))
        self.assertTrue(await store.import_file_record(IF2, "hub"))

        await store.run(_add_export_config, "c" * 32, [("event", entities["E2"].event_id),
                                                      ("file", entities["F3"].file_id)])
        await store.run(_add_export_config, "d" * 32, [("event", entities["E1"].event_id)])
        return names, entities

    async def events(self, expected_count: int = -1, **keys: Any) -> list[str]:
        """The names of the events a search finds; checks the count when given."""
        search = EventSearch(limit=0, **keys)
        result = await self.store.search_events(search)
        names = [self.names[event.event_id] for event in result["events"]]
        self.assertEqual(result["count"], len(names) if expected_count < 0 else expected_count)
        self.assertEqual(
            encode_json(await self.store.search_events_wire(search)),
            encode_json({"count": result["count"],
                         "events": [event.to_dict() for event in result["events"]]}))
        return names

    async def files(self, expected_count: int = -1, **keys: Any) -> list[str]:
        result = await self.store.search_files(FileRecordSearch(limit=0, **keys))
        names = [self.names[record.file_id] for record in result["files"]]
        self.assertEqual(result["count"], len(names) if expected_count < 0 else expected_count)
        return names

    ALL_EVENTS = ["IE", "E2", "E4", "E5", "E3", "E1", "E6"]
    ALL_FILES = ["F7", "IF2", "IF1", "F3", "F5", "F6", "F2", "F4", "F1", "F8"]

    async def test_every_event_newest_first_ties_by_id(self) -> None:
        self.assertEqual(await self.events(), self.ALL_EVENTS)

    async def test_every_file_newest_first_ties_by_id(self) -> None:
        self.assertEqual(await self.files(), self.ALL_FILES)

    async def test_found_entities_are_whole(self) -> None:
        result = await self.store.search_events(EventSearch(camera_ids="cam-a"))
        self.assertEqual(result["events"], [self.E2, self.E1])
        self.assertEqual(result["events"][1].files, (self.F2, self.F1))
        result = await self.store.search_files(FileRecordSearch(camera_ids="cam-b"))
        self.assertEqual(result["files"], [self.IF1, self.F5, self.F4])
        self.assertEqual(await self.store.get_event(self.IE.event_id), self.IE)

    async def test_wire_forms_are_what_to_dict_gives(self) -> None:
        """Every event read in its wire form is its entity's ``to_dict``, key order included."""
        for name in self.ALL_EVENTS:
            event = getattr(self, name)
            wire = await self.store.get_event_wire(event.event_id.upper())
            self.assertEqual(encode_json(wire), encode_json(event.to_dict()))
        self.assertIsNone(await self.store.get_event_wire("3" * 32))
        paged = await self.store.search_events_wire(EventSearch(limit=2, skip=1))
        self.assertEqual(paged, {"count": len(self.ALL_EVENTS), "events": [
            getattr(self, name).to_dict() for name in self.ALL_EVENTS[1:3]]})
        self.assertEqual(await self.store.search_events_wire(EventSearch(camera_ids="none")),
                         {"count": 0, "events": []})

    async def test_reads_by_id_asked_together_share_a_statement(self) -> None:
        """
        Event reads asked for while two are under way go as one statement, and each reader
        gets its own event (in either form, whatever the id's case), or None.
        """
        statements = []
        run = self.store.run

        def counting(operation: Any, *args: Any) -> Any:
            statements.append(operation)
            return run(operation, *args)

        self.store.run = counting
        names = self.ALL_EVENTS + ["E1"]
        reads = [self.store.get_event_wire(getattr(self, name).event_id.upper())
                 for name in names]
        reads.append(self.store.get_event_wire("3" * 32))
        entity_reads = [self.store.get_event(getattr(self, name).event_id) for name in names]
        wire = [encode_json(found) for found in await gatherResults(reads)]
        self.assertEqual(wire, [encode_json(getattr(self, name).to_dict()) for name in names]
                         + [b"null"])
        self.assertEqual(await gatherResults(entity_reads),
                         [getattr(self, name) for name in names])
        self.assertEqual(len(statements), 6)

    async def test_camera_ids(self) -> None:
        self.assertEqual(await self.events(camera_ids=["cam-b"]), ["IE", "E4", "E3"])
        self.assertEqual(await self.events(camera_ids=["cam-a", "cam-c"]),
                         ["E2", "E5", "E1", "E6"])
        self.assertEqual(await self.events(camera_ids=["cam-z"]), [])
        self.assertEqual(await self.files(camera_ids="cam-c"), ["F7", "IF2", "F8"])

    async def test_after_and_before_are_exclusive(self) -> None:
        self.assertEqual(await self.events(after=at(hours=1)), ["IE", "E2", "E4"])
        self.assertEqual(await self.events(before=at(hours=1)), ["E6"])
        self.assertEqual(await self.events(after=at(hours=1, ms=-1), before=at(hours=1, ms=1)),
                         ["E5", "E3", "E1"])
        self.assertEqual(await self.events(after=at(hours=1), before=at(hours=12.5)), [])
        self.assertEqual(await self.events(before=BEFORE_EPOCH + timedelta(milliseconds=1)),
                         ["E6"])
        self.assertEqual(await self.files(after=at(hours=1)),
                         ["F7", "IF2", "IF1", "F3", "F5", "F6", "F2"])
        self.assertEqual(await self.files(before=at(hours=1, seconds=1)), ["F4", "F1", "F8"])

    async def test_day_offsets_are_exclusive(self) -> None:
        # Offsets (seconds after 12:00 UTC): E1/E3/E5 3600, E4 45000 (00:30), E2 and IE 0,
        # E6 39600 (23:00 on 1969-12-31, before the epoch).
        self.assertEqual(await self.events(after_offset=3600), ["E4", "E6"])
        self.assertEqual(await self.events(before_offset=3600), ["IE", "E2"])
        self.assertEqual(await self.events(after_offset=3599.999, before_offset=3600.001),
                         ["E5", "E3", "E1"])
        self.assertEqual(await self.events(after_offset=39599.9995, before_offset=39600.0005),
                         ["E6"])
        self.assertEqual(await self.events(after_offset=39000, before_offset=46000),
                         ["E4", "E6"])
        self.assertEqual(await self.events(after_offset=0), ["E4", "E5", "E3", "E1", "E6"])
        self.assertEqual(await self.files(after_offset=3599.5, before_offset=3600.5),
                         ["F4", "F1"])
        self.assertEqual(await self.files(after_offset=39600.5, before_offset=39601.5), ["F8"])
        self.assertEqual(await self.files(after_offset=39600.5, before_offset=39601), [])

    async def test_location_bounds_are_inclusive(self) -> None:
        self.assertEqual(await self.events(lat_min=50.0), ["E2", "E1"])
        self.assertEqual(await self.events(lat_max=40.0), ["IE", "E4", "E5", "E3", "E6"])
        self.assertEqual(await self.events(long_min=0.0, long_max=10.0),
                         ["IE", "E2", "E4", "E3"])
        self.assertEqual(await self.events(lat_min=50.0, lat_max=51.0), ["E1"])
        # SC1 and SC2 tie in time; SC2, the later one, is the status of cam-c's events.
        self.assertEqual(await self.events(lat_min=-31.0, lat_max=-31.0), ["E5", "E6"])
        self.assertEqual(await self.events(lat_min=-30.0, lat_max=-30.0), [])
        self.assertEqual(await self.events(long_max=-1.0), ["E1"])
        self.assertEqual(await self.files(lat_min=50.0), ["F3", "F6", "F2", "F1"])
        self.assertEqual(await self.files(long_min=151.0), ["F7", "IF2", "F8"])

    async def test_types(self) -> None:
        self.assertEqual(await self.events(event_type="meteorpi:plane"), ["E3"])
        self.assertEqual(await self.events(event_type="meteorpi:meteor"),
                         ["IE", "E2", "E4", "E5", "E1", "E6"])
        self.assertEqual(await self.events(event_type="other:meteor"), [])
        self.assertEqual(await self.files(mime_type="image/jpeg"), ["F7", "F5"])
        self.assertEqual(await self.files(semantic_type="other:sky"), ["F7"])
        self.assertEqual(await self.files(semantic_type="meteorpi:log"), ["F6"])
        self.assertEqual(await self.files(mime_type="image/png", semantic_type="meteorpi:image",
                                          camera_ids="cam-a"), ["F3", "F1"])

    async def test_number_constraints_are_inclusive(self) -> None:
        def mag(constraint_type: str, value: float) -> dict:
            return {"meta": [constraint("meteorpi:mag", constraint_type, value)]}

        self.assertEqual(await self.events(**mag("greater", 1.0)), ["E2", "E5", "E3"])
        self.assertEqual(await self.events(**mag("less", 1.0)), ["E2", "E3", "E1"])
        self.assertEqual(await self.events(**mag("number_equals", 1.0)), ["E2", "E3"])
        self.assertEqual(await self.events(**mag("greater", 3.5)), [])
        self.assertEqual(await self.events(**mag("less", -2.5)), ["E1"])
        exposure = "meteorpi:exposure"
        self.assertEqual(await self.files(meta=[constraint(exposure, "greater", 2.5)]),
                         ["F3", "F1"])
        self.assertEqual(await self.files(meta=[constraint(exposure, "less", 2.5)]),
                         ["F7", "F3"])

    async def test_date_constraints_are_inclusive(self) -> None:
        def peak(constraint_type: str, value: datetime) -> dict:
            return {"meta": [constraint("meteorpi:peak", constraint_type, value)]}

        self.assertEqual(await self.events(**peak("after", at(hours=13))), ["E4"])
        self.assertEqual(await self.events(**peak("after", at(hours=1, ms=500))), ["E4", "E1"])
        self.assertEqual(await self.events(**peak("before", at(hours=1, ms=500))),
                         ["E1", "E6"])
        self.assertEqual(await self.events(**peak("before", at(hours=1, ms=499))), ["E6"])
        self.assertEqual(await self.files(**peak("after", at(hours=12.5))), ["F5"])
        self.assertEqual(await self.files(**peak("after", at(hours=12.5, ms=1))), [])

    async def test_string_constraints_match_literally(self) -> None:
        def note(value: str) -> dict:
            return {"meta": [constraint("meteorpi:note", "string_equals", value)]}

        self.assertEqual(await self.events(**note("100%")), ["E2"])
        self.assertEqual(await self.events(**note("100_")), [])
        self.assertEqual(await self.events(**note("%")), [])
        self.assertEqual(await self.events(**note(NASTY)), ["E1"])
        self.assertEqual(await self.events(**note("a?b")), ["E4"])
        self.assertEqual(await self.events(**note("?")), [])
        self.assertEqual(await self.events(**note("imported")), ["IE"])
        self.assertEqual(await self.files(**note(NASTY)), ["F6"])
        self.assertEqual(await self.files(**note("100%")), ["F4"])
        self.assertEqual(await self.events(camera_ids=["cam-a"], **note("100%")), ["E2"])

    async def test_every_constraint_must_hold(self) -> None:
        both = [constraint("meteorpi:mag", "greater", 1.0),
                constraint("meteorpi:note", "string_equals", "100x")]
        self.assertEqual(await self.events(meta=both), ["E3"])
        window = [constraint("meteorpi:mag", "greater", 0.0),
                  constraint("meteorpi:mag", "less", 2.0)]
        self.assertEqual(await self.events(meta=window), ["E2", "E3"])

    async def test_the_most_constraints_a_search_may_have(self) -> None:
        window = [constraint("meteorpi:mag", "greater", 0.0),
                  constraint("meteorpi:mag", "less", 2.0)] * (MAX_META_CONSTRAINTS // 2)
        self.assertEqual(await self.events(meta=window), ["E2", "E3"])
        self.assertEqual(await self.files(meta=window[:1] * MAX_META_CONSTRAINTS), [])

    async def test_constraints_never_match_other_keys_or_types(self) -> None:
        self.assertEqual(
            await self.events(meta=[constraint("other:mag", "greater", -100.0)]), [])
        self.assertEqual(
            await self.events(meta=[constraint("meteorpi:mag", "string_equals", "1.0")]), [])
        self.assertEqual(
            await self.events(meta=[constraint("meteorpi:note", "greater", -1e300)]), [])

    async def test_exclude_imported(self) -> None:
        self.assertEqual(await self.events(exclude_imported=True), self.ALL_EVENTS[1:])
        self.assertEqual(await self.files(exclude_imported=True),
                         ["F7", "F3", "F5", "F6", "F2", "F4", "F1", "F8"])

    async def test_exclude_export_to(self) -> None:
        self.assertEqual(await self.events(exclude_export_to="c" * 32),
                         ["IE", "E4", "E5", "E3", "E1", "E6"])
        self.assertEqual(await self.events(exclude_export_to="d" * 32),
                         ["IE", "E2", "E4", "E5", "E3", "E6"])
        self.assertEqual(await self.events(exclude_export_to="9" * 32), self.ALL_EVENTS)
        # Only the config's file task counts, not its event task with a primary key that
        # may equal some file's.
        self.assertEqual(await self.files(exclude_export_to="c" * 32),
                         ["F7", "IF2", "IF1", "F5", "F6", "F2", "F4", "F1", "F8"])
        self.assertEqual(await self.files(exclude_export_to="d" * 32), self.ALL_FILES)

    async def test_exclude_events(self) -> None:
        self.assertEqual(await self.files(exclude_events=True), ["F7", "IF2", "F6", "F8"])
        self.assertEqual(await self.files(exclude_events=True, exclude_imported=True),
                         ["F7", "F6", "F8"])

    async def test_paging_never_repeats_or_skips(self) -> None:
        pages = []
        for skip in range(0, 8, 2):
            result = await self.store.search_events(EventSearch(limit=2, skip=skip))
            self.assertEqual(result["count"], 7)
            pages.append([self.names[event.event_id] for event in result["events"]])
        self.assertEqual(pages, [["IE", "E2"], ["E4", "E5"], ["E3", "E1"], ["E6"]])
        result = await self.store.search_files(FileRecordSearch(limit=3, skip=6))
        self.assertEqual([self.names[f.file_id] for f in result["files"]], ["F2", "F4", "F1"])
        self.assertEqual(result["count"], 10)

    async def test_count_ignores_limit_and_skip(self) -> None:
        cases = [
            ({"limit": 1}, ["IE"], 7),
            ({"limit": 7}, self.ALL_EVENTS, 7),
            ({"limit": 100}, self.ALL_EVENTS, 7),
            ({"limit": 0, "skip": 5}, ["E1", "E6"], 7),
            ({"skip": 7}, [], 7),
            ({"skip": 50}, [], 7),
            ({"limit": 2, "skip": 50, "camera_ids": "cam-b"}, [], 3),
            ({"limit": 1, "skip": 1, "camera_ids": "cam-b"}, ["E4"], 3),
            ({"skip": 2, "camera_ids": "cam-z"}, [], 0),
        ]
        for keys, names, count in cases:
            result = await self.store.search_events(EventSearch(**keys))
            self.assertEqual(
                ([self.names[event.event_id] for event in result["events"]], result["count"]),
                (names, count), keys)

    async def test_every_key_at_once(self) -> None:
        self.assertEqual(
            await self.events(
                camera_ids=["cam-a", "cam-b"], after=at(), before=at(days=3),
                after_offset=1800, before_offset=7200, lat_min=40.0, lat_max=50.0,
                long_min=-1.0, long_max=10.0, event_type="meteorpi:meteor",
                meta=[constraint("meteorpi:mag", "less", 0.0)], exclude_imported=True,
                exclude_export_to="c" * 32),
            ["E1"])

    async def test_search_by_wire_form(self) -> None:
        search = EventSearch.from_dict({
            "camera_ids": "cam-b", "exclude_incomplete": True, "limit": 2,
            "meta": [{"key": "meteorpi:note", "type": "string_equals", "value": "a?b"}]})
        result = await self.store.search_events(search)
        self.assertEqual(([e.event_id for e in result["events"]], result["count"]),
                         ([self.E4.event_id], 1))


class ClearDatabaseTests(_Helpers):
    """clear_database leaves an empty database and file store."""

    async def test_clear_database_empties_everything(self) -> None:
        await self.store.update_camera_status(a_status(), at(), "cam-a")
        record = await self.store.register_file(self.source_file(b"x"), "image/png",
                                                "meteorpi:image", at(), [number("a:b", 1.0)],
                                                "cam-a")
        event = await self.store.register_event("cam-a", at(), "meteorpi:meteor", [record],
                                                [number("a:b", 1.0)])
        await self.store.run(_add_export_config, "c" * 32, [("event", event.event_id)])
        await self.store.set_high_water_mark(at(days=9), "cam-a")
        await self.store.run(_add_user, "someone")
        await self.store.clear_database()
        self.assertEqual((await self.store.search_events(EventSearch()))["count"], 0)
        self.assertEqual((await self.store.search_files(FileRecordSearch()))["count"], 0)
        self.assertEqual(await self.store.get_cameras(), [])
        self.assertIsNone(await self.store.get_high_water_mark("cam-a"))
        for table in ("users", "export_configs", "export_tasks", "event_meta", "file_meta",
                      "event_files", "events", "files", "camera_status", "high_water_marks"):
            self.assertEqual(await self.count(table), 0, table)
        self.assertEqual(await self.count("schema_version"), len(migrations(self.store.dialect)))
        self.assertEqual(self.stored_file_ids(), [])
        self.assertFalse(self.store.file_path_for_id(record.file_id).exists())


class HighWaterMarkTests(_Helpers):
    """Moving the mark, and rolling back what lies after it."""

    async def setUp(self) -> None:
        await super().setUp()
        store = self.store
        self.early_status = await store.update_camera_status(a_status(), at(days=-1), "cam-a")
        self.early_file = await store.register_file(
            self.source_file(b"early"), "image/png", "meteorpi:image", at(hours=1),
            [number("meteorpi:x", 1.0)], "cam-a")
        self.late_status = await store.update_camera_status(a_status(lat=60.0),
                                                            at(hours=2, ms=1), "cam-a")
        self.late_file = await store.register_file(
            self.source_file(b"late"), "image/png", "meteorpi:image", at(hours=3),
            [number("meteorpi:x", 2.0)], "cam-a")
        self.mark_file = await store.register_file(
            self.source_file(b"at the mark"), "image/png", "meteorpi:image", at(hours=2),
            [], "cam-a")
        # An early event that also links the late file: the link goes, the event stays.
        self.early_event = await store.register_event(
            "cam-a", at(hours=1), "meteorpi:meteor", [self.early_file, self.late_file],
            [number("meteorpi:mag", 1.0)])
        self.late_event = await store.register_event(
            "cam-a", at(hours=3), "meteorpi:meteor", [self.late_file],
            [number("meteorpi:mag", 2.0)])
        self.other_status = await store.update_camera_status(a_status(), at(days=-1), "cam-b")
        self.other_file = await store.register_file(
            self.source_file(b"other"), "image/png", "meteorpi:image", at(hours=4), [], "cam-b")
        self.other_event = await store.register_event("cam-b", at(hours=4), "meteorpi:meteor",
                                                      [self.other_file])
        await store.run(_add_export_config, "c" * 32, [
            ("event", self.late_event.event_id), ("file", self.late_file.file_id),
            ("event", self.early_event.event_id), ("event", self.other_event.event_id)])
        await store.set_high_water_mark(at(hours=5), "cam-a")
        await store.set_high_water_mark(at(hours=5), "cam-b")

    async def assert_nothing_rolled_back(self) -> None:
        self.assertEqual(await self.store.get_event(self.late_event.event_id), self.late_event)
        self.assertEqual(await self.store.get_file(self.late_file.file_id), self.late_file)
        self.assertTrue(await self.store.has_status_id(self.late_status.status_id))
        self.assertEqual(await self.count("export_tasks"), 4)
        self.assertEqual(len(self.stored_file_ids()), 4)

    async def test_rollback_deletes_later_rows_and_files(self) -> None:
        await self.store.set_high_water_mark(at(hours=2), "cam-a")
        self.assertEqual(await self.store.get_high_water_mark("cam-a"), at(hours=2))
        self.assertIsNone(await self.store.get_event(self.late_event.event_id))
        self.assertIsNone(await self.store.get_file(self.late_file.file_id))
        self.assertFalse(await self.store.has_status_id(self.late_status.status_id))
        self.assertFalse(self.store.file_path_for_id(self.late_file.file_id).exists())
        self.assertEqual(
            await self.store.get_event(self.early_event.event_id),
            attrs.evolve(self.early_event, files=[self.early_file]))
        self.assertEqual(await self.store.get_file(self.mark_file.file_id), self.mark_file)
        self.assertEqual(await self.store.get_camera_status(at(days=1), "cam-a"),
                         self.early_status)
        self.assertEqual(sorted(self.stored_file_ids()), sorted(
            [self.early_file.file_id, self.mark_file.file_id, self.other_file.file_id]))
        self.assertEqual(await self.count("export_tasks"), 2)
        self.assertEqual(await self.count("event_meta"), 1)
        self.assertEqual(await self.count("file_meta"), 1)
        self.assertEqual(await self.store.get_event(self.other_event.event_id),
                         self.other_event)
        self.assertEqual(await self.store.get_high_water_mark("cam-b"), at(hours=5))

    async def test_rollback_not_allowed_changes_nothing(self) -> None:
        await self.store.set_high_water_mark(at(hours=2), "cam-a", allow_rollback=False)
        self.assertEqual(await self.store.get_high_water_mark("cam-a"), at(hours=5))
        await self.assert_nothing_rolled_back()

    async def test_advance_just_moves_the_mark(self) -> None:
        await self.store.set_high_water_mark(at(hours=9), "cam-a")
        self.assertEqual(await self.store.get_high_water_mark("cam-a"), at(hours=9))
        await self.assert_nothing_rolled_back()
        await self.store.set_high_water_mark(at(hours=10), "cam-a", allow_advance=False)
        self.assertEqual(await self.store.get_high_water_mark("cam-a"), at(hours=9))

    async def test_setting_a_first_mark_deletes_nothing(self) -> None:
        self.assertIsNone(await self.store.get_high_water_mark())
        await self.store.set_high_water_mark(at(hours=-5), "cam-c", allow_advance=False)
        self.assertEqual(await self.store.get_high_water_mark("cam-c"), at(hours=-5))
        await self.store.set_high_water_mark(at(hours=-9))
        self.assertEqual(await self.store.get_high_water_mark(), at(hours=-9))
        await self.assert_nothing_rolled_back()

    async def test_status_update_before_the_mark_rolls_back(self) -> None:
        new = await self.store.update_camera_status(a_status(lat=70.0), at(hours=2), "cam-a")
        self.assertEqual(await self.store.get_high_water_mark("cam-a"), at(hours=2))
        self.assertIsNone(await self.store.get_event(self.late_event.event_id))
        self.assertFalse(self.store.file_path_for_id(self.late_file.file_id).exists())
        self.assertEqual(await self.store.get_camera_status(at(days=9), "cam-a"), new)
        self.assertEqual(await self.store.get_camera_status(at(hours=2, ms=-1), "cam-a"),
                         attrs.evolve(self.early_status, valid_to=at(hours=2)))
        self.assertEqual(await self.store.get_file(self.mark_file.file_id), self.mark_file)

    async def test_status_update_after_the_mark_keeps_everything(self) -> None:
        await self.store.update_camera_status(a_status(), at(hours=6), "cam-a")
        self.assertEqual(await self.store.get_high_water_mark("cam-a"), at(hours=5))
        await self.assert_nothing_rolled_back()


class BadInputTests(_Helpers):
    """Impossible operations and bad arguments fail with typed errors and store nothing."""

    async def assert_nothing_stored(self) -> None:
        for table in ("events", "files", "event_files", "event_meta", "file_meta"):
            self.assertEqual(await self.count(table), 0, table)
        self.assertEqual(self.stored_file_ids(), [])

    async def test_file_without_status_is_refused_and_left_in_place(self) -> None:
        await self.store.update_camera_status(a_status(), at(), "cam-a")
        for camera_id, time in (("cam-a", at(ms=-1)), ("cam-b", at(days=1))):
            source = self.source_file(b"orphan")
            with self.assertRaises(NoCameraStatus):
                await self.store.register_file(source, "image/png", "meteorpi:image", time, [],
                                               camera_id)
            self.assertTrue(os.path.exists(source))
        await self.assert_nothing_stored()

    async def test_file_with_bad_arguments_is_refused_and_left_in_place(self) -> None:
        await self.store.update_camera_status(a_status(), at(), "cam-a")
        source = self.source_file(b"bad")
        bad_calls = [
            ("image/png", "meteorpi:image", datetime(2024, 1, 2), [], "cam-a"),
            ("image/png", "meteorpi:image", 1704196800000, [], "cam-a"),
            ("image/png", "meteorpi:image", at(days=1), ["not a meta"], "cam-a"),
            ("image/png", "meteorpi:image", at(days=1), None, "cam-a"),
            ("", "meteorpi:image", at(days=1), [], "cam-a"),
            (None, "meteorpi:image", at(days=1), [], "cam-a"),
            ("image/png", ":image", at(days=1), [], "cam-a"),
            ("image/png", "meteorpi:image", at(days=1), [], "cam a"),
            ("image/png", "meteorpi:image", at(days=1), [], 7),
        ]
        for call in bad_calls:
            with self.assertRaises(InvalidEntity, msg=repr(call)):
                await self.store.register_file(source, *call)
        self.assertTrue(os.path.exists(source))
        await self.assert_nothing_stored()

    async def test_event_without_status_or_with_unknown_file_is_refused(self) -> None:
        await self.store.update_camera_status(a_status(), at(), "cam-a")
        with self.assertRaises(NoCameraStatus):
            await self.store.register_event("cam-a", at(ms=-1), "meteorpi:meteor", [],
                                            [number("meteorpi:mag", 1.0)])
        unknown = FileRecord(
            file_id="4" * 32, camera_id="cam-a", mime_type="image/png",
            semantic_type="meteorpi:image", file_time=at(), file_size=1,
            status_id="5" * 32, md5="6" * 32)
        with self.assertRaises(EntityNotFound) as caught:
            await self.store.register_event("cam-a", at(), "meteorpi:meteor", [unknown],
                                            [number("meteorpi:mag", 1.0)])
        self.assertEqual(caught.exception.entity_id, "4" * 32)
        await self.assert_nothing_stored()

    async def test_event_with_bad_arguments_is_refused(self) -> None:
        await self.store.update_camera_status(a_status(), at(), "cam-a")
        bad_calls = [
            ("cam-a", at(), "meteorpi:meteor", ["file"], []),
            ("cam-a", at(), "meteorpi:meteor", [], [{"key": "a:b"}]),
            ("cam-a", at(), "meteorpi:meteor", None, []),
            ("cam-a", at(), "meteorpi:meteor", [], "meta"),
            ("cam-a", at(), "", [], []),
            ("cam-a", "2024-01-01", "meteorpi:meteor", [], []),
            ("", at(), "meteorpi:meteor", [], []),
        ]
        for call in bad_calls:
            with self.assertRaises(InvalidEntity, msg=repr(call)):
                await self.store.register_event(*call)
        await self.assert_nothing_stored()

    async def test_bad_ids_and_arguments_are_refused(self) -> None:
        calls = [
            lambda: self.store.get_file("../../etc/passwd"),
            lambda: self.store.get_event("x" * 32),
            lambda: self.store.has_file_id(None),
            lambda: self.store.has_event_id(12),
            lambda: self.store.has_status_id("' OR 1=1 --"),
            lambda: self.store.get_event_wire("' OR 1=1 --"),
            lambda: self.store.search_events_wire({"limit": 1}),
            lambda: self.store.stored_ids("0" * 32),
            lambda: self.store.stored_ids(file_ids=[None]),
            lambda: self.store.stored_ids(status_ids=["' OR 1=1 --"]),
            lambda: self.store.get_camera_status_by_id(""),
            lambda: self.store.get_camera_status(1704110400000, "cam-a"),
            lambda: self.store.get_camera_status(at(), "cam a"),
            lambda: self.store.get_high_water_mark("x" * 65),
            lambda: self.store.set_high_water_mark(None, "cam-a"),
            lambda: self.store.update_camera_status({"camera_id": "cam-a"}),
            lambda: self.store.update_camera_status(a_status(), "now"),
            lambda: self.store.search_events(FileRecordSearch()),
            lambda: self.store.search_files({"limit": 1}),
            lambda: self.store.import_event(self.store, "hub"),
            lambda: self.store.import_file_record(None, "hub"),
            lambda: self.store.import_camera_status(a_status(), ""),
            lambda: self.store.bulk_insert(events=["event"]),
        ]
        for index, call in enumerate(calls):
            with self.assertRaises(InvalidEntity, msg=str(index)):
                await call()
        self.assertRaises(InvalidEntity, self.store.file_path_for_id, "../x")
        self.assertEqual(await self.store.get_cameras(), [])
        self.assertIsNone(await self.store.get_high_water_mark("cam-a"))


class ImportTests(_Helpers):
    """Imports store what is new once, record who imported it, and link existing files."""

    async def setUp(self) -> None:
        await super().setUp()
        clock = Clock()
        clock.advance(1_700_000_000.25)
        self.store.clock = clock
        self.status = a_status(camera_id="remote", status_id="1" * 32, valid_from=at())
        self.shared = FileRecord(
            file_id="2" * 32, camera_id="remote", mime_type="image/png",
            semantic_type="meteorpi:image", file_time=at(hours=1), file_size=10,
            status_id="1" * 32, md5="3" * 32, sha256="4" * 64,
            meta=[number("meteorpi:exposure", 0.25)])
        self.own = attrs.evolve(self.shared, file_id="5" * 32, file_name="own.png",
                                meta=[string("meteorpi:note", NASTY)])
        self.event = Event(
            event_id="6" * 32, camera_id="remote", event_time=at(hours=1),
            event_type="meteorpi:meteor", status_id="1" * 32, files=[self.own, self.shared],
            meta=[date("meteorpi:peak", at(hours=1, ms=3)), number("meteorpi:mag", -1.0)])

    async def test_imports_round_trip_and_record_the_importer(self) -> None:
        self.assertTrue(await self.store.import_camera_status(self.status, "hub"))
        self.assertTrue(await self.store.import_file_record(self.shared, "hub"))
        self.assertTrue(await self.store.import_event(self.event, "other"))
        self.assertEqual(await self.store.get_camera_status_by_id("1" * 32), self.status)
        self.assertEqual(await self.store.get_file(self.shared.file_id), self.shared)
        self.assertEqual(await self.store.get_event(self.event.event_id), self.event)
        expected = [("camera_status", "status_id", "1" * 32, "hub"),
                    ("files", "file_id", "2" * 32, "hub"),
                    ("files", "file_id", "5" * 32, "other"),
                    ("events", "event_id", "6" * 32, "other")]
        for table, column, public_id, user in expected:
            self.assertEqual(await self.store.run(_imported, table, column, public_id),
                             (user, 1_700_000_000_250))
        self.assertEqual(await self.count("files"), 2)

    async def test_imported_status_ignores_the_timeline_and_its_valid_to(self) -> None:
        await self.store.update_camera_status(a_status(), at(days=1), "remote")
        given = attrs.evolve(self.status, valid_to=at(hours=5))
        self.assertTrue(await self.store.import_camera_status(given, "hub"))
        self.assertEqual(await self.store.get_camera_status_by_id("1" * 32),
                         attrs.evolve(self.status, valid_to=at(days=1)))
        self.assertEqual(await self.store.get_camera_status(at(hours=1), "remote"),
                         attrs.evolve(self.status, valid_to=at(days=1)))

    async def test_existing_file_is_linked_not_replaced(self) -> None:
        await self.store.import_file_record(self.shared, "hub")
        changed = attrs.evolve(self.shared, mime_type="image/jpeg", meta=[])
        event = attrs.evolve(self.event, files=[changed, self.own])
        self.assertTrue(await self.store.import_event(event, "hub"))
        stored = await self.store.get_event(event.event_id)
        self.assertEqual(stored.files, (self.shared, self.own))
        self.assertEqual(await self.count("files"), 2)
        self.assertEqual(await self.count("file_meta"), 2)

    async def test_imports_are_idempotent(self) -> None:
        results = [
            await self.store.import_camera_status(self.status, "hub"),
            await self.store.import_camera_status(self.status, "hub"),
            await self.store.import_event(self.event, "hub"),
            await self.store.import_event(attrs.evolve(self.event, meta=[]), "hub"),
            await self.store.import_file_record(self.shared, "hub"),
        ]
        self.assertEqual(results, [True, False, True, False, False])
        self.assertEqual(await self.store.get_event(self.event.event_id), self.event)
        for table, rows in (("camera_status", 1), ("events", 1), ("files", 2),
                            ("event_files", 2), ("event_meta", 2), ("file_meta", 2)):
            self.assertEqual(await self.count(table), rows, table)

    async def test_concurrent_imports_store_once(self) -> None:
        other = attrs.evolve(self.event, event_id="7" * 32, files=[self.shared])
        lone = attrs.evolve(self.own, file_id="8" * 32)
        calls = [
            self.store.import_camera_status(self.status, "hub"),
            self.store.import_camera_status(self.status, "hub"),
            self.store.import_event(self.event, "hub"),
            self.store.import_event(self.event, "hub"),
            self.store.import_event(other, "hub"),
            self.store.import_file_record(lone, "hub"),
            self.store.import_file_record(lone, "hub"),
        ]
        results = await DeferredList(calls, fireOnOneErrback=True, consumeErrors=True)
        outcomes = [value for _, value in results]
        self.assertEqual([sorted(outcomes[0:2]), sorted(outcomes[2:4]), outcomes[4],
                          sorted(outcomes[5:7])],
                         [[False, True], [False, True], True, [False, True]])
        for table, rows in (("camera_status", 1), ("events", 2), ("files", 3),
                            ("event_files", 3), ("file_meta", 3), ("event_meta", 4)):
            self.assertEqual(await self.count(table), rows, table)
        self.assertEqual(await self.store.get_event(self.event.event_id), self.event)
        self.assertEqual(await self.store.get_event(other.event_id), other)


class BulkInsertTests(_Helpers):
    """Bulk loading stores whole entities and skips those already stored."""

    async def test_bulk_insert_round_trip(self) -> None:
        statuses = [a_status(status_id=f"{n:032x}", valid_from=at(days=n)) for n in (1, 2)]
        records = [
            FileRecord(file_id=f"{n:032x}", camera_id="cam-a", mime_type="image/png",
                       semantic_type="meteorpi:image", file_time=at(days=1, hours=n),
                       file_size=n, status_id=statuses[0].status_id, md5="9" * 32,
                       meta=[number("meteorpi:n", float(n)), string("meteorpi:s", NASTY)])
            for n in range(10, 1210)
        ]
        events = [
            Event(event_id=f"{n:032x}", camera_id="cam-a", event_time=at(days=1, hours=n),
                  event_type="meteorpi:meteor", status_id=statuses[0].status_id,
                  files=records[n - 10:n - 8], meta=[date("meteorpi:peak", at(ms=n))])
            for n in range(10, 1110)
        ]
        counts = await self.store.bulk_insert(statuses, events, records[:5])
        self.assertEqual(counts, {"statuses": 2, "files": 1101, "events": 1100})
        self.assertEqual(await self.store.get_event(events[7].event_id), events[7])
        self.assertEqual(await self.store.get_file(records[3].file_id), records[3])
        self.assertEqual(await self.store.get_camera_status_by_id(statuses[0].status_id),
                         attrs.evolve(statuses[0], valid_to=at(days=2)))
        result = await self.store.search_events(EventSearch(limit=3))
        self.assertEqual(result["count"], 1100)
        self.assertEqual(result["events"], events[:-4:-1])
        again = await self.store.bulk_insert(statuses, events[-3:], records)
        self.assertEqual(again, {"statuses": 0, "files": 99, "events": 0})
        self.assertEqual(await self.count("event_files"), 2200)
        self.assertEqual(await self.count("file_meta"), 2400)


class SQLiteRoundTripTests(RoundTripTests, SQLiteStoreMixin, TestCase):
    pass


class PostgresRoundTripTests(RoundTripTests, PostgresStoreMixin, TestCase):
    pass


class SQLiteStatusTests(StatusTests, SQLiteStoreMixin, TestCase):
    pass


class PostgresStatusTests(StatusTests, PostgresStoreMixin, TestCase):
    pass


class SQLiteDataSetTests(DataSetTests, SQLiteStoreMixin, TestCase):
    pass


class PostgresDataSetTests(DataSetTests, PostgresStoreMixin, TestCase):
    pass


class SQLiteHighWaterMarkTests(HighWaterMarkTests, SQLiteStoreMixin, TestCase):
    pass


class PostgresHighWaterMarkTests(HighWaterMarkTests, PostgresStoreMixin, TestCase):
    pass


class SQLiteBadInputTests(BadInputTests, SQLiteStoreMixin, TestCase):
    pass


class PostgresBadInputTests(BadInputTests, PostgresStoreMixin, TestCase):
    pass


class SQLiteImportTests(ImportTests, SQLiteStoreMixin, TestCase):
    pass


class PostgresImportTests(ImportTests, PostgresStoreMixin, TestCase):
    pass


class SQLiteClearDatabaseTests(ClearDatabaseTests, SQLiteStoreMixin, TestCase):
    pass


class PostgresClearDatabaseTests(ClearDatabaseTests, PostgresStoreMixin, TestCase):
    pass


class SQLiteBulkInsertTests(BulkInsertTests, SQLiteStoreMixin, TestCase):
    pass


class PostgresBulkInsertTests(BulkInsertTests, PostgresStoreMixin, TestCase):
    pass
