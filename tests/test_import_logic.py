"""
Tests for meteord.web._import_logic: message parsing, reply forms, the entity cache and every
branch of the decision for an entity, without HTTP or a store.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from meteord.model import CameraStatus, Event, FileRecord, InvalidEntity
from meteord.web._import_logic import (
    HOLDINGS_SECONDS,
    CachedEntityReference,
    EntityCache,
    EntityMessage,
    Holdings,
    ImportNow,
    Reply,
    StatusMessage,
    decide,
    entity_id,
    file_ids_of,
    parse_message,
    pending_file_ids,
    wanted_status_ids,
)

EVENT_ID = "e" * 32
FILE_A = "a" * 32
FILE_B = "b" * 32
STATUS_1 = "1" * 32
STATUS_2 = "2" * 32


def file_dict(file_id: str = FILE_A, status_id: str = STATUS_1, **changes: Any) -> dict:
    d = {"file_id": file_id, "camera_id": "cam1", "mime_type": "image/png",
         "semantic_type": "meteorpi:image", "file_time": 1000, "file_size": 3,
         "status_id": status_id, "md5": "c" * 32, "meta": []}
    d.update(changes)
    return d


def event_dict(files: Any = None, **changes: Any) -> dict:
    d = {"event_id": EVENT_ID, "camera_id": "cam1", "event_time": 1000,
         "event_type": "meteorpi:meteor", "status_id": STATUS_1,
         "files": [file_dict(FILE_A), file_dict(FILE_B, STATUS_2)] if files is None else files,
         "meta": []}
    d.update(changes)
    return d


def status_dict(status_id: str = STATUS_1) -> dict:
    return {"camera_id": "cam1", "status_id": status_id, "lens": "", "sensor": "",
            "software_version": 1, "valid_from": 0,
            "location": {"lat": 0.0, "long": 0.0, "gps": False, "error": 0.0},
            "orientation": {"alt": 0.0, "az": 0.0, "error": 0.0, "rot": 0.0, "width": 0.0},
            "regions": []}


EVENT = Event.from_dict(event_dict())
FILE = FileRecord.from_dict(file_dict())


class ParseMessageTests(SynchronousTestCase):
    """The four messages, and malformed ones naming the key at fault."""

    def test_event(self) -> None:
        self.assertEqual(parse_message({"type": "event", "event": event_dict()}),
                         EntityMessage("event", EVENT))

    def test_file(self) -> None:
        message = parse_message({"type": "file", "file": file_dict()})
        self.assertEqual(message, EntityMessage("file", FILE))
        self.assertEqual(message.entity_id, FILE_A)

    def test_status(self) -> None:
        self.assertEqual(parse_message({"type": "status", "status": status_dict()}),
                         StatusMessage(CameraStatus.from_dict(status_dict())))

    def test_cached_entity_accepts_dashed_ids(self) -> None:
        dashed = "-".join([EVENT_ID[:8], EVENT_ID[8:12], EVENT_ID[12:16], EVENT_ID[16:20],
                           EVENT_ID[20:]]).upper()
        self.assertEqual(parse_message({"type": "cached_entity", "cached_entity_id": dashed}),
                         CachedEntityReference(EVENT_ID))

    def assertInvalid(self, message: object, key: str) -> None:
        with self.assertRaises(InvalidEntity) as caught:
            parse_message(message)
        self.assertEqual(caught.exception.key, key)

    def test_not_an_object(self) -> None:
        self.assertInvalid([1, 2], "")

    def test_missing_type(self) -> None:
        self.assertInvalid({"event": event_dict()}, "type")

    def test_unknown_type(self) -> None:
        self.assertInvalid({"type": "camera"}, "type")

    def test_unhashable_type(self) -> None:
        self.assertInvalid({"type": ["event"]}, "type")

    def test_missing_entity(self) -> None:
        self.assertInvalid({"type": "event"}, "event")

    def test_invalid_nested_field_is_named(self) -> None:
        files = [file_dict(), file_dict(FILE_B, md5="nothex")]
        self.assertInvalid({"type": "event", "event": event_dict(files=files)},
                           "event.files[1].md5")

    def test_invalid_status(self) -> None:
        self.assertInvalid({"type": "status", "status": {**status_dict(), "lens": 3}},
                           "status.lens")

    def test_invalid_cached_entity_id(self) -> None:
        self.assertInvalid({"type": "cached_entity", "cached_entity_id": "xyz"},
                           "cached_entity_id")

    def test_missing_cached_entity_id(self) -> None:
        self.assertInvalid({"type": "cached_entity"}, "cached_entity_id")


class ReplyTests(SynchronousTestCase):
    """The wire form of each reply state."""

    def test_simple_states(self) -> None:
        self.assertEqual(Reply.complete().to_dict(), {"state": "complete"})
        self.assertEqual(Reply.continue_().to_dict(), {"state": "continue"})
        self.assertEqual(Reply.continue_nocache().to_dict(), {"state": "continue-nocache"})

    def test_need_status(self) -> None:
        self.assertEqual(Reply.need_status(STATUS_1).to_dict(),
                         {"state": "need_status", "status_id": STATUS_1})

    def test_need_file_data_names_first_and_all(self) -> None:
        self.assertEqual(Reply.need_file_data([FILE_B, FILE_A]).to_dict(),
                         {"state": "need_file_data", "file_id": FILE_B,
                          "file_ids": [FILE_B, FILE_A]})

    def test_failed(self) -> None:
        self.assertEqual(Reply.failed("checksum mismatch").to_dict(),
                         {"state": "failed", "message": "checksum mismatch"})


class EntityCacheTests(SynchronousTestCase):
    """The bounded LRU of entities received in full."""

    def records(self, count: int) -> list[FileRecord]:
        return [FileRecord.from_dict(file_dict(f"{i:032x}")) for i in range(count)]

    def test_get_returns_what_was_put(self) -> None:
        cache = EntityCache()
        cache.put(EVENT)
        self.assertIs(cache.get(EVENT_ID), EVENT)
        self.assertIsNone(cache.get(FILE_A))

    def test_default_size(self) -> None:
        self.assertEqual(EntityCache().size, 1024)

    def test_least_recently_used_is_evicted(self) -> None:
        first, second, third = self.records(3)
        cache = EntityCache(2)
        cache.put(first)
        cache.put(second)
        cache.get(first.file_id)
        cache.put(third)
        self.assertEqual(len(cache), 2)
        self.assertIsNone(cache.get(second.file_id))
        self.assertIs(cache.get(first.file_id), first)

    def test_putting_again_refreshes(self) -> None:
        first, second, third = self.records(3)
        cache = EntityCache(2)
        cache.put(first)
        cache.put(second)
        cache.put(first)
        cache.put(third)
        self.assertIs(cache.get(first.file_id), first)
        self.assertIsNone(cache.get(second.file_id))

    def test_discard(self) -> None:
        cache = EntityCache()
        cache.put(EVENT)
        cache.discard(EVENT_ID)
        cache.discard(EVENT_ID)
        self.assertIsNone(cache.get(EVENT_ID))

    def test_file_record_from_events_and_files(self) -> None:
        cache = EntityCache()
        cache.put(EVENT)
        self.assertEqual(cache.file_record(FILE_B), EVENT.files[1])
        newer = FileRecord.from_dict(file_dict(FILE_B, md5="d" * 32))
        cache.put(newer)
        self.assertEqual(cache.file_record(FILE_B), newer)
        self.assertIsNone(cache.file_record("f" * 32))

    def test_size_must_be_positive(self) -> None:
        self.assertRaises(ValueError, EntityCache, 0)

    def test_holdings_are_kept_with_their_entity_for_one_answer(self) -> None:
        cache = EntityCache()
        held = Holdings(stored=False, statuses=frozenset([STATUS_1]))
        cache.note_holdings(EVENT_ID, held, 0.0)
        self.assertIsNone(cache.take_holdings(EVENT_ID, 0.0))
        cache.put(EVENT)
        cache.note_holdings(EVENT_ID, held, 0.0)
        self.assertEqual(cache.take_holdings(EVENT_ID, 1.0), held)
        self.assertIsNone(cache.take_holdings(EVENT_ID, 1.0))

    def test_holdings_expire(self) -> None:
        cache = EntityCache()
        cache.put(EVENT)
        cache.note_holdings(EVENT_ID, Holdings(stored=False), 100.0)
        self.assertIsNone(cache.take_holdings(EVENT_ID, 100.0 + HOLDINGS_SECONDS))
        cache.note_holdings(EVENT_ID, Holdings(stored=False), 100.0)
        self.assertIsNotNone(cache.take_holdings(EVENT_ID, 99.9 + HOLDINGS_SECONDS))

    def test_bytes_stored_reach_the_holdings_of_every_entity_with_that_file(self) -> None:
        cache = EntityCache()
        cache.put(EVENT)
        cache.put(FILE)
        other = FileRecord.from_dict(file_dict("c" * 32))
        cache.put(other)
        for key in (EVENT_ID, FILE_A, other.file_id):
            cache.note_holdings(key, Holdings(stored=False), 0.0)
        cache.bytes_stored(FILE_A)
        cache.bytes_stored("f" * 32)
        self.assertEqual(cache.take_holdings(EVENT_ID, 0.0),
                         Holdings(stored=False, file_bytes=frozenset([FILE_A])))
        self.assertEqual(cache.take_holdings(FILE_A, 0.0),
                         Holdings(stored=False, file_bytes=frozenset([FILE_A])))
        self.assertEqual(cache.take_holdings(other.file_id, 0.0), Holdings(stored=False))

    def test_the_index_of_file_ids_follows_the_entities_held(self) -> None:
        cache = EntityCache(2)
        cache.put(EVENT)
        cache.note_holdings(EVENT_ID, Holdings(stored=False), 0.0)
        fewer = Event.from_dict(event_dict(files=[file_dict(FILE_A)]))
        cache.put(fewer)
        cache.bytes_stored(FILE_B)
        self.assertEqual(cache.take_holdings(EVENT_ID, 0.0), Holdings(stored=False))
        self.assertIsNone(cache.file_record(FILE_B))
        self.assertEqual(cache.file_record(FILE_A), fewer.files[0])
        cache.discard(EVENT_ID)
        self.assertIsNone(cache.file_record(FILE_A))
        first, second, third = self.records(3)
        for record in (first, second, third):
            cache.put(record)
        self.assertIsNone(cache.file_record(first.file_id))
        self.assertEqual(cache.file_record(third.file_id), third)

    def test_the_most_recently_used_holder_gives_a_file_record(self) -> None:
        cache = EntityCache()
        cache.put(EVENT)
        newer = FileRecord.from_dict(file_dict(FILE_B, md5="d" * 32))
        cache.put(newer)
        self.assertEqual(cache.file_record(FILE_B), newer)
        cache.get(EVENT_ID)
        self.assertEqual(cache.file_record(FILE_B), EVENT.files[1])

    def test_can_import_once_the_remembered_holdings_and_uploads_cover_the_entity(
            self) -> None:
        cache = EntityCache()
        self.assertFalse(cache.can_import(EVENT_ID, 0.0))
        cache.put(EVENT)
        statuses = frozenset(wanted_status_ids(EVENT, ()))
        cache.note_holdings(EVENT_ID, Holdings(stored=False, statuses=statuses), 10.0)
        cache.bytes_stored(FILE_A)
        self.assertFalse(cache.can_import(EVENT_ID, 10.0))
        cache.bytes_stored(FILE_B)
        self.assertTrue(cache.can_import(EVENT_ID, 10.0))
        self.assertTrue(cache.can_import(EVENT_ID, 9.9 + HOLDINGS_SECONDS))
        self.assertFalse(cache.can_import(EVENT_ID, 10.0 + HOLDINGS_SECONDS))
        self.assertIsNotNone(cache.take_holdings(EVENT_ID, 10.0), "asking took the holdings")

    def test_holdings_stay_when_the_entity_is_sent_again(self) -> None:
        cache = EntityCache()
        cache.put(EVENT)
        held = Holdings(stored=False, statuses=frozenset([STATUS_1]))
        cache.note_holdings(EVENT_ID, held, 0.0)
        cache.put(EVENT)
        self.assertEqual(cache.take_holdings(EVENT_ID, 0.0), held)

    def test_holdings_go_when_the_entity_is_discarded_or_evicted(self) -> None:
        first, second = self.records(2)
        cache = EntityCache(2)
        for entity in (EVENT, first):
            cache.put(entity)
            cache.note_holdings(entity_id(entity), Holdings(stored=False), 0.0)
        cache.discard(EVENT_ID)
        cache.put(EVENT)
        self.assertIsNone(cache.take_holdings(EVENT_ID, 0.0))
        cache.put(second)
        self.assertIsNone(cache.get(first.file_id))
        cache.put(first)
        self.assertIsNone(cache.take_holdings(first.file_id, 0.0))


class NeedsTests(SynchronousTestCase):
    """Which statuses and files an entity needs."""

    def test_file_ids_in_order_without_repeats(self) -> None:
        event = Event.from_dict(event_dict(files=[file_dict(FILE_B), file_dict(FILE_A),
                                                  file_dict(FILE_B)]))
        self.assertEqual(file_ids_of(event), [FILE_B, FILE_A])
        self.assertEqual(file_ids_of(FILE), [FILE_A])

    def test_statuses_own_first_then_pending_files(self) -> None:
        self.assertEqual(wanted_status_ids(EVENT, []), [STATUS_1, STATUS_2])
        self.assertEqual(wanted_status_ids(EVENT, [FILE_B]), [STATUS_1])

    def test_pending_files(self) -> None:
        self.assertEqual(pending_file_ids(EVENT, [FILE_A]), [FILE_B])


class DecideTests(SynchronousTestCase):
    """Every branch of the answer to an entity."""

    def test_stored_is_complete_whatever_else(self) -> None:
        self.assertEqual(decide(EVENT, Holdings(stored=True)), Reply.complete())

    def test_own_status_asked_first(self) -> None:
        self.assertEqual(decide(EVENT, Holdings(stored=False)), Reply.need_status(STATUS_1))

    def test_then_file_statuses(self) -> None:
        holdings = Holdings(stored=False, statuses=frozenset({STATUS_1}))
        self.assertEqual(decide(EVENT, holdings), Reply.need_status(STATUS_2))

    def test_stored_file_needs_no_status(self) -> None:
        holdings = Holdings(stored=False, statuses=frozenset({STATUS_1}),
                            file_records=frozenset({FILE_B}),
                            file_bytes=frozenset({FILE_A}))
        self.assertEqual(decide(EVENT, holdings), ImportNow(EVENT))

    def test_statuses_before_files(self) -> None:
        holdings = Holdings(stored=False, statuses=frozenset({STATUS_2}))
        self.assertEqual(decide(EVENT, holdings), Reply.need_status(STATUS_1))

    def test_every_missing_file_is_named(self) -> None:
        holdings = Holdings(stored=False, statuses=frozenset({STATUS_1, STATUS_2}))
        self.assertEqual(decide(EVENT, holdings), Reply.need_file_data([FILE_A, FILE_B]))

    def test_bytes_present_are_not_asked(self) -> None:
        holdings = Holdings(stored=False, statuses=frozenset({STATUS_1, STATUS_2}),
                            file_bytes=frozenset({FILE_A}))
        self.assertEqual(decide(EVENT, holdings), Reply.need_file_data([FILE_B]))

    def test_linked_records_need_no_bytes(self) -> None:
        holdings = Holdings(stored=False, statuses=frozenset({STATUS_1}),
                            file_records=frozenset({FILE_A, FILE_B}))
        self.assertEqual(decide(EVENT, holdings), ImportNow(EVENT))

    def test_event_without_files(self) -> None:
        event = Event.from_dict(event_dict(files=[]))
        holdings = Holdings(stored=False, statuses=frozenset({STATUS_1}))
        self.assertEqual(decide(event, holdings), ImportNow(event))

    def test_file_needs_status_then_bytes(self) -> None:
        self.assertEqual(decide(FILE, Holdings(stored=False)), Reply.need_status(STATUS_1))
        holdings = Holdings(stored=False, statuses=frozenset({STATUS_1}))
        self.assertEqual(decide(FILE, holdings), Reply.need_file_data([FILE_A]))
        holdings = Holdings(stored=False, statuses=frozenset({STATUS_1}),
                            file_bytes=frozenset({FILE_A}))
        self.assertEqual(decide(FILE, holdings), ImportNow(FILE))
