"""
Tests for ``meteord.web.auth``: HTTP Basic against the real store, roles per route, the
verified-login cache (its lifetime, `forget`, its keys) and the per-address slow-down driven
by an injected clock.
"""

from __future__ import annotations

import base64
from typing import Any

from klein import Klein
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, gatherResults
from twisted.web.test.requesthelper import DummyRequest

from meteord.errors import StoreUnavailable
from meteord.web.auth import Authenticator
from meteord.web.errors import APIError, install_error_handlers
from meteord.web.responses import write_json
from tests._web import WebTestCase, basic

CHALLENGE = 'Basic realm="meteord"'


class Protected:
    """A Klein app with one route per role."""

    app = Klein()
    install_error_handlers(app)

    def __init__(self, auth: Authenticator) -> None:
        self.auth = auth

    @app.route("/as/<role>", methods=["GET"])
    async def as_role(self, request: Any, role: str) -> bytes:
        user = await self.auth.require(request, role)
        return write_json(request, 200, {"user": user.to_dict()})


def dummy_request(headers: dict[bytes, list[bytes]], host: str = "192.0.2.7") -> DummyRequest:
    request = DummyRequest([b""])
    for name, values in headers.items():
        request.requestHeaders.setRawHeaders(name, values)
    request.client = IPv4Address("TCP", host, 40000)
    return request


class CountingStore:
    """Forwards get_user to the real store and counts the calls."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.calls = 0

    def get_user(self, user_id: str, password: str) -> Deferred:
        self.calls += 1
        return self.store.get_user(user_id, password)


class BasicAuthOverHTTPTests(WebTestCase):
    async def setUp(self) -> None:
        await super().setUp()
        await self.add_user("alice", "correct horse", ["user"])
        await self.add_user("admin", "s3cret:with:colons é", ["user", "camera_admin"])
        await self.serve([Protected(self.auth)])

    async def assertUnauthorized(self, headers: Any, message: str) -> None:
        response, body = await self.call("GET", "/as/user", headers=headers)
        self.assertEqual((response.code, body), (401, {"message": message}))
        self.assertEqual(self.header(response, "WWW-Authenticate"), CHALLENGE)

    async def test_no_credentials(self) -> None:
        await self.assertUnauthorized(None, "Authentication required")

    async def test_wrong_password_and_unknown_user_answer_alike(self) -> None:
        await self.assertUnauthorized(basic("alice", "wrong"), "Invalid user name or password")
        await self.assertUnauthorized(basic("nobody", "x"), "Invalid user name or password")

    async def test_malformed_headers(self) -> None:
        for value in (b"Basic !!!notbase64", b"Basic " + base64.b64encode(b"no colon"),
                      b"Basic " + base64.b64encode(b"\xff\xfe:x"), b"Basic"):
            await self.assertUnauthorized({b"Authorization": [value]},
                                          "Malformed Basic credentials")
        await self.assertUnauthorized({b"Authorization": [b"Bearer abc"]},
                                      "Only HTTP Basic authentication is supported")

    async def test_overlong_user_id_is_401_not_400(self) -> None:
        await self.assertUnauthorized(basic("x" * 500, "y"), "Invalid user name or password")

    async def test_missing_role_is_403(self) -> None:
        response, body = await self.call("GET", "/as/camera_admin",
                                         headers=basic("alice", "correct horse"))
        self.assertEqual((response.code, body), (403, {"message": "Missing role camera_admin"}))

    async def test_right_role(self) -> None:
        response, body = await self.call("GET", "/as/camera_admin",
                                         headers=basic("admin", "s3cret:with:colons é"))
        self.assertEqual((response.code, body), (200, {"user": {
            "user_id": "admin", "roles": ["camera_admin", "user"], "role_mask": 3}}))


class CacheTests(WebTestCase):
    async def setUp(self) -> None:
        await super().setUp()
        await self.add_user("alice", "pw", ["user"])
        self.counting = CountingStore(self.store)
        self.auth = Authenticator(self.counting, self.clock)

    async def login(self, password: str = "pw") -> Any:
        return await self.auth.authenticate(dummy_request(basic("alice", password)))

    async def test_verified_login_is_cached_for_60_seconds(self) -> None:
        await self.login()
        await self.login()
        self.assertEqual(self.counting.calls, 1)
        self.clock.advance(59.9)
        await self.login()
        self.assertEqual(self.counting.calls, 1)
        self.clock.advance(0.2)
        await self.login()
        self.assertEqual(self.counting.calls, 2)

    async def test_concurrent_logins_share_one_check(self) -> None:
        logins = [Deferred.fromCoroutine(self.login()) for _ in range(16)]
        users = await gatherResults(logins)
        self.assertEqual({u.user_id for u in users}, {"alice"})
        self.assertEqual(self.counting.calls, 1)

    async def test_concurrent_wrong_logins_share_one_failure(self) -> None:
        logins = [Deferred.fromCoroutine(self.login("wrong")) for _ in range(5)]
        for login in logins:
            with self.assertRaises(APIError) as raised:
                await login
            self.assertEqual(raised.exception.status, 401)
        self.assertEqual(self.counting.calls, 1)
        self.assertEqual(self.auth.delay_for("192.0.2.7"), 0.0)

    async def test_a_store_failing_at_once_fails_the_login_at_once(self) -> None:
        self.patch(self.counting, "get_user",
                   lambda *args: fail(StoreUnavailable("database unavailable")))
        login = Deferred.fromCoroutine(self.login())
        self.assertIsInstance(self.failureResultOf(login).value, StoreUnavailable)
        self.assertEqual(self.auth._checking, {})

    async def test_wrong_password_is_not_answered_from_the_cache(self) -> None:
        await self.login()
        with self.assertRaises(APIError) as raised:
            await self.login("other")
        self.assertEqual(raised.exception.status, 401)

    async def test_forget_drops_the_users_entries(self) -> None:
        await self.login()
        await self.store.create_or_update_user("alice", "new password", None)
        self.auth.forget("alice")
        with self.assertRaises(APIError):
            await self.login()
        user = await self.login("new password")
        self.assertEqual(user.user_id, "alice")

    async def test_forget_leaves_other_users(self) -> None:
        await self.add_user("bob", "pw2", ["user"])
        await self.login()
        await self.auth.authenticate(dummy_request(basic("bob", "pw2")))
        self.auth.forget("bob")
        await self.login()
        self.assertEqual(self.counting.calls, 2)

    async def test_cache_keeps_no_password(self) -> None:
        await self.login()
        for key in self.auth._verified:
            self.assertEqual(len(key), 32)
            self.assertNotIn(b"pw", key)

    async def test_cache_keys_differ_between_processes(self) -> None:
        other = Authenticator(self.store, self.clock)
        self.assertNotEqual(self.auth._cache_key("alice", "pw"), other._cache_key("alice", "pw"))
        self.assertNotEqual(self.auth._cache_key("ab", "c"), self.auth._cache_key("a", "bc"))


class SlowDownTests(WebTestCase):
    async def setUp(self) -> None:
        await super().setUp()
        await self.add_user("alice", "pw", ["user"])

    async def fail(self, host: str = "192.0.2.7") -> None:
        with self.assertRaises(APIError):
            await self.auth.authenticate(dummy_request(basic("alice", "bad"), host))

    async def test_no_delay_for_four_failures(self) -> None:
        for _ in range(4):
            await self.fail()
        self.assertEqual(self.auth.delay_for("192.0.2.7"), 0.0)

    async def test_exponential_delay_from_the_fifth_failure(self) -> None:
        for _ in range(5):
            await self.fail()
        self.assertEqual(self.auth.delay_for("192.0.2.7"), 1.0)
        attempt = Deferred.fromCoroutine(
            self.auth.authenticate(dummy_request(basic("alice", "bad"))))
        self.assertFalse(attempt.called)
        self.clock.advance(0.99)
        self.assertFalse(attempt.called)
        self.clock.advance(0.01)
        with self.assertRaises(APIError):
            await attempt
        self.assertEqual(self.auth.delay_for("192.0.2.7"), 2.0)

    async def test_delay_is_capped(self) -> None:
        auth = Authenticator(self.store, self.clock, max_delay=4.0)
        for _ in range(5):
            with self.assertRaises(APIError):
                await auth.authenticate(dummy_request(basic("alice", "bad")))
        auth._failures["192.0.2.7"].extend([0.0] * 20)
        self.assertEqual(auth.delay_for("192.0.2.7"), 4.0)

    async def test_failures_older_than_a_minute_are_forgotten(self) -> None:
        for _ in range(5):
            await self.fail()
        self.clock.advance(60.1)
        self.assertEqual(self.auth.delay_for("192.0.2.7"), 0.0)
        self.assertNotIn("192.0.2.7", self.auth._failures)

    async def test_other_addresses_are_not_slowed(self) -> None:
        for _ in range(5):
            await self.fail()
        self.assertEqual(self.auth.delay_for("198.51.100.1"), 0.0)
        user = await self.auth.authenticate(dummy_request(basic("alice", "pw"), "198.51.100.1"))
        self.assertEqual(user.user_id, "alice")

    async def test_cached_login_is_not_slowed(self) -> None:
        await self.auth.authenticate(dummy_request(basic("alice", "pw")))
        for _ in range(5):
            await self.fail()
        attempt = Deferred.fromCoroutine(
            self.auth.authenticate(dummy_request(basic("alice", "pw"))))
        self.assertTrue(attempt.called)
        self.assertEqual((await attempt).user_id, "alice")

    async def test_the_right_password_after_the_delay_succeeds(self) -> None:
        for _ in range(5):
            await self.fail()
        attempt = Deferred.fromCoroutine(
            self.auth.authenticate(dummy_request(basic("alice", "pw"))))
        self.clock.advance(1.0)
        self.assertEqual((await attempt).user_id, "alice")

    async def test_address_table_is_bounded(self) -> None:
        auth = Authenticator(self.store, self.clock, max_addresses=2)
        for host in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
            with self.assertRaises(APIError):
                await auth.authenticate(dummy_request(basic("alice", "bad"), host))
        self.assertEqual(list(auth._failures), ["192.0.2.2", "192.0.2.3"])
