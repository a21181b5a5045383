"""
JSON responses and errors as every meteord API writes them: compact, YAML-safe UTF-8 JSON
(``meteord.wire``) with the ``application/json; charset=utf-8`` content type, errors as ``{"message": ...}``.
"""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from meteord.wire import encode_json

JSON_CONTENT_TYPE = b"application/json; charset=utf-8"


def write_json(request: IRequest, status: int, body: Any) -> bytes:
    """Set the status and content type and return the encoded body."""
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", JSON_CONTENT_TYPE)
    return encode_json(body)


def write_json_error(request: IRequest, status: int, message: str, **extra: Any) -> bytes:
    """An error body ``{"message": message, **extra}`` with the given status."""
    return write_json(request, status, {"message": message, **extra})
