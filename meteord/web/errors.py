"""
The one place where meteord's HTTP APIs turn exceptions into answers. Client errors (`APIError`,
invalid entities and JSON, unknown entities, routing errors) become their status with a JSON
body ``{"message": ...}``; anything unexpected becomes a 500 whose body and ``X-Request-Id``
header carry a fresh request id, logged with the traceback so an operator can find it.

`install_error_handlers` registers this on a Klein application; every API module calls it on
its class-level ``app``. Werkzeug's routing redirects keep their status and ``Location`` (with
a JSON body) instead of being swallowed into a 500.

Decisions where the specification is silent: 400 bodies also carry the bad ``key``; a duplicate
entity, a broken store constraint and a missing camera status for an operation are 409; a
request id is made only for 500s (a fresh random id: a client's ``X-Request-Id`` is not
trusted into the logs); an error after the response has started is logged and the response
ended as it is.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.routing import RequestRedirect

from meteord.errors import (
    AuthenticationFailed,
    ConstraintViolation,
    EntityNotFound,
    LastCameraAdmin,
    NoCameraStatus,
    StoreUnavailable,
)
from meteord.model import InvalidEntity, new_id
from meteord.web.responses import write_json, write_json_error
from meteord.wire import InvalidJSON

__all__ = [
    "APIError",
    "BASIC_CHALLENGE",
    "REQUEST_ID_HEADER",
    "entity_not_found",
    "install_error_handlers",
    "render_failure",
]

log = Logger()

REQUEST_ID_HEADER = b"X-Request-Id"
BASIC_CHALLENGE = b'Basic realm="meteord"'


class APIError(Exception):
    """
    A client error with its answer: ``status``, ``{"message": message, **extra}`` as the body
    and extra response ``headers``.
    """

    def __init__(self, status: int, message: str, *,
                 headers: Mapping[bytes, bytes] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        self.extra = extra


def entity_not_found(entity_id: str) -> APIError:
    """The 404 of the specification for an unknown entity."""
    return APIError(404, "Entity not found", entity_id=entity_id)


def _invalid_entity(error: InvalidEntity) -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] = {"message": str(error)}
    if error.key:
        body["key"] = error.key
    return 400, body


def _message(status: int) -> Callable[[Exception], tuple[int, dict[str, Any]]]:
    return lambda error: (status, {"message": str(error)})


# Domain exceptions and their answers; the first matching class wins.
_DOMAIN_ERRORS: tuple[tuple[type[Exception], Callable[[Any], tuple[int, dict[str, Any]]]], ...] = (
    (InvalidEntity, _invalid_entity),
    (InvalidJSON, _message(400)),
    (EntityNotFound, lambda e: (404, {"message": "Entity not found", "entity_id": e.entity_id})),
    (LastCameraAdmin, _message(409)),
    (ConstraintViolation, _message(409)),
    (NoCameraStatus, _message(409)),
    (AuthenticationFailed, lambda e: (401, {"message": "Invalid user name or password"})),
    (StoreUnavailable, lambda e: (503, {"message": "Store unavailable, try again later"})),
)


def _routing_error(request: IRequest, error: HTTPException) -> bytes:
    """Werkzeug's routing outcomes as JSON, keeping their status and headers."""
    status = error.code or 500
    if isinstance(error, RequestRedirect):
        request.setHeader(b"Location", error.new_url.encode("utf-8"))
        return write_json_error(request, status, "Moved", location=error.new_url)
    if isinstance(error, MethodNotAllowed) and error.valid_methods:
        request.setHeader(b"Allow", ", ".join(sorted(error.valid_methods)).encode("ascii"))
        return write_json_error(request, 405, "Method not allowed")
    if status == 404:
        return write_json_error(request, 404, "Not found")
    return write_json_error(request, status, error.name)


def _internal_error(request: IRequest, failure: Failure) -> bytes:
    """Log the failure under a new request id and answer 500 with that id."""
    request_id = new_id()
    log.failure(
        "Unexpected error answering {method} {uri} (request id {request_id})",
        failure,
        method=request.method.decode("ascii", "replace"),
        uri=request.uri.decode("ascii", "replace"),
        request_id=request_id,
    )
    request.setHeader(REQUEST_ID_HEADER, request_id.encode("ascii"))
    return write_json_error(request, 500, "Internal server error", request_id=request_id)


def render_failure(request: IRequest, failure: Failure) -> bytes:
    """The JSON answer for an exception raised while answering ``request``."""
    error = failure.value
    if getattr(request, "startedWriting", False):
        # Too late for another status: record the incident and let the response end.
        log.failure("Error after the response started ({uri})", failure,
                    uri=request.uri.decode("ascii", "replace"))
        return b""
    if isinstance(error, APIError):
        for name, value in error.headers.items():
            request.setHeader(name, value)
        return write_json_error(request, error.status, error.message, **error.extra)
    for error_class, answer in _DOMAIN_ERRORS:
        if isinstance(error, error_class):
            status, body = answer(error)
            if status == 401:
                request.setHeader(b"WWW-Authenticate", BASIC_CHALLENGE)
            return write_json(request, status, body)
    if isinstance(error, HTTPException):
        return _routing_error(request, error)
    return _internal_error(request, failure)


def install_error_handlers(app: Klein) -> None:
    """Make ``app`` answer every exception of its handlers with `render_failure`."""

    def handle_error(*arguments: Any) -> bytes:
        # Klein passes (instance, request, failure) for class-based apps, else (request, failure).
        request, failure = arguments[-2:]
        return render_failure(request, failure)

    app.handle_errors(Exception)(handle_error)
