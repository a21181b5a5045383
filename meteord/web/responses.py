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
    """
    Set the status, content type and length and return the encoded body. With its length
    known, the response goes out in one piece rather than chunked, which saves the client
    the chunk decoding and the connection the chunk framing.
    """
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", JSON_CONTENT_TYPE)
    encoded = encode_json(body)
    request.setHeader(b"Content-Length", b"%d" % len(encoded))
    return encoded


def write_json_error(request: IRequest, status: int, message: str, **extra: Any) -> bytes:
    """An error body ``{"message": message, **extra}`` with the given status."""
    return write_json(request, status, {"message": message, **extra})
