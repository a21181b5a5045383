"""
Tests for ``meteord.web.errors`` (the one mapping from exceptions to JSON answers, request ids
for unexpected errors) and ``meteord.web._body`` (reading JSON request bodies: 413, 415, 400).
"""

from __future__ import annotations

from typing import Any

from klein import Klein
from twisted.logger import globalLogPublisher
from werkzeug.routing import RequestRedirect

from meteord.errors import (
    AuthenticationFailed,
    EntityNotFound,
    LastCameraAdmin,
    NoCameraStatus,
    StoreUnavailable,
)
from meteord.model import InvalidEntity
from meteord.web._body import MAX_JSON_BODY, read_json_body
from meteord.web.errors import APIError, install_error_handlers
from meteord.web.responses import write_json
from tests._web import JSON_TYPE, WebTestCase


class Raising:
    """A Klein app whose routes raise what the test names, or echo a JSON body."""

    app = Klein()
    install_error_handlers(app)

    def __init__(self, error: Exception) -> None:
        self.error = error

    @app.route("/raise", methods=["GET"])
    async def raise_error(self, request: Any) -> bytes:
        raise self.error

    @app.route("/echo", methods=["POST"])
    def echo(self, request: Any) -> bytes:
        return write_json(request, 200, {"body": read_json_body(request)})


class ErrorMappingTests(WebTestCase):
    async def answer(self, error: Exception) -> tuple[Any, Any]:
        await self.serve([Raising(error)])
        return await self.call("GET", "/raise")

    async def test_api_error_with_headers_and_extra_keys(self) -> None:
        response, body = await self.answer(
            APIError(418, "Teapot", headers={b"X-Tea": b"earl grey"}, kind="oolong"))
        self.assertEqual((response.code, body), (418, {"message": "Teapot", "kind": "oolong"}))
        self.assertEqual(self.header(response, "X-Tea"), "earl grey")
        self.assertEqual(self.header(response, "Content-Type"), JSON_TYPE)

    async def test_invalid_entity_is_400_naming_the_key(self) -> None:
        response, body = await self.answer(InvalidEntity("limit", "must be positive"))
        self.assertEqual((response.code, body), (
            400, {"message": "Invalid 'limit': must be positive", "key": "limit"}))

    async def test_invalid_entity_without_key(self) -> None:
        response, body = await self.answer(InvalidEntity("", "expected an object"))
        self.assertEqual((response.code, body), (400, {"message": "expected an object"}))

    async def test_entity_not_found_is_404_with_the_id(self) -> None:
        response, body = await self.answer(EntityNotFound("ab" * 16, "User"))
        self.assertEqual((response.code, body),
                         (404, {"message": "Entity not found", "entity_id": "ab" * 16}))

    async def test_last_camera_admin_is_409(self) -> None:
        response, body = await self.answer(LastCameraAdmin("no admin left"))
        self.assertEqual((response.code, body), (409, {"message": "no admin left"}))

    async def test_no_camera_status_is_409(self) -> None:
        response, body = await self.answer(NoCameraStatus("none in force"))
        self.assertEqual((response.code, body), (409, {"message": "none in force"}))

    async def test_authentication_failed_is_401_with_a_challenge(self) -> None:
        response, body = await self.answer(AuthenticationFailed("wrong password"))
        self.assertEqual((response.code, body),
                         (401, {"message": "Invalid user name or password"}))
        self.assertEqual(self.header(response, "WWW-Authenticate"), 'Basic realm="meteord"')

    async def test_store_unavailable_is_503(self) -> None:
        response, body = await self.answer(StoreUnavailable("down"))
        self.assertEqual((response.code, body),
                         (503, {"message": "Store unavailable, try again later"}))

    async def test_routing_redirect_keeps_status_and_location(self) -> None:
        response, body = await self.answer(RequestRedirect("http://example.org/elsewhere"))
        self.assertEqual(response.code, 308)
        self.assertEqual(body, {"message": "Moved", "location": "http://example.org/elsewhere"})
        self.assertEqual(self.header(response, "Location"), "http://example.org/elsewhere")

    async def test_unexpected_error_is_500_with_a_logged_request_id(self) -> None:
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        response, body = await self.answer(ZeroDivisionError("secret detail"))
        self.flushLoggedErrors(ZeroDivisionError)
        self.assertEqual(response.code, 500)
        self.assertEqual(set(body), {"message", "request_id"})
        self.assertEqual(body["message"], "Internal server error")
        self.assertNotIn("secret", repr(body))
        self.assertEqual(self.header(response, "X-Request-Id"), body["request_id"])
        logged = [e for e in events if e.get("request_id") == body["request_id"]]
        self.assertEqual(len(logged), 1)
        self.assertIsInstance(logged[0]["log_failure"].value, ZeroDivisionError)

    async def test_request_ids_differ(self) -> None:
        await self.serve([Raising(ValueError("x"))])
        _, first = await self.call("GET", "/raise")
        _, second = await self.call("GET", "/raise")
        self.flushLoggedErrors(ValueError)
        self.assertNotEqual(first["request_id"], second["request_id"])


class BodyTests(WebTestCase):
    async def setUp(self) -> None:
        await super().setUp()
        await self.serve([Raising(ValueError())])

    async def test_json_body_is_decoded(self) -> None:
        response, body = await self.call("POST", "/echo", body={"a": [1, 2.5, "é"]})
        self.assertEqual((response.code, body), (200, {"body": {"a": [1, 2.5, "é"]}}))

    async def test_json_with_utf8_charset_and_json_suffix_types(self) -> None:
        for content_type in (b"application/json; charset=UTF-8", b"application/merge-patch+json",
                             b"Application/JSON"):
            response, body = await self.call("POST", "/echo", data=b"[]",
                                             content_type=content_type)
            self.assertEqual((content_type, response.code), (content_type, 200))

    async def test_wrong_or_missing_content_type_is_415(self) -> None:
        for content_type in (b"text/plain", b"application/x-www-form-urlencoded",
                             b"application/json; charset=latin-1", None):
            response, body = await self.call("POST", "/echo", data=b"{}",
                                             content_type=content_type)
            self.assertEqual((content_type, response.code, body), (
                content_type, 415, {"message": "Content-Type must be application/json"}))

    async def test_body_over_64_kib_is_413(self) -> None:
        data = b'"' + b"x" * MAX_JSON_BODY + b'"'
        response, body = await self.call("POST", "/echo", data=data)
        self.assertEqual((response.code, body), (
            413, {"message": "Request body too large", "max_bytes": MAX_JSON_BODY}))

    async def test_body_of_exactly_64_kib_is_read(self) -> None:
        data = b'"' + b"x" * (MAX_JSON_BODY - 2) + b'"'
        response, body = await self.call("POST", "/echo", data=data)
        self.assertEqual(response.code, 200)

    async def test_garbage_is_400(self) -> None:
        for data in (b"", b"{", b"{'a': 1}", b"NaN", b'{"a": 1, "a": 2}', b"\xff\xfe",
                     b"[1e999]", b"<html>"):
            response, body = await self.call("POST", "/echo", data=data)
            self.assertEqual((data, response.code), (data, 400))
            self.assertTrue(body["message"].startswith("Invalid JSON"), body)


class RoutingTests(WebTestCase):
    async def test_unknown_route_and_method_stay_json(self) -> None:
        await self.serve([Raising(ValueError())])
        response, body = await self.call("GET", "/nothing")
        self.assertEqual((response.code, body), (404, {"message": "Not found"}))
        response, body = await self.call("DELETE", "/echo")
        self.assertEqual((response.code, body), (405, {"message": "Method not allowed"}))
