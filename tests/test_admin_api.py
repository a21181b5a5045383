"""
Tests for the admin API over real loopback sockets and a real SQLite store: users and roles
(with the authenticator's cache forgotten on changes), export configurations with write-only
passwords, their status and retries, and camera status updates; every route's auth cases and
4xx answers, with stored data unchanged after a refused request.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from typing import Any

from twisted.internet.ssl import KeyPair

from meteord.model import (
    CameraStatus,
    EventSearch,
    ExportConfiguration,
    ExportOutcome,
    Location,
    Orientation,
    Point,
    datetime_to_ms,
    ms_to_datetime,
)
from meteord.web._body import MAX_JSON_BODY
from meteord.web.admin import AdminAPI
from tests._web import WebTestCase, basic

ROOT = basic("root", "root pw")
READER = basic("reader", "reader pw")
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
NOW_MS = datetime_to_ms(datetime(2025, 3, 1, tzinfo=timezone.utc))
UNKNOWN_ID = "f" * 32
SQL_TEXT = "x'); DROP TABLE users; --"


def user(user_id: str, *roles: str) -> dict[str, Any]:
    mask = sum({"user": 1, "camera_admin": 2, "import": 4}[r] for r in roles)
    return {"user_id": user_id, "roles": sorted(roles), "role_mask": mask}


class AdminTestCase(WebTestCase):
    async def setUp(self) -> None:
        await super().setUp()
        self.clock.advance(NOW_MS / 1000)
        await self.add_user("root", "root pw", ["user", "camera_admin"])
        await self.add_user("reader", "reader pw", ["user"])
        self.config = await self.store.create_or_update_export_configuration(ExportConfiguration(
            config_id="a" * 32, type="event", target_url="https://hub.example/api/import",
            user_id="cam", password="remote secret", search=EventSearch(camera_ids=["cam-a"]),
            config_name="to hub", config_description="all of cam-a"))
        self.status = await self.store.update_camera_status(CameraStatus(
            camera_id="cam-a", status_id="1" * 32, lens="lens", sensor="sensor",
            inst_name="old name", inst_url="https://old.example", software_version=1,
            valid_from=T0, location=Location(lat=1.0, long=2.0, gps=False, error=3.0),
            orientation=Orientation(alt=1.0, az=2.0, error=3.0, rot=4.0, width=5.0),
            regions=[[Point(x=1, y=2)]]), T0, "cam-a")
        await self.serve([AdminAPI(self.store, self.auth, self.clock)])

    async def snapshot(self) -> Any:
        configs = await self.store.get_export_configurations()
        return (await self.store.get_users(),
                [c.to_dict(include_password=True) for c in configs],
                await self.store.get_camera_status(camera_id="cam-a"),
                await self.store.get_cameras())

    async def admin(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        return await self.call(method, path, body=body, headers=ROOT, **kwargs)


class AuthMatrixTests(AdminTestCase):
    ROUTES = [
        ("GET", "/users", None), ("POST", "/users", {"user_id": "n", "password": "p"}),
        ("PUT", "/users/roles", {"new_roles": []}), ("DELETE", "/users/reader", None),
        ("GET", "/export", None), ("GET", f"/export/{'a' * 32}", None),
        ("POST", "/export", {}), ("PUT", f"/export/{'a' * 32}", {}),
        ("DELETE", f"/export/{'a' * 32}", None), ("GET", f"/export/{'a' * 32}/status", None),
        ("POST", f"/export/{'a' * 32}/retry", None),
        ("POST", "/cameras/cam-a/status", {}),
    ]

    async def test_every_admin_route_needs_camera_admin(self) -> None:
        before = await self.snapshot()
        for method, path, body in self.ROUTES:
            for headers, code, message in (
                (None, 401, "Authentication required"),
                (basic("root", "wrong"), 401, "Invalid user name or password"),
                (READER, 403, "Missing role camera_admin"),
            ):
                response, answer = await self.call(method, path, body=body, headers=headers)
                self.assertEqual((method, path, response.code, answer),
                                 (method, path, code, {"message": message}))
                if code == 401:
                    self.assertEqual(self.header(response, "WWW-Authenticate"),
                                     'Basic realm="meteord"')
            self.clock.advance(61)
        self.assertEqual(await self.snapshot(), before)

    async def test_login_needs_role_user(self) -> None:
        await self.add_user("pusher", "pw", ["import"])
        response, body = await self.call("GET", "/login", headers=basic("pusher", "pw"))
        self.assertEqual((response.code, body), (403, {"message": "Missing role user"}))
        response, body = await self.call("GET", "/login")
        self.assertEqual(response.code, 401)
        response, body = await self.call("GET", "/login", headers=READER)
        self.assertEqual((response.code, body), (200, {"user": user("reader", "user")}))


class UserTests(AdminTestCase):
    async def test_list_users(self) -> None:
        response, body = await self.admin("GET", "/users")
        self.assertEqual((response.code, body), (200, {"users": [
            user("reader", "user"), user("root", "camera_admin", "user")]}))

    async def test_create_user_with_default_role(self) -> None:
        response, body = await self.admin("POST", "/users", {"user_id": "new", "password": "pw"})
        self.assertEqual((response.code, body), (200, {"users": [
            user("new", "user"), user("reader", "user"), user("root", "camera_admin", "user")]}))
        response, body = await self.call("GET", "/login", headers=basic("new", "pw"))
        self.assertEqual(response.code, 200)

    async def test_create_user_with_roles(self) -> None:
        response, body = await self.admin("POST", "/users", {
            "user_id": SQL_TEXT[:40], "password": "pw", "roles": ["import"]})
        self.assertEqual(response.code, 200)
        self.assertIn(user(SQL_TEXT[:40], "import"), body["users"])

    async def test_password_change_forgets_the_cached_login(self) -> None:
        response, _ = await self.call("GET", "/login", headers=READER)
        self.assertEqual(response.code, 200)
        response, body = await self.admin("POST", "/users",
                                          {"user_id": "reader", "password": "changed"})
        self.assertEqual(response.code, 200)
        self.assertIn(user("reader", "user"), body["users"])
        response, _ = await self.call("GET", "/login", headers=READER)
        self.assertEqual(response.code, 401)
        response, _ = await self.call("GET", "/login", headers=basic("reader", "changed"))
        self.assertEqual(response.code, 200)

    async def test_bad_user_bodies_are_400(self) -> None:
        before = await self.snapshot()
        cases = [
            ({"password": "pw"}, "user_id"), ({"user_id": "", "password": "pw"}, "user_id"),
            ({"user_id": "a:b", "password": "pw"}, "user_id"),
            ({"user_id": "x" * 41, "password": "pw"}, "user_id"),
            ({"user_id": 5, "password": "pw"}, "user_id"),
            ({"user_id": "n"}, "password"), ({"user_id": "n", "password": ""}, "password"),
            ({"user_id": "n", "password": 12}, "password"),
            ({"user_id": "n", "password": "p" * 1025}, "password"),
            ({"user_id": "n", "password": "pw", "roles": ["god"]}, "roles[0]"),
            ({"user_id": "n", "password": "pw", "roles": "user"}, "roles"),
        ]
        for body, key in cases:
            response, answer = await self.admin("POST", "/users", body)
            self.assertEqual((body, response.code, answer.get("key")), (body, 400, key))
        response, answer = await self.admin("POST", "/users", [1])
        self.assertEqual(response.code, 400)
        self.assertEqual(await self.snapshot(), before)

    async def test_removing_the_last_admin_by_post_is_409(self) -> None:
        before = await self.snapshot()
        response, body = await self.admin("POST", "/users", {
            "user_id": "root", "password": "root pw", "roles": ["user"]})
        self.assertEqual(response.code, 409)
        self.assertEqual(await self.snapshot(), before)

    async def test_set_roles(self) -> None:
        response, body = await self.admin("PUT", "/users/roles", {"new_roles": [
            {"user_id": "reader", "roles": ["user", "import"]}]})
        self.assertEqual((response.code, body), (200, {"users": [
            user("reader", "import", "user"), user("root", "camera_admin", "user")]}))

    async def test_two_users_can_swap_camera_admin(self) -> None:
        response, body = await self.admin("PUT", "/users/roles", {"new_roles": [
            {"user_id": "root", "roles": ["user"]},
            {"user_id": "reader", "roles": ["user", "camera_admin"]}]})
        self.assertEqual((response.code, body), (200, {"users": [
            user("reader", "camera_admin", "user"), user("root", "user")]}))
        response, body = await self.call("GET", "/users", headers=READER)
        self.assertEqual(response.code, 200)

    async def test_role_change_forgets_the_cached_login(self) -> None:
        await self.add_user("admin2", "pw", ["user", "camera_admin"])
        response, _ = await self.call("GET", "/users", headers=basic("admin2", "pw"))
        self.assertEqual(response.code, 200)
        response, _ = await self.admin("PUT", "/users/roles", {"new_roles": [
            {"user_id": "admin2", "roles": ["user"]}]})
        self.assertEqual(response.code, 200)
        response, body = await self.call("GET", "/users", headers=basic("admin2", "pw"))
        self.assertEqual((response.code, body), (403, {"message": "Missing role camera_admin"}))

    async def test_bad_role_changes_change_nothing(self) -> None:
        before = await self.snapshot()
        cases = [
            ({}, 400), ({"new_roles": "x"}, 400), ({"new_roles": [5]}, 400),
            ({"new_roles": [{"user_id": "reader"}]}, 400),
            ({"new_roles": [{"user_id": "reader", "roles": ["user"]},
                            {"user_id": "ghost", "roles": ["user"]}]}, 400),
            ({"new_roles": [{"user_id": "reader", "roles": ["import"]},
                            {"user_id": "root", "roles": ["wizard"]}]}, 400),
            ({"new_roles": [{"user_id": "reader", "roles": ["import"]},
                            {"user_id": "root", "roles": ["user"]}]}, 409),
        ]
        for body, code in cases:
            response, answer = await self.admin("PUT", "/users/roles", body)
            self.assertEqual((body, response.code), (body, code))
        self.assertEqual(await self.snapshot(), before)

    async def test_delete_user(self) -> None:
        response, body = await self.admin("DELETE", "/users/reader")
        self.assertEqual((response.code, body),
                         (200, {"users": [user("root", "camera_admin", "user")]}))
        response, _ = await self.call("GET", "/login", headers=READER)
        self.assertEqual(response.code, 401)

    async def test_delete_unknown_user_is_404(self) -> None:
        for user_id in ("ghost", "%27%20OR%201%3D1"):
            response, body = await self.admin("DELETE", f"/users/{user_id}")
            self.assertEqual(response.code, 404)
            self.assertEqual(body["message"], "Entity not found")

    async def test_deleting_the_last_admin_is_409(self) -> None:
        before = await self.snapshot()
        response, body = await self.admin("DELETE", "/users/root")
        self.assertEqual(response.code, 409)
        self.assertEqual(await self.snapshot(), before)


class ExportTests(AdminTestCase):
    def expected(self, **changes: Any) -> dict[str, Any]:
        wire = self.config.to_dict()
        wire.update(changes)
        return wire

    async def test_list_blanks_passwords(self) -> None:
        response, body = await self.admin("GET", "/export")
        self.assertEqual((response.code, body), (200, {"configs": [self.expected()]}))
        self.assertEqual(body["configs"][0]["password"], "")

    async def test_get_one(self) -> None:
        response, body = await self.admin("GET", f"/export/{'A' * 32}")
        self.assertEqual((response.code, body), (200, {"config": self.expected()}))

    async def test_unknown_and_invalid_ids(self) -> None:
        for method in ("GET", "DELETE"):
            response, body = await self.admin(method, f"/export/{UNKNOWN_ID}")
            self.assertEqual((response.code, body),
                             (404, {"message": "Entity not found", "entity_id": UNKNOWN_ID}))
            response, body = await self.admin(method, "/export/nope")
            self.assertEqual((response.code, body["key"]), (400, "config_id"))
        for suffix in ("status", "retry"):
            method = "GET" if suffix == "status" else "POST"
            response, body = await self.admin(method, f"/export/{UNKNOWN_ID}/{suffix}")
            self.assertEqual(response.code, 404)
            response, body = await self.admin(method, f"/export/..%2F..%2Fx/{suffix}")
            self.assertIn(response.code, (400, 404))

    async def test_create_is_disabled_with_an_empty_search(self) -> None:
        response, body = await self.admin("POST", "/export", {
            "type": "file", "target_url": "https://hub.example/api/import", "user_id": "cam",
            "password": "secret", "name": "files", "description": "every file"})
        self.assertEqual(response.code, 200)
        config = body["config"]
        self.assertEqual(config, {
            "config_id": config["config_id"], "type": "file",
            "target_url": "https://hub.example/api/import", "user_id": "cam", "password": "",
            "search": {"limit": 100, "meta": [], "skip": 0}, "config_name": "files",
            "config_description": "every file", "enabled": False})
        stored = await self.store.get_export_configuration(config["config_id"])
        self.assertEqual(stored.password, "secret")

    async def test_bad_creates_are_400(self) -> None:
        before = await self.snapshot()
        good = {"type": "event", "target_url": "https://hub.example/api/import",
                "user_id": "cam", "password": "pw", "name": "n", "description": "d"}
        cases = [({"type": "both"}, "type"), ({"type": ["event"]}, "type"),
                 ({"target_url": "ftp://x"}, "target_url"), ({"target_url": 5}, "target_url"),
                 ({"user_id": "a:b"}, "user_id"), ({"password": ""}, "password"),
                 ({"name": None}, "name"), ({"name": 5}, "name"),
                 ({"description": []}, "description"),
                 ({"target_url": "https://user:pw@hub.example/"}, "target_url")]
        for change, key in cases:
            response, body = await self.admin("POST", "/export", {**good, **change})
            self.assertEqual((change, response.code, body.get("key")), (change, 400, key))
        self.assertEqual(await self.snapshot(), before)

    async def test_update_keeps_the_password_when_empty(self) -> None:
        wire = self.expected(config_name=SQL_TEXT, enabled=True, password="")
        response, body = await self.admin("PUT", f"/export/{'a' * 32}", wire)
        self.assertEqual((response.code, body), (200, {"config": wire}))
        stored = await self.store.get_export_configuration("a" * 32)
        self.assertEqual((stored.password, stored.config_name), ("remote secret", SQL_TEXT))

    async def test_update_changes_the_password_and_takes_the_url_id(self) -> None:
        wire = self.expected(password="new secret")
        del wire["config_id"]
        response, body = await self.admin("PUT", f"/export/{'a' * 32}", wire)
        self.assertEqual((response.code, body["config"]["password"]), (200, ""))
        stored = await self.store.get_export_configuration("a" * 32)
        self.assertEqual(stored.password, "new secret")

    async def test_bad_updates(self) -> None:
        before = await self.snapshot()
        cases = [
            (f"/export/{'a' * 32}", self.expected(config_id="b" * 32), 400, "config_id"),
            (f"/export/{'a' * 32}", self.expected(type="both"), 400, "type"),
            (f"/export/{'a' * 32}", self.expected(enabled="yes"), 400, "enabled"),
            (f"/export/{'a' * 32}", self.expected(window=["25:00-26:00"]), 400, "window[0]"),
            (f"/export/{'a' * 32}", self.expected(search={"limit": -1}), 400, "search.limit"),
            (f"/export/{UNKNOWN_ID}", self.expected(config_id=UNKNOWN_ID), 404, None),
            ("/export/zzz", self.expected(), 400, "config_id"),
        ]
        for path, body, code, key in cases:
            response, answer = await self.admin("PUT", path, body)
            self.assertEqual((path, response.code, answer.get("key")), (path, code, key))
        response, answer = await self.admin("PUT", f"/export/{'a' * 32}", data=b"x" * 70_000)
        self.assertEqual(response.code, 413)
        self.assertEqual(await self.snapshot(), before)

    def write_file(self, data: bytes) -> str:
        path = os.path.abspath(self.mktemp())
        with open(path, "wb") as f:
            f.write(data)
        return path

    async def test_update_sets_and_clears_the_tls_keys(self) -> None:
        ca_file = self.write_file(KeyPair.generate().selfSignedCert(1, CN="hub CA").dumpPEM())
        wire = self.expected(ca_file=ca_file, pinned_certificates=["AB:" * 31 + "AB"])
        response, body = await self.admin("PUT", f"/export/{'a' * 32}", wire)
        expected = self.expected(ca_file=ca_file, pinned_certificates=["ab" * 32])
        self.assertEqual((response.code, body), (200, {"config": expected}))
        response, body = await self.admin("GET", f"/export/{'a' * 32}")
        self.assertEqual((response.code, body), (200, {"config": expected}))
        stored = await self.store.get_export_configuration("a" * 32)
        self.assertEqual((stored.ca_file, stored.pinned_certificates), (ca_file, ("ab" * 32,)))
        response, body = await self.admin("PUT", f"/export/{'a' * 32}", self.expected())
        self.assertEqual((response.code, body), (200, {"config": self.expected()}))

    async def test_bad_tls_keys_are_400(self) -> None:
        before = await self.snapshot()
        good = self.write_file(KeyPair.generate().selfSignedCert(1, CN="hub CA").dumpPEM())
        missing = os.path.abspath(self.mktemp())
        garbage = self.write_file(b"not a certificate\n")
        http = "http://hub.example/api/import"
        cases = [
            ({"ca_file": missing}, "ca_file", f"CA file {missing} unreadable"),
            ({"ca_file": garbage}, "ca_file", f"CA file {garbage} unreadable"),
            ({"ca_file": self.write_file(b"")}, "ca_file", "no valid PEM certificate"),
            ({"ca_file": os.path.dirname(good)}, "ca_file", "unreadable"),
            ({"ca_file": "hub-ca.pem"}, "ca_file", "absolute path"),
            ({"ca_file": 5}, "ca_file", "string"),
            ({"pinned_certificates": []}, "pinned_certificates", "empty"),
            ({"pinned_certificates": "ab" * 32}, "pinned_certificates", "list"),
            ({"pinned_certificates": ["ab" * 31]}, "pinned_certificates[0]", "SHA-256"),
            ({"target_url": http, "ca_file": good}, "ca_file", "https://"),
            ({"target_url": http, "pinned_certificates": ["ab" * 32]}, "pinned_certificates",
             "https://"),
        ]
        for change, key, reason in cases:
            response, body = await self.admin("PUT", f"/export/{'a' * 32}",
                                              self.expected(**change))
            self.assertEqual((change, response.code, body.get("key")), (change, 400, key))
            self.assertIn(reason, body["message"])
        self.assertEqual(await self.snapshot(), before)

    async def test_delete(self) -> None:
        response, body = await self.admin("DELETE", f"/export/{'a' * 32}")
        self.assertEqual((response.code, body), (200, {"message": "Okay"}))
        self.assertIsNone(await self.store.get_export_configuration("a" * 32))

    async def test_status(self) -> None:
        response, body = await self.admin("GET", f"/export/{'a' * 32}/status")
        self.assertEqual((response.code, body), (200, {"status": {
            "config_id": "a" * 32, "enabled": False, "pending": 0, "done": 0, "failed": 0,
            "consecutive_failures": 0, "bytes_sent": 0}}))

    async def test_status_of_an_export_at_work(self) -> None:
        self.store.clock = self.clock
        config = await self.store.create_or_update_export_configuration(
            ExportConfiguration.from_dict(self.expected(enabled=True, password="x")))
        for seconds in (1, 2, 3):
            await self.store.register_event("cam-a", T0 + timedelta(seconds=seconds),
                                            "meteorpi:meteor")
        self.assertEqual(await self.store.mark_entities_to_export(config), 3)
        self.clock.advance(10)
        done, failed, pending = await self.store.claim_export_tasks(config.config_id, 10, 60)
        await self.store.complete_export_task(done.task_id, 1234)
        self.clock.advance(5)
        await self.store.fail_export_task(failed.task_id, "bad entity")
        await self.store.release_export_task(pending.task_id)
        await self.store.defer_export_tasks(config.config_id, 1800)
        await self.store.record_export_outcome(config.config_id, ExportOutcome(
            consecutive_failures=2, deferred_until=ms_to_datetime(NOW_MS + 1_815_000),
            enabled=True, last_error="HTTP 503"))
        response, body = await self.admin("GET", f"/export/{'a' * 32}/status")
        self.assertEqual((response.code, body), (200, {"status": {
            "config_id": "a" * 32, "enabled": True, "pending": 1, "done": 1, "failed": 1,
            "oldest_pending_ms": NOW_MS, "consecutive_failures": 2,
            "last_success": NOW_MS + 10_000, "last_error": "HTTP 503",
            "next_attempt": NOW_MS + 1_815_000, "bytes_sent": 1234}}))

    async def test_retry_makes_failed_tasks_pending(self) -> None:
        config = await self.store.create_or_update_export_configuration(
            ExportConfiguration.from_dict(self.expected(enabled=True, password="x")))
        await self.store.register_event("cam-a", T0, "meteorpi:meteor")
        self.assertEqual(await self.store.mark_entities_to_export(config), 1)
        [task] = await self.store.claim_export_tasks(config.config_id, 10, 60)
        await self.store.fail_export_task(task.task_id, "bad entity")
        response, body = await self.admin("POST", f"/export/{'a' * 32}/retry")
        self.assertEqual((response.code, body), (200, {"message": "Okay", "retried": 1}))
        status = await self.store.get_export_status("a" * 32)
        self.assertEqual((status.pending, status.failed), (1, 0))


class CameraStatusTests(AdminTestCase):
    async def test_new_status_copies_the_current_one(self) -> None:
        response, body = await self.admin("POST", "/cameras/cam-a/status", {
            "inst_name": "New name", "inst_url": "https://new.example",
            "regions": [[{"x": 5, "y": 6}, {"x": 7, "y": 8}]]})
        self.assertEqual(response.code, 200)
        expected = self.status.to_dict()
        expected.update(inst_name="New name", inst_url="https://new.example",
                        regions=[[{"x": 5, "y": 6}, {"x": 7, "y": 8}]], valid_from=NOW_MS,
                        status_id=body["status"]["status_id"])
        self.assertEqual(body, {"status": expected})
        self.assertNotEqual(body["status"]["status_id"], self.status.status_id)
        response, _ = await self.admin("GET", "/export")
        current = await self.store.get_camera_status(camera_id="cam-a")
        self.assertEqual(current.to_dict(), expected)

    async def test_absent_keys_keep_their_value(self) -> None:
        response, body = await self.admin("POST", "/cameras/cam-a/status", {"inst_name": "X"})
        self.assertEqual(response.code, 200)
        self.assertEqual(body["status"]["inst_url"], "https://old.example")
        self.assertEqual(body["status"]["regions"], [[{"x": 1, "y": 2}]])

    async def test_camera_without_status_is_404(self) -> None:
        response, body = await self.admin("POST", "/cameras/nocam/status", {"inst_name": "X"})
        self.assertEqual((response.code, body),
                         (404, {"message": "Entity not found", "entity_id": "nocam"}))

    async def test_bad_status_bodies(self) -> None:
        before = await self.snapshot()
        cases = [({"regions": "x"}, "regions"), ({"regions": [[{"x": -1, "y": 0}]]},
                                                 "regions[0][0].x"),
                 ({"regions": [[{"x": "1", "y": 0}]]}, "regions[0][0].x"),
                 ({"inst_name": 5}, "inst_name"), ({"inst_url": ["u"]}, "inst_url")]
        for body, key in cases:
            response, answer = await self.admin("POST", "/cameras/cam-a/status", body)
            self.assertEqual((body, response.code, answer.get("key")), (body, 400, key))
        response, answer = await self.admin("POST", "/cameras/bad%20id/status", {})
        self.assertEqual((response.code, answer["key"]), (400, "camera_id"))
        response, answer = await self.admin("POST", "/cameras/cam-a/status", data=b"{}",
                                            content_type=b"text/plain")
        self.assertEqual(response.code, 415)
        response, answer = await self.admin("POST", "/cameras/cam-a/status",
                                            data=b" " * (MAX_JSON_BODY + 1))
        self.assertEqual(response.code, 413)
        self.assertEqual(await self.snapshot(), before)
