"""
Reading a JSON request body: the content type must be JSON (415 otherwise), the body at most
64 KiB (413) and one strict JSON document (400, through ``meteord.wire.decode_json``).

``application/json`` and any ``application/*+json`` type are accepted; a ``charset`` parameter,
if given, must be UTF-8, since JSON on the wire is UTF-8 only.
"""

from __future__ import annotations

from twisted.web.iweb import IRequest

from meteord.web.errors import APIError
from meteord.wire import decode_json

__all__ = ["MAX_JSON_BODY", "read_json_body"]

MAX_JSON_BODY = 64 * 1024


def _is_json_type(header: bytes | None) -> bool:
    """Whether a Content-Type header names JSON in UTF-8."""
    if header is None:
        return False
    media_type, *parameters = header.decode("latin-1").split(";")
    kind, _, subtype = media_type.strip().lower().partition("/")
    if kind != "application" or not (subtype == "json" or subtype.endswith("+json")):
        return False
    for parameter in parameters:
        name, _, value = parameter.strip().partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8", "utf8"
        ):
            return False
    return True


def _too_large(max_bytes: int) -> APIError:
    return APIError(413, "Request body too large", max_bytes=max_bytes)


def read_json_body(request: IRequest, max_bytes: int = MAX_JSON_BODY) -> object:
    """
    The decoded JSON body of ``request``.

    @raise APIError: 413 if the body is over ``max_bytes``, 415 if it is not declared as JSON.
    @raise meteord.wire.InvalidJSON: if the body is not one strict JSON document (a 400).
    """
    length = request.getHeader(b"content-length")
    if length is not None and length.strip().isdigit() and int(length) > max_bytes:
        raise _too_large(max_bytes)
    if not _is_json_type(request.getHeader(b"content-type")):
        raise APIError(415, "Content-Type must be application/json")
    content = request.content
    if content is None:
        data = b""
    else:
        content.seek(0)
        data = content.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise _too_large(max_bytes)
    return decode_json(data)
