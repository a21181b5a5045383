"""
The OpenAPI 3.1 document of meteord's HTTP APIs, built from the Klein routes actually mounted:
every rule of every mounted app becomes an operation, described by the entry for its path and
method in `OPERATIONS` (parameters, request body, answers, role). A route without an entry is
still listed, marked ``x-undocumented``; the test suite fails on any such route, which keeps
this document true as routes are added.

``HEAD`` is answered for every ``GET`` route and ``OPTIONS`` (the CORS pre-flight) for every
query route; both are described from the route's other operations.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

from meteord import __version__
from meteord.model import MAX_LIMIT, MAX_META_CONSTRAINTS
from meteord.web.root import MountableAPI
from meteord.wire import ENTITY_HEADER

__all__ = ["OPERATIONS", "build_document", "openapi_path"]

_CONVERTER = re.compile(r"<(?:[a-zA-Z_]+(?:\([^)]*\))?:)?([a-zA-Z_][a-zA-Z0-9_]*)>")
_ID = {"type": "string", "pattern": "^([0-9a-fA-F]{32}|[0-9a-fA-F-]{36})$",
       "description": "32 hex digits (or the dashed UUID form)"}
_TIME = {"type": "integer", "description": "milliseconds since the Unix epoch, UTC"}
_NS = {"type": "string", "description": "namespaced string `ns:value`"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: Mapping[str, Any], required: Iterable[str] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": dict(properties), "required": sorted(required)}


def _list(items: Any) -> dict[str, Any]:
    return {"type": "array", "items": items}


_SEARCH_COMMON = {
    "camera_ids": {"oneOf": [{"type": "string"}, _list({"type": "string"})]},
    "lat_min": {"type": "number"}, "lat_max": {"type": "number"},
    "long_min": {"type": "number"}, "long_max": {"type": "number"},
    "after": _TIME, "before": _TIME,
    "after_offset": {"type": "number", "minimum": 0, "exclusiveMaximum": 86400},
    "before_offset": {"type": "number", "minimum": 0, "exclusiveMaximum": 86400},
    "meta": {**_list(_ref("MetaConstraint")), "maxItems": MAX_META_CONSTRAINTS},
    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 100},
    "skip": {"type": "integer", "minimum": 0, "default": 0},
    "exclude_imported": {"type": "boolean"},
    "exclude_export_to": _ID,
}

SCHEMAS: dict[str, Any] = {
    "Error": _object({"message": {"type": "string"}, "key": {"type": "string"},
                      "entity_id": {"type": "string"}, "request_id": {"type": "string"}},
                     ["message"]),
    "Meta": _object({"type": {"enum": ["string", "number", "date"]}, "key": _NS,
                     "value": {"type": ["string", "number", "integer"]}},
                    ["type", "key", "value"]),
    "MetaConstraint": _object({
        "type": {"enum": ["after", "before", "greater", "less", "number_equals",
                          "string_equals"]},
        "key": _NS, "value": {"type": ["string", "number", "integer"]}},
        ["type", "key", "value"]),
    "FileRecord": _object({
        "file_id": _ID, "camera_id": {"type": "string"}, "mime_type": {"type": "string"},
        "file_name": {"type": "string"}, "semantic_type": _NS, "file_time": _TIME,
        "file_size": {"type": "integer", "minimum": 0}, "status_id": _ID,
        "md5": {"type": "string"}, "sha256": {"type": "string"},
        "meta": _list(_ref("Meta"))},
        ["file_id", "camera_id", "mime_type", "semantic_type", "file_time", "file_size",
         "status_id", "md5", "meta"]),
    "Event": _object({
        "event_id": _ID, "camera_id": {"type": "string"}, "event_time": _TIME,
        "event_type": _NS, "status_id": _ID, "files": _list(_ref("FileRecord")),
        "meta": _list(_ref("Meta"))},
        ["event_id", "camera_id", "event_time", "event_type", "status_id", "files", "meta"]),
    "Point": _object({"x": {"type": "integer", "minimum": 0},
                      "y": {"type": "integer", "minimum": 0}}, ["x", "y"]),
    "CameraStatus": _object({
        "camera_id": {"type": "string"}, "status_id": _ID, "lens": {"type": "string"},
        "sensor": {"type": "string"}, "inst_url": {"type": "string"},
        "inst_name": {"type": "string"}, "software_version": {"type": "integer"},
        "valid_from": _TIME, "valid_to": _TIME,
        "location": _object({"lat": {"type": "number"}, "long": {"type": "number"},
                             "gps": {"type": "boolean"}, "error": {"type": "number"}},
                            ["lat", "long", "gps", "error"]),
        "orientation": _object({k: {"type": "number"} for k in
                                ("alt", "az", "error", "rot", "width")},
                               ["alt", "az", "error", "rot", "width"]),
        "regions": _list(_list(_ref("Point")))},
        ["camera_id", "status_id", "lens", "sensor", "software_version", "valid_from",
         "location", "orientation", "regions"]),
    "EventSearch": _object({**_SEARCH_COMMON, "event_type": _NS}),
    "FileRecordSearch": _object({**_SEARCH_COMMON, "mime_type": {"type": "string"},
                                 "semantic_type": _NS, "exclude_events": {"type": "boolean"}}),
    "User": _object({"user_id": {"type": "string", "minLength": 1, "maxLength": 40},
                     "roles": _list({"enum": ["user", "camera_admin", "import"]}),
                     "role_mask": {"type": "integer"}}, ["user_id", "roles", "role_mask"]),
    "ExportConfiguration": _object({
        "config_id": _ID, "type": {"enum": ["event", "file"]},
        "target_url": {"type": "string", "format": "uri"}, "user_id": {"type": "string"},
        "password": {"type": "string", "description": "write-only: always empty in answers"},
        "search": {"oneOf": [_ref("EventSearch"), _ref("FileRecordSearch")]},
        "config_name": {"type": "string"}, "config_description": {"type": "string"},
        "enabled": {"type": "boolean"},
        "window": _list({"type": "string", "pattern": "^[0-9]{2}:[0-9]{2}-[0-9]{2}:[0-9]{2}$"}),
        "max_bytes_per_second": {"type": "integer", "minimum": 1},
        "priority": {"type": "integer"},
        "ca_file": {"type": "string", "description": "absolute path of a PEM CA bundle"},
        "pinned_certificates": {"type": "array", "minItems": 1, "items": {
            "type": "string", "description": "SHA-256 fingerprint of a DER certificate"}}},
        ["config_id", "type", "target_url", "user_id", "search", "config_name",
         "config_description"]),
    "ExportStatus": _object({
        "config_id": _ID, "enabled": {"type": "boolean"}, "pending": {"type": "integer"},
        "done": {"type": "integer"}, "failed": {"type": "integer"},
        "oldest_pending_ms": _TIME, "consecutive_failures": {"type": "integer"},
        "last_success": _TIME, "last_error": {"type": "string"}, "next_attempt": _TIME,
        "bytes_sent": {"type": "integer"}, "disabled_reason": {"type": "string"}},
        ["config_id", "enabled", "pending", "done", "failed", "consecutive_failures",
         "bytes_sent"]),
    "ImportReply": _object({"state": {"enum": ["complete", "need_status", "need_file_data",
                                               "continue", "continue-nocache", "failed"]},
                            "status_id": _ID, "file_id": _ID, "file_ids": _list(_ID),
                            "entity_id": _ID, "message": {"type": "string"}}, ["state"]),
}

_PARAMETERS: dict[str, tuple[dict[str, Any], str]] = {
    "camera_id": ({"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"}, "camera id"),
    "ms": ({"type": "integer"}, "time in milliseconds since the Unix epoch"),
    "search": ({"type": "string"}, "an EventSearch or FileRecordSearch as JSON, "
               "URL-encoded twice (quote_plus twice, as the MeteorPi client does)"),
    "event_id": (_ID, "event id"),
    "file_id": (_ID, "file id"),
    "name": ({"type": "string"}, "any name (ignored; lets browsers save under it)"),
    "config_id": (_ID, "export configuration id"),
    "user_id": ({"type": "string"}, "user id"),
    "md5": ({"type": "string", "pattern": "^[0-9a-fA-F]{32}$"}, "md5 of the bytes"),
    "run_id": (_ID, "script run id"),
}

_STATUS_TEXT = {200: "OK", 202: "Accepted", 204: "No content", 206: "Partial content",
                304: "Not modified", 400: "Malformed input (the body names the key)",
                401: "Missing or wrong credentials", 403: "Lacking the role",
                404: "Unknown entity", 409: "Conflict", 413: "Body too large",
                415: "Not JSON", 416: "Range not satisfiable", 422: "Checksum mismatch",
                429: "Too many runs", 503: "Store unavailable"}


def _op(summary: str, tag: str, *, role: str | None = None, ok: Any = None,
        body: Any = None, errors: Iterable[int] = (), ok_status: int = 200,
        ok_media: str = "application/json") -> dict[str, Any]:
    """One operation's description; ``role`` "query" means public unless configured private."""
    responses: dict[str, Any] = {
        str(ok_status): {"description": _STATUS_TEXT[ok_status],
                         "content": {ok_media: {"schema": ok if ok is not None else {}}}}}
    codes = set(errors) | {503}
    if body is not None:
        codes |= {400, 413, 415}
    if role is not None:
        codes |= {401} if role == "query" else {401, 403}
    for code in sorted(codes):
        if code == 206:
            responses["206"] = {"description": _STATUS_TEXT[206],
                                "content": {ok_media: {"schema": ok or {}}}}
        elif code == 304:
            responses["304"] = {"description": _STATUS_TEXT[304]}
        else:
            responses[str(code)] = {"description": _STATUS_TEXT[code], "content": {
                "application/json": {"schema": _ref("Error")}}}
    operation: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": responses}
    if role == "query":
        operation["security"] = [{}, {"basic": []}]
        operation["description"] = "Public unless `[http] public_query = false` (role `user`)."
    elif role is not None:
        operation["security"] = [{"basic": []}]
        operation["x-role"] = role
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": body}}}
    return operation


def _users() -> dict[str, Any]:
    return _object({"users": _list(_ref("User"))}, ["users"])


_EVENTS = _object({"events": _list(_ref("Event")), "count": {"type": "integer"}},
                  ["events", "count"])
_FILES = _object({"files": _list(_ref("FileRecord")), "count": {"type": "integer"}},
                 ["files", "count"])
_STATUS = _object({"status": _ref("CameraStatus")}, ["status"])
_CONFIG = _object({"config": _ref("ExportConfiguration")}, ["config"])
_OKAY = _object({"message": {"const": "Okay"}}, ["message"])
_BYTES = {"type": "string", "format": "binary"}

_NAMED_UPLOAD = ("An optional `Meteord-Entity` header names the entity (event_id or file_id) "
                 "the file is uploaded for. When this node holds that entity and the upload "
                 "was all it still needed, the entity is stored and the reply is `complete` "
                 "with its `entity_id`; otherwise it is `continue`. A malformed id is 400.")
_ENTITY_HEADER = {"name": ENTITY_HEADER, "in": "header", "required": False, "schema": _ID,
                  "description": "The entity (event_id or file_id) the file is uploaded for"}

OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("/healthz", "GET"): _op("Health of the process and its store", "operations", ok=_object(
        {"status": {"enum": ["ok", "unavailable"]}, "version": {"type": "string"},
         "store": {"enum": ["ok", "unavailable"]}}, ["status", "version"])),
    ("/openapi.json", "GET"): _op("This document", "operations", ok={"type": "object"}),
    ("/nodes", "GET"): _op("The discovery registry", "query", role="query", ok=_object(
        {"nodes": _list({"type": "object"})}, ["nodes"])),
    # query
    ("/cameras", "GET"): _op("Cameras with a status, sorted descending", "query", role="query",
                             ok=_object({"cameras": _list({"type": "string"})}, ["cameras"])),
    ("/cameras/{camera_id}/status", "GET"): _op(
        "The camera's status in force now", "query", role="query", ok=_STATUS,
        errors=(400, 404)),
    ("/cameras/{camera_id}/status/{ms}", "GET"): _op(
        "The camera's status in force at a time", "query", role="query", ok=_STATUS,
        errors=(400, 404)),
    ("/events/{search}", "GET"): _op("Search events", "query", role="query", ok=_EVENTS,
                                     errors=(400,)),
    ("/events/search", "POST"): _op("Search events (search in the body)", "query",
                                    role="query", ok=_EVENTS, body=_ref("EventSearch")),
    ("/events/id/{event_id}", "GET"): _op(
        "One event", "query", role="query", errors=(400, 404),
        ok=_object({"event": _ref("Event")}, ["event"])),
    ("/files/{search}", "GET"): _op("Search files", "query", role="query", ok=_FILES,
                                    errors=(400,)),
    ("/files/search", "POST"): _op("Search files (search in the body)", "query",
                                   role="query", ok=_FILES, body=_ref("FileRecordSearch")),
    ("/files/id/{file_id}", "GET"): _op(
        "One file record", "query", role="query", errors=(400, 404),
        ok=_object({"file": _ref("FileRecord")}, ["file"])),
    ("/files/content/{file_id}", "GET"): _op(
        "The bytes of a file (Range, If-None-Match supported)", "query", role="query",
        ok=_BYTES, ok_media="application/octet-stream", errors=(206, 304, 400, 404, 416)),
    ("/files/content/{file_id}/{name}", "GET"): _op(
        "The bytes of a file, under a name of the client's choice", "query", role="query",
        ok=_BYTES, ok_media="application/octet-stream", errors=(206, 304, 400, 404, 416)),
    # admin
    ("/login", "GET"): _op("The logged-in user", "admin", role="user",
                           ok=_object({"user": _ref("User")}, ["user"])),
    ("/users", "GET"): _op("Every user", "admin", role="camera_admin", ok=_users()),
    ("/users", "POST"): _op(
        "Create a user or change their password (and roles)", "admin", role="camera_admin",
        ok=_users(), errors=(409,), body=_object({
            "user_id": {"type": "string"}, "password": {"type": "string", "minLength": 1},
            "roles": _list({"enum": ["user", "camera_admin", "import"]})},
            ["user_id", "password"])),
    ("/users/roles", "PUT"): _op(
        "Set users' roles", "admin", role="camera_admin", ok=_users(), errors=(409,),
        body=_object({"new_roles": _list(_object({
            "user_id": {"type": "string"},
            "roles": _list({"enum": ["user", "camera_admin", "import"]})},
            ["user_id", "roles"]))}, ["new_roles"])),
    ("/users/{user_id}", "DELETE"): _op("Delete a user", "admin", role="camera_admin",
                                        ok=_users(), errors=(404, 409)),
    ("/export", "GET"): _op("Every export configuration", "admin", role="camera_admin",
                            ok=_object({"configs": _list(_ref("ExportConfiguration"))},
                                       ["configs"])),
    ("/export", "POST"): _op(
        "Create a disabled export configuration with an empty search", "admin",
        role="camera_admin", ok=_CONFIG, body=_object({
            "type": {"enum": ["event", "file"]}, "target_url": {"type": "string"},
            "user_id": {"type": "string"}, "password": {"type": "string", "minLength": 1},
            "name": {"type": "string"}, "description": {"type": "string"}},
            ["type", "target_url", "user_id", "password", "name"])),
    ("/export/{config_id}", "GET"): _op("One export configuration", "admin",
                                        role="camera_admin", ok=_CONFIG, errors=(400, 404)),
    ("/export/{config_id}", "PUT"): _op(
        "Replace an export configuration (an empty password keeps the stored one)", "admin",
        role="camera_admin", ok=_CONFIG, errors=(404,), body=_ref("ExportConfiguration")),
    ("/export/{config_id}", "DELETE"): _op("Delete an export configuration", "admin",
                                           role="camera_admin", ok=_OKAY, errors=(400, 404)),
    ("/export/{config_id}/status", "GET"): _op(
        "Task counts and failure accounting of an export", "admin", role="camera_admin",
        ok=_object({"status": _ref("ExportStatus")}, ["status"]), errors=(400, 404)),
    ("/export/{config_id}/retry", "POST"): _op(
        "Make the failed tasks of an export pending again", "admin", role="camera_admin",
        errors=(400, 404), ok=_object({"message": {"const": "Okay"},
                                       "retried": {"type": "integer"}}, ["message", "retried"])),
    ("/cameras/{camera_id}/status", "POST"): _op(
        "A new status from now, copied from the current one with these fields", "admin",
        role="camera_admin", ok=_STATUS, errors=(404,), body=_object({
            "inst_name": {"type": "string"}, "inst_url": {"type": "string"},
            "regions": _list(_list(_ref("Point")))})),
    # import
    ("/import", "POST"): _op("One message of the import protocol", "import", role="import",
                             ok=_ref("ImportReply"), body={"type": "object"}),
    ("/import/data/{file_id}/{md5}", "POST"): {**_op(
        "The bytes of a file (multipart part `file` or application/octet-stream)", "import",
        role="import", ok=_ref("ImportReply"), errors=(400, 413, 422)),
        "description": _NAMED_UPLOAD, "header_parameters": [_ENTITY_HEADER]},
    ("/import/data/{file_id}", "POST"): {**_op(
        "The bytes of a file whose record this node holds (old exporters)", "import",
        role="import", ok=_ref("ImportReply"), errors=(400, 413, 422)),
        "description": _NAMED_UPLOAD, "header_parameters": [_ENTITY_HEADER]},
}


def openapi_path(rule: str) -> str:
    """The OpenAPI path template of a werkzeug rule: ``<path:search>`` becomes ``{search}``."""
    return _CONVERTER.sub(r"{\1}", rule)


def _parameters(path: str) -> list[dict[str, Any]]:
    parameters = []
    for name in re.findall(r"{([^}]+)}", path):
        schema, description = _PARAMETERS.get(name, ({"type": "string"}, name))
        parameters.append({"name": name, "in": "path", "required": True,
                           "schema": schema, "description": description})
    return parameters


def _head(get: Mapping[str, Any]) -> dict[str, Any]:
    head = {key: value for key, value in get.items() if key != "responses"}
    head["summary"] = "Headers of: " + get["summary"]
    head["operationId"] = get["operationId"].removesuffix("_get") + "_head"
    head["responses"] = {code: {"description": answer["description"]}
                         for code, answer in get["responses"].items()}
    return head


def _preflight() -> dict[str, Any]:
    return {"summary": "CORS pre-flight", "tags": ["query"], "security": [{}],
            "responses": {"204": {"description": "Allowed: Authorization and Content-Type "
                                                 "headers, GET, HEAD, POST and OPTIONS"}}}


def _undocumented() -> dict[str, Any]:
    return {"summary": "(undocumented)", "x-undocumented": True,
            "responses": {"default": {"description": "See the specification"}}}


def build_document(apis: Iterable[MountableAPI], prefix: str = "/api") -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route of ``apis`` mounted under ``prefix``."""
    paths: dict[str, dict[str, Any]] = {}
    for api in apis:
        for rule in api.app.url_map.iter_rules():
            path = openapi_path(rule.rule)
            item = paths.setdefault(prefix.rstrip("/") + path, {})
            methods = set(rule.methods or ())
            for method in sorted(methods - {"HEAD", "OPTIONS"}):
                operation = dict(OPERATIONS.get((path, method)) or _undocumented())
                headers = operation.pop("header_parameters", [])
                if "parameters" not in operation and ("{" in path or headers):
                    operation["parameters"] = _parameters(path) + headers
                operation["operationId"] = f"{rule.endpoint}_{method.lower()}"
                item[method.lower()] = operation
            if "OPTIONS" in methods:
                item["options"] = _preflight()
                if "{" in path:
                    item["options"]["parameters"] = _parameters(path)
    for item in paths.values():
        if "get" in item:
            item["head"] = _head(item["get"])
    return {
        "openapi": "3.1.0",
        "info": {"title": "meteord", "version": __version__,
                 "description": "Query, admin, import and operations APIs of a meteord node "
                                "(MeteorPi-compatible). Times are integer milliseconds since "
                                "the Unix epoch, UTC; errors are JSON `{\"message\": ...}`."},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}},
        },
    }
