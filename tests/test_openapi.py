"""
Tests for ``meteord.web.openapi``: every route of every Klein app in ``meteord.web`` is
described (this fails when a route is added without its description), Klein endpoints are
unique, the document is well-formed OpenAPI 3.1 with resolvable references, it is served at
``/openapi.json``, and real answers of the query and admin APIs conform to its schemas.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from typing import Any, Iterator

from klein import Klein
from twisted.trial.unittest import TestCase

import meteord.web
import tests.test_admin_api as admin_tests
import tests.test_query_api as query_tests
from meteord.model import MAX_LIMIT, MAX_META_CONSTRAINTS
from meteord.web.admin import AdminAPI
from meteord.web.openapi import OPERATIONS, SCHEMAS, build_document, openapi_path
from meteord.web.ops import OperationsAPI
from meteord.web.query import QueryAPI
from tests._web import WebTestCase


def klein_apps() -> Iterator[tuple[str, type]]:
    """Every class defined in a module of meteord.web with a class-level Klein app."""
    for module_info in pkgutil.iter_modules(meteord.web.__path__):
        module = importlib.import_module(f"meteord.web.{module_info.name}")
        for name, value in vars(module).items():
            if (isinstance(value, type) and value.__module__ == module.__name__
                    and isinstance(vars(value).get("app"), Klein)):
                yield f"{module.__name__}.{name}", value


def resolve(schema: Any) -> Any:
    if isinstance(schema, dict) and "$ref" in schema:
        return SCHEMAS[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def conformance_errors(value: Any, schema: Any, where: str = "$") -> list[str]:
    """The places where ``value`` breaks ``schema`` (the subset of JSON Schema used here)."""
    schema = resolve(schema)
    if "oneOf" in schema:
        if any(not conformance_errors(value, s, where) for s in schema["oneOf"]):
            return []
        return [f"{where}: matches no alternative"]
    if "const" in schema and value != schema["const"]:
        return [f"{where}: expected {schema['const']!r}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: {value!r} not in {schema['enum']}"]
    types = schema.get("type")
    python_types = {"object": dict, "array": list, "string": str, "boolean": bool,
                    "integer": int, "number": (int, float)}
    if types is not None:
        allowed = [types] if isinstance(types, str) else types
        if not any(isinstance(value, python_types[t]) for t in allowed) or (
                isinstance(value, bool) and "boolean" not in allowed):
            return [f"{where}: {value!r} is not {types}"]
    errors = []
    if isinstance(value, dict) and "properties" in schema:
        for key in schema.get("required", ()):
            if key not in value:
                errors.append(f"{where}: missing {key}")
        for key, item in value.items():
            if key not in schema["properties"]:
                errors.append(f"{where}: undeclared key {key}")
            else:
                errors.extend(conformance_errors(item, schema["properties"][key], f"{where}.{key}"))
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            errors.extend(conformance_errors(item, schema["items"], f"{where}[{index}]"))
    return errors


class CompletenessTests(TestCase):
    def test_every_klein_route_is_described(self) -> None:
        missing = []
        apps = list(klein_apps())
        self.assertIn("meteord.web.query.QueryAPI", dict(apps))
        self.assertIn("meteord.web.admin.AdminAPI", dict(apps))
        for name, api_class in apps:
            for rule in api_class.app.url_map.iter_rules():
                for method in sorted(set(rule.methods) - {"HEAD", "OPTIONS"}):
                    if (openapi_path(rule.rule), method) not in OPERATIONS:
                        missing.append(f"{name}: {method} {rule.rule}")
        self.assertEqual(missing, [])

    def test_every_route_has_its_own_endpoint(self) -> None:
        for name, api_class in klein_apps():
            rules = list(api_class.app.url_map.iter_rules())
            endpoints = [rule.endpoint for rule in rules]
            self.assertEqual(len(endpoints), len(set(endpoints)), name)
            for endpoint in endpoints:
                self.assertIn(endpoint, api_class.app.endpoints, name)

    def test_every_described_operation_is_routed(self) -> None:
        routed = {(openapi_path(rule.rule), method)
                  for _, api_class in klein_apps()
                  for rule in api_class.app.url_map.iter_rules() for method in rule.methods}
        self.assertEqual(set(OPERATIONS) - routed, set())

    def test_openapi_path(self) -> None:
        self.assertEqual(openapi_path("/events/<path:search>"), "/events/{search}")
        self.assertEqual(openapi_path("/import/data/<string:file_id>/<string(length=32):md5>"),
                         "/import/data/{file_id}/{md5}")


class DocumentTests(TestCase):
    def setUp(self) -> None:
        self.document = build_document([api_class for _, api_class in klein_apps()], "/api")

    def test_shape(self) -> None:
        self.assertEqual(self.document["openapi"], "3.1.0")
        self.assertEqual(set(self.document), {"openapi", "info", "paths", "components"})
        for path in self.document["paths"]:
            self.assertTrue(path.startswith("/api/"), path)

    def test_search_limits_are_the_model_ones(self) -> None:
        for name in ("EventSearch", "FileRecordSearch"):
            properties = self.document["components"]["schemas"][name]["properties"]
            self.assertEqual((properties["limit"]["maximum"], properties["meta"]["maxItems"]),
                             (MAX_LIMIT, MAX_META_CONSTRAINTS))

    def test_nothing_undocumented(self) -> None:
        undocumented = [(path, method) for path, item in self.document["paths"].items()
                        for method, operation in item.items()
                        if operation.get("x-undocumented")]
        self.assertEqual(undocumented, [])

    def test_operation_ids_unique_and_parameters_match_the_path(self) -> None:
        ids = []
        for path, item in self.document["paths"].items():
            placeholders = sorted(re.findall(r"{([^}]+)}", path))
            for method, operation in item.items():
                if "operationId" in operation:
                    ids.append(operation["operationId"])
                names = sorted(p["name"] for p in operation.get("parameters", ())
                               if p["in"] == "path")
                self.assertEqual((path, method, names), (path, method, placeholders))
                self.assertTrue(operation["responses"], (path, method))
        self.assertEqual(len(ids), len(set(ids)))

    def test_uploads_declare_the_entity_header(self) -> None:
        for path in ("/api/import/data/{file_id}/{md5}", "/api/import/data/{file_id}"):
            headers = [p for p in self.document["paths"][path]["post"]["parameters"]
                       if p["in"] == "header"]
            self.assertEqual([(h["name"], h["required"]) for h in headers],
                             [("Meteord-Entity", False)])

    def test_references_resolve(self) -> None:
        def references(value: Any) -> Iterator[str]:
            if isinstance(value, dict):
                if "$ref" in value:
                    yield value["$ref"]
                for item in value.values():
                    yield from references(item)
            elif isinstance(value, list):
                for item in value:
                    yield from references(item)

        for reference in references(self.document):
            self.assertTrue(reference.startswith("#/components/schemas/"), reference)
            self.assertIn(reference.rsplit("/", 1)[-1], SCHEMAS)

    def test_head_and_preflight_operations(self) -> None:
        paths = self.document["paths"]
        self.assertIn("head", paths["/api/files/content/{file_id}"])
        self.assertIn("options", paths["/api/files/content/{file_id}"])
        self.assertNotIn("options", paths["/api/users"])
        self.assertEqual(paths["/api/users"]["post"]["x-role"], "camera_admin")
        self.assertEqual(paths["/api/cameras"]["get"]["security"], [{}, {"basic": []}])


class ServedDocumentTests(WebTestCase):
    async def test_served_at_openapi_json(self) -> None:
        query = QueryAPI(self.store, self.auth)
        admin = AdminAPI(self.store, self.auth, self.clock)
        await self.serve([OperationsAPI(documented=[query, admin], prefix="/api"), query, admin])
        response, body = await self.call("GET", "/openapi.json")
        self.assertEqual(response.code, 200)
        self.assertEqual(body, build_document([OperationsAPI(), query, admin], "/api"))
        self.assertIn("/api/openapi.json", body["paths"])
        self.assertIn("/api/events/{search}", body["paths"])
        self.assertNotIn("/api/import", body["paths"])


class QueryAnswersConformTests(query_tests.QueryTestCase):
    async def test_query_answers_conform(self) -> None:
        segment = query_tests.meteorpi_url_segment({})
        for path, operation in (
            ("/cameras", ("/cameras", "GET")),
            ("/cameras/cam-a/status", ("/cameras/{camera_id}/status", "GET")),
            (f"/events/{segment}", ("/events/{search}", "GET")),
            (f"/files/{segment}", ("/files/{search}", "GET")),
            (f"/events/id/{self.event_a.event_id}", ("/events/id/{event_id}", "GET")),
            (f"/files/id/{self.image.file_id}", ("/files/id/{file_id}", "GET")),
            (f"/files/id/{query_tests.UNKNOWN_ID}", ("/files/id/{file_id}", "GET")),
        ):
            response, body = await self.call("GET", path)
            schema = OPERATIONS[operation]["responses"][str(response.code)]["content"][
                "application/json"]["schema"]
            self.assertEqual(conformance_errors(body, schema), [], path)


class AdminAnswersConformTests(admin_tests.AdminTestCase):
    async def test_admin_answers_conform(self) -> None:
        config = "a" * 32
        for method, path, body, operation in (
            ("GET", "/login", None, ("/login", "GET")),
            ("GET", "/users", None, ("/users", "GET")),
            ("GET", "/export", None, ("/export", "GET")),
            ("GET", f"/export/{config}", None, ("/export/{config_id}", "GET")),
            ("GET", f"/export/{config}/status", None, ("/export/{config_id}/status", "GET")),
            ("POST", f"/export/{config}/retry", None, ("/export/{config_id}/retry", "POST")),
            ("POST", "/cameras/cam-a/status", {"inst_name": "x"},
             ("/cameras/{camera_id}/status", "POST")),
            ("POST", "/users", {"user_id": "x"}, ("/users", "POST")),
            ("DELETE", f"/export/{config}", None, ("/export/{config_id}", "DELETE")),
        ):
            response, answer = await self.admin(method, path, body)
            schema = OPERATIONS[operation]["responses"][str(response.code)]["content"][
                "application/json"]["schema"]
            self.assertEqual(conformance_errors(answer, schema), [], path)
