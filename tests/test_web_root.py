"""
`APIRoot` dispatch over real loopback HTTP: a request goes to the first mounted API with a
matching route whichever way it is found (by the first-segment index or by matching every
candidate), and misses are JSON 404/405 with the union of allowed methods.
"""

from __future__ import annotations

import json

from klein import Klein
from twisted.web.iweb import IRequest

from meteord.web.errors import install_error_handlers
from meteord.web.responses import write_json
from tests._web import WebTestCase


class _Reads:
    """Owns /things (GET) and shares /both with `_Writes`."""

    app = Klein()
    install_error_handlers(app)

    @app.route("/things/<thing_id>", methods=["GET"])
    def get_thing(self, request: IRequest, thing_id: str) -> bytes:
        return write_json(request, 200, {"api": "reads", "thing": thing_id})

    @app.route("/both", methods=["GET"])
    def get_both(self, request: IRequest) -> bytes:
        return write_json(request, 200, {"api": "reads"})


class _Writes:
    """Shares /both (PUT, and GET shadowed by `_Reads` mounted first)."""

    app = Klein()
    install_error_handlers(app)

    @app.route("/both", methods=["GET", "PUT"])
    def both(self, request: IRequest) -> bytes:
        return write_json(request, 200, {"api": "writes"})


class _Anywhere:
    """A route whose first segment is a variable: a candidate for every request."""

    app = Klein()
    install_error_handlers(app)

    @app.route("/<name>/info", methods=["GET"])
    def info(self, request: IRequest, name: str) -> bytes:
        return write_json(request, 200, {"api": "anywhere", "name": name})


class APIRootDispatchTests(WebTestCase):
    async def setUp(self) -> None:
        await super().setUp()
        await self.serve([_Reads(), _Writes(), _Anywhere()])

    async def test_route_of_one_api(self) -> None:
        response, body = await self.call("GET", "/things/t1")
        self.assertEqual((response.code, body), (200, {"api": "reads", "thing": "t1"}))

    async def test_first_mounted_api_wins_a_shared_route(self) -> None:
        response, body = await self.call("GET", "/both")
        self.assertEqual((response.code, body), (200, {"api": "reads"}))
        response, body = await self.call("GET", "/things/info")
        self.assertEqual((response.code, body), (200, {"api": "reads", "thing": "info"}))

    async def test_shared_segment_reaches_the_second_api(self) -> None:
        response, body = await self.call("PUT", "/both", body={})
        self.assertEqual((response.code, body), (200, {"api": "writes"}))

    async def test_variable_first_segment_matches_any_segment(self) -> None:
        response, body = await self.call("GET", "/both/info")
        self.assertEqual((response.code, body), (200, {"api": "anywhere", "name": "both"}))
        response, body = await self.call("GET", "/unknown/info")
        self.assertEqual((response.code, body), (200, {"api": "anywhere", "name": "unknown"}))

    async def test_json_answers_carry_their_length_and_are_not_chunked(self) -> None:
        for method, path in (("GET", "/things/t1"), ("GET", "/nothing")):
            response, body = await self.call(method, path)
            self.assertEqual(self.header(response, "Content-Length"),
                             str(len(json.dumps(body, separators=(",", ":")))))
            self.assertIsNone(self.header(response, "Transfer-Encoding"))

    async def test_unknown_paths_are_json_404(self) -> None:
        for path in ("/things", "/things/t1/extra", "/nothing", "/"):
            response, body = await self.call("GET", path)
            self.assertEqual((response.code, body), (404, {"message": "Not found"}), path)

    async def test_wrong_method_lists_every_allowed_method(self) -> None:
        response, body = await self.call("DELETE", "/both")
        self.assertEqual((response.code, body), (405, {"message": "Method not allowed"}))
        self.assertEqual(self.header(response, "Allow"), "GET, HEAD, PUT")

    async def test_wrong_method_on_a_route_of_one_api(self) -> None:
        response, body = await self.call("POST", "/things/t1", body={})
        self.assertEqual((response.code, body), (405, {"message": "Method not allowed"}))
        self.assertEqual(self.header(response, "Allow"), "GET, HEAD")

    async def test_repeated_and_trailing_slashes(self) -> None:
        response, body = await self.call("GET", "//things///t2/")
        self.assertEqual((response.code, body), (200, {"api": "reads", "thing": "t2"}))
