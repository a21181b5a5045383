"""
The resource at the top of meteord's HTTP site. It tolerates repeated and trailing slashes,
strips the configured prefix and hands each request to the first mounted Klein application
with a matching route, so the query, admin, import and operations APIs can be mounted in any
combination and an unmounted API simply answers 404.

Routes are indexed by their first path segment: a request whose first segment only one API
can match goes straight to it (Klein then routes it, and answers its 404 or 405), so most
requests are matched once rather than once per mounted API.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

from klein import Klein
from twisted.web.resource import Resource
from twisted.web.server import Request
from werkzeug.exceptions import MethodNotAllowed, NotFound

from meteord.web.responses import write_json_error


class MountableAPI(Protocol):
    """Anything with a class-level Klein ``app`` bound to an instance with its collaborators."""

    app: Klein


def _segments(prefix: str) -> list[bytes]:
    return [s.encode("utf-8") for s in prefix.split("/") if s]


def _first_segment(rule: str) -> str | None:
    """The literal first segment of a route, or None when it starts with a variable."""
    first = rule.lstrip("/").split("/", 1)[0]
    return None if "<" in first else first


class APIRoot(Resource):
    """Dispatches requests under ``prefix`` to the mounted APIs; everything else is a JSON 404."""

    isLeaf = True

    def __init__(self, prefix: str, apis: Sequence[MountableAPI]) -> None:
        super().__init__()
        self._prefix = _segments(prefix)
        self._apis = [(api.app.url_map, api.app.resource()) for api in apis]
        by_segment: dict[str | None, list[tuple[Any, Any]]] = {}
        for url_map, resource in self._apis:
            for segment in {_first_segment(rule.rule) for rule in url_map.iter_rules()}:
                by_segment.setdefault(segment, []).append((url_map, resource))
        # An API with a route starting with a variable can match any first segment.
        anywhere = by_segment.pop(None, [])
        self._by_segment = {
            segment: [api for api in self._apis if api in candidates or api in anywhere]
            for segment, candidates in by_segment.items()
        }
        self._anywhere = anywhere

    def render(self, request: Request) -> bytes | int:
        segments = [s for s in request.postpath if s]
        if segments[: len(self._prefix)] != self._prefix:
            return write_json_error(request, 404, "Not found")
        request.prepath = list(self._prefix)
        request.postpath = segments[len(self._prefix):]
        try:
            path = "/" + b"/".join(request.postpath).decode("utf-8")
        except UnicodeDecodeError:
            return write_json_error(request, 400, "Path is not valid UTF-8")
        candidates = self._by_segment.get(path.split("/", 2)[1], self._anywhere)
        if len(candidates) == 1:
            return candidates[0][1].render(request)
        method = request.method.decode("ascii", "replace")
        allowed: set[str] = set()
        for url_map, resource in candidates:
            try:
                url_map.bind("", path_info=path).match(method=method)
            except MethodNotAllowed as e:
                allowed.update(e.valid_methods or ())
                continue
            except NotFound:
                continue
            except Exception:
                # A redirect or another routing outcome: let Klein answer it.
                pass
            return resource.render(request)
        if allowed:
            request.setHeader(b"Allow", ", ".join(sorted(allowed)).encode("ascii"))
            return write_json_error(request, 405, "Method not allowed")
        return write_json_error(request, 404, "Not found")
