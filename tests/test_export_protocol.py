"""
Tests for meteord.exporter.protocol: every importer reply state, reply sequences, garbage
replies, HTTP status classification and the round-trip bound.
"""

import json

from twisted.trial.unittest import SynchronousTestCase

from meteord.exporter.protocol import (
    MAX_ROUND_TRIPS, Done, EntityFailed, ExportProtocol, ProtocolMisuse, SendCachedEntity,
    SendEntity, SendStatus, TransportFailed, UploadFile, classify_http_status)

EVENT_ID = "e" * 32
FILE_A = "a" * 32
FILE_B = "b" * 32
STATUS_EVENT = "5" * 32
STATUS_FILE = "6" * 32


def _file(file_id, status_id=STATUS_EVENT, md5=None):
    return {
        "file_id": file_id, "camera_id": "cam1", "mime_type": "image/png",
        "semantic_type": "meteorpi:image", "file_time": 1000, "file_size": 3,
        "status_id": status_id, "md5": md5 or file_id[:1] * 32, "meta": []}


EVENT = {
    "event_id": EVENT_ID, "camera_id": "cam1", "event_time": 1000,
    "event_type": "meteorpi:meteor", "status_id": STATUS_EVENT,
    "files": [_file(FILE_A), _file(FILE_B, status_id=STATUS_FILE)], "meta": []}

FULL_EVENT = SendEntity({"type": "event", "event": EVENT})
CACHED_EVENT = SendCachedEntity({"type": "cached_entity", "cached_entity_id": EVENT_ID})


def _reply(**fields):
    return json.dumps(fields).encode("utf-8")


def _started(kind="event", entity=EVENT, **kwargs):
    protocol = ExportProtocol(kind, entity, **kwargs)
    protocol.start()
    return protocol


class StartTests(SynchronousTestCase):
    """The first message."""

    def test_event_starts_with_full_event(self):
        protocol = ExportProtocol("event", EVENT)
        self.assertEqual(protocol.start(), FULL_EVENT)
        self.assertEqual(protocol.round_trips, 1)

    def test_file_starts_with_full_file(self):
        record = _file(FILE_A)
        self.assertEqual(ExportProtocol("file", record).start(),
                         SendEntity({"type": "file", "file": record}))

    def test_unknown_kind_is_rejected(self):
        self.assertRaises(ValueError, ExportProtocol, "status", EVENT)

    def test_start_twice_is_misuse(self):
        protocol = _started()
        self.assertRaises(ProtocolMisuse, protocol.start)

    def test_reply_before_start_is_misuse(self):
        protocol = ExportProtocol("event", EVENT)
        self.assertRaises(ProtocolMisuse, protocol.on_reply, 200, _reply(state="complete"))

    def test_reply_after_done_is_misuse(self):
        protocol = _started()
        protocol.on_reply(200, _reply(state="complete"))
        self.assertRaises(ProtocolMisuse, protocol.on_reply, 200, _reply(state="complete"))


class ReplyStateTests(SynchronousTestCase):
    """Each reply state of replication.md to an entity message."""

    def test_complete_is_done(self):
        self.assertEqual(_started().on_reply(200, _reply(state="complete")), Done())

    def test_continue_sends_cached_entity(self):
        protocol = _started()
        self.assertEqual(protocol.on_reply(200, _reply(state="continue")), CACHED_EVENT)
        self.assertEqual(protocol.round_trips, 2)

    def test_cached_entity_of_file_names_the_file_id(self):
        protocol = _started("file", _file(FILE_A))
        self.assertEqual(
            protocol.on_reply(200, _reply(state="continue")),
            SendCachedEntity({"type": "cached_entity", "cached_entity_id": FILE_A}))

    def test_continue_nocache_sends_full_entity_again(self):
        protocol = _started()
        self.assertEqual(protocol.on_reply(200, _reply(state="continue-nocache")), FULL_EVENT)

    def test_continue_then_nocache_then_complete(self):
        protocol = _started()
        self.assertEqual(protocol.on_reply(200, _reply(state="continue")), CACHED_EVENT)
        self.assertEqual(protocol.on_reply(200, _reply(state="continue-nocache")), FULL_EVENT)
        self.assertEqual(protocol.on_reply(200, _reply(state="complete")), Done())
        self.assertEqual(protocol.round_trips, 3)

    def test_need_status_sends_that_status(self):
        self.assertEqual(
            _started().on_reply(200, _reply(state="need_status", status_id=STATUS_EVENT)),
            SendStatus(STATUS_EVENT))

    def test_need_status_of_a_files_status_is_allowed(self):
        self.assertEqual(
            _started().on_reply(200, _reply(state="need_status", status_id=STATUS_FILE)),
            SendStatus(STATUS_FILE))

    def test_need_file_data_uploads_that_file(self):
        self.assertEqual(
            _started().on_reply(200, _reply(state="need_file_data", file_id=FILE_B)),
            UploadFile(FILE_B, "b" * 32))

    def test_failed_is_entity_failure_with_message(self):
        action = _started().on_reply(200, _reply(state="failed", message="bad camera"))
        self.assertIsInstance(action, EntityFailed)
        self.assertIn("bad camera", action.reason)

    def test_failed_without_message_is_entity_failure(self):
        self.assertIsInstance(_started().on_reply(200, _reply(state="failed")), EntityFailed)


class SequenceTests(SynchronousTestCase):
    """Multi-step exchanges."""

    def test_status_then_two_files_then_complete(self):
        protocol = _started()
        steps = [
            (_reply(state="need_status", status_id=STATUS_EVENT), SendStatus(STATUS_EVENT)),
            (_reply(state="continue"), FULL_EVENT),
            (_reply(state="need_file_data", file_id=FILE_A), UploadFile(FILE_A, "a" * 32)),
            (_reply(state="continue"), FULL_EVENT),
            (_reply(state="need_file_data", file_id=FILE_B), UploadFile(FILE_B, "b" * 32)),
            (_reply(state="continue"), FULL_EVENT),
            (_reply(state="complete"), Done()),
        ]
        for body, expected in steps:
            self.assertEqual(protocol.on_reply(200, body), expected)
        self.assertEqual(protocol.round_trips, 7)

    def test_file_ids_uploads_every_missing_file_before_resending(self):
        protocol = _started()
        self.assertEqual(
            protocol.on_reply(200, _reply(state="need_file_data", file_id=FILE_A,
                                          file_ids=[FILE_A, FILE_B])),
            UploadFile(FILE_A, "a" * 32))
        self.assertEqual(protocol.on_reply(200, _reply(state="continue")),
                         UploadFile(FILE_B, "b" * 32))
        self.assertEqual(protocol.on_reply(200, _reply(state="continue")), FULL_EVENT)
        self.assertEqual(protocol.on_reply(200, _reply(state="complete")), Done())

    def test_file_id_is_uploaded_first_even_if_listed_later(self):
        protocol = _started()
        self.assertEqual(
            protocol.on_reply(200, _reply(state="need_file_data", file_id=FILE_B,
                                          file_ids=[FILE_A, FILE_B])),
            UploadFile(FILE_B, "b" * 32))
        self.assertEqual(protocol.on_reply(200, _reply(state="continue")),
                         UploadFile(FILE_A, "a" * 32))

    def test_stand_alone_file_uploads_itself(self):
        record = _file(FILE_A, md5="0123456789abcdef" * 2)
        protocol = _started("file", record)
        self.assertEqual(protocol.on_reply(200, _reply(state="need_file_data", file_id=FILE_A)),
                         UploadFile(FILE_A, "0123456789abcdef" * 2))
        self.assertEqual(protocol.on_reply(200, _reply(state="continue")),
                         SendEntity({"type": "file", "file": record}))

    def test_upload_answered_complete_is_done(self):
        # meteord's importer stored the entity the upload named: nothing more is sent, not
        # even the second file's upload.
        protocol = _started()
        protocol.on_reply(200, _reply(state="need_file_data", file_id=FILE_A,
                                      file_ids=[FILE_A, FILE_B]))
        self.assertEqual(protocol.on_reply(200, _reply(state="complete", entity_id=EVENT_ID)),
                         Done())
        self.assertEqual(protocol.round_trips, 2)

    def test_last_upload_answered_complete_is_done(self):
        protocol = _started()
        protocol.on_reply(200, _reply(state="need_file_data", file_id=FILE_A,
                                      file_ids=[FILE_A, FILE_B]))
        self.assertEqual(protocol.on_reply(200, _reply(state="continue")),
                         UploadFile(FILE_B, "b" * 32))
        self.assertEqual(protocol.on_reply(200, _reply(state="complete", entity_id=EVENT_ID)),
                         Done())
        self.assertEqual(protocol.round_trips, 3)

    def test_upload_answered_complete_without_this_entity_sends_it_again(self):
        # An importer that may mean only "bytes received" must not end the export.
        for reply in (_reply(state="complete"), _reply(state="complete", entity_id=FILE_A)):
            protocol = _started()
            protocol.on_reply(200, _reply(state="need_file_data", file_id=FILE_A))
            self.assertEqual(protocol.on_reply(200, reply), FULL_EVENT)

    def test_status_answered_complete_sends_the_entity_again(self):
        # A status send names no entity, so "complete" says nothing about this one.
        protocol = _started()
        protocol.on_reply(200, _reply(state="need_status", status_id=STATUS_EVENT))
        self.assertEqual(protocol.on_reply(200, _reply(state="complete", entity_id=EVENT_ID)),
                         FULL_EVENT)

    def test_status_reply_with_non_json_body_is_success(self):
        protocol = _started()
        protocol.on_reply(200, _reply(state="need_status", status_id=STATUS_EVENT))
        self.assertEqual(protocol.on_reply(200, b"OK"), FULL_EVENT)

    def test_upload_reply_with_any_2xx_is_success(self):
        protocol = _started()
        protocol.on_reply(200, _reply(state="need_file_data", file_id=FILE_A))
        self.assertEqual(protocol.on_reply(204, b""), FULL_EVENT)

    def test_upload_checksum_mismatch_is_entity_failure(self):
        protocol = _started()
        protocol.on_reply(200, _reply(state="need_file_data", file_id=FILE_A))
        action = protocol.on_reply(
            422, _reply(state="failed", message="checksum mismatch"))
        self.assertIsInstance(action, EntityFailed)
        self.assertIn("checksum mismatch", action.reason)

    def test_upload_answered_failed_with_200_is_entity_failure(self):
        protocol = _started()
        protocol.on_reply(200, _reply(state="need_file_data", file_id=FILE_A))
        action = protocol.on_reply(200, _reply(state="failed", message="disk full"))
        self.assertIsInstance(action, EntityFailed)
        self.assertIn("disk full", action.reason)

    def test_status_answered_failed_is_entity_failure(self):
        protocol = _started()
        protocol.on_reply(200, _reply(state="need_status", status_id=STATUS_EVENT))
        self.assertIsInstance(protocol.on_reply(200, _reply(state="failed")), EntityFailed)

    def test_upload_500_is_transport_failure(self):
        protocol = _started()
        protocol.on_reply(200, _reply(state="need_file_data", file_id=FILE_A))
        self.assertEqual(protocol.on_reply(500, b""), TransportFailed("HTTP 500 from importer"))

    def test_transport_error_during_upload(self):
        protocol = _started()
        protocol.on_reply(200, _reply(state="need_file_data", file_id=FILE_A))
        self.assertEqual(protocol.on_transport_error("connection lost"),
                         TransportFailed("connection lost"))


class GarbageReplyTests(SynchronousTestCase):
    """Replies that do not follow the protocol end the entity, not the configuration."""

    def assertEntityFailure(self, body, fragment):
        action = _started().on_reply(200, body)
        self.assertIsInstance(action, EntityFailed)
        self.assertIn(fragment, action.reason)

    def test_not_json(self):
        self.assertEntityFailure(b"<html>oops</html>", "not JSON")

    def test_not_utf8(self):
        self.assertEntityFailure(b"\xff\xfe\xfa", "not JSON")

    def test_nested_too_deeply_for_the_parser(self):
        self.assertEntityFailure(b"[" * 100_000, "not JSON")

    def test_json_array(self):
        self.assertEntityFailure(b'["complete"]', "not a JSON object")

    def test_json_string(self):
        self.assertEntityFailure(b'"complete"', "not a JSON object")

    def test_unknown_state(self):
        self.assertEntityFailure(_reply(state="finished"), "unknown state")

    def test_missing_state(self):
        self.assertEntityFailure(_reply(status="complete"), "unknown state")

    def test_need_status_without_status_id(self):
        self.assertEntityFailure(_reply(state="need_status"), "without a status_id")

    def test_need_status_with_non_string_status_id(self):
        self.assertEntityFailure(_reply(state="need_status", status_id=5), "without a status_id")

    def test_need_status_for_foreign_status(self):
        self.assertEntityFailure(_reply(state="need_status", status_id="7" * 32),
                                 "not this entity's")

    def test_need_file_data_without_file_id(self):
        self.assertEntityFailure(_reply(state="need_file_data"), "without a file_id")

    def test_need_file_data_for_foreign_file(self):
        self.assertEntityFailure(_reply(state="need_file_data", file_id="c" * 32),
                                 "not this entity's")

    def test_need_file_data_with_foreign_file_in_file_ids(self):
        self.assertEntityFailure(
            _reply(state="need_file_data", file_id=FILE_A, file_ids=[FILE_A, "c" * 32]),
            "not this entity's")

    def test_need_file_data_with_malformed_file_ids(self):
        self.assertEntityFailure(
            _reply(state="need_file_data", file_id=FILE_A, file_ids=FILE_A),
            "malformed file_ids")

    def test_need_file_data_for_file_without_md5(self):
        event = dict(EVENT, files=[dict(_file(FILE_A), md5="")])
        action = _started("event", event).on_reply(
            200, _reply(state="need_file_data", file_id=FILE_A))
        self.assertEqual(action, EntityFailed(f"file {FILE_A} has no md5 to upload it with"))


class HTTPStatusTests(SynchronousTestCase):
    """Non-2xx replies to an entity message."""

    def assertTransportFailure(self, code):
        self.assertEqual(_started().on_reply(code, b""),
                         TransportFailed(f"HTTP {code} from importer"))

    def test_401_is_transport_failure(self):
        self.assertTransportFailure(401)

    def test_403_is_transport_failure(self):
        self.assertTransportFailure(403)

    def test_500_is_transport_failure(self):
        self.assertTransportFailure(500)

    def test_503_is_transport_failure(self):
        self.assertTransportFailure(503)

    def test_404_is_transport_failure(self):
        self.assertTransportFailure(404)

    def test_400_is_entity_failure_with_message(self):
        action = _started().on_reply(400, _reply(message="missing key event_time"))
        self.assertEqual(action,
                         EntityFailed("HTTP 400 from importer: missing key event_time"))

    def test_422_is_entity_failure(self):
        self.assertEqual(_started().on_reply(422, b"nope"),
                         EntityFailed("HTTP 422 from importer"))

    def test_transport_error(self):
        self.assertEqual(_started().on_transport_error("timeout after 30 s"),
                         TransportFailed("timeout after 30 s"))

    def test_classification(self):
        self.assertEqual(
            [classify_http_status(code) for code in (200, 299, 400, 413, 422, 401, 403, 500)],
            [None, None, "entity", "entity", "entity", "transport", "transport",
             "transport"])


class RoundTripBoundTests(SynchronousTestCase):
    """The loop for one entity ends after a bounded number of requests."""

    def test_importer_always_answering_continue_fails_after_32_round_trips(self):
        protocol = _started()
        actions = [protocol.on_reply(200, _reply(state="continue"))
                   for _ in range(MAX_ROUND_TRIPS - 1)]
        self.assertEqual(actions, [CACHED_EVENT] * (MAX_ROUND_TRIPS - 1))
        self.assertEqual(protocol.round_trips, 32)
        action = protocol.on_reply(200, _reply(state="continue"))
        self.assertIsInstance(action, EntityFailed)
        self.assertIn("32 round trips", action.reason)
        self.assertEqual(protocol.round_trips, 32)

    def test_importer_asking_for_the_same_file_forever_fails_after_32_round_trips(self):
        protocol = ExportProtocol("event", EVENT)
        action = protocol.start()
        for _ in range(100):
            if isinstance(action, EntityFailed):
                break
            if isinstance(action, UploadFile):
                action = protocol.on_reply(200, _reply(state="continue"))
            else:
                action = protocol.on_reply(200, _reply(state="need_file_data", file_id=FILE_A))
        self.assertIsInstance(action, EntityFailed)
        self.assertEqual(protocol.round_trips, MAX_ROUND_TRIPS)

    def test_completion_on_the_last_allowed_round_trip_is_done(self):
        protocol = _started(max_round_trips=2)
        self.assertEqual(protocol.on_reply(200, _reply(state="continue")), CACHED_EVENT)
        self.assertEqual(protocol.on_reply(200, _reply(state="complete")), Done())

    def test_bound_is_configurable(self):
        protocol = _started(max_round_trips=2)
        protocol.on_reply(200, _reply(state="continue"))
        self.assertIsInstance(protocol.on_reply(200, _reply(state="continue")), EntityFailed)
