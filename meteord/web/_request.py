"""
A ``twisted.web`` request that can stream its body instead of buffering it. twisted.web
collects every request body (in memory, or in a temporary file beyond 100 KB) before a resource
sees it; for file uploads ``StreamingRequest`` instead hands each chunk, as it arrives, to a
body sink chosen from the request line once the headers are in, so an upload goes straight
into the file store. Every other request keeps twisted.web's behaviour, but its body is capped
at `JSON_BODY_LIMIT` bytes: a larger ``Content-Length`` is refused before any byte is kept, and
a chunked body stops being kept once it passes the cap; either way the answer is a JSON 413.

Choices where the specification is silent:

- A refused body is read to its end and discarded, then answered 413 in the ordinary way:
  answering and closing the connection while the client is still sending makes many clients
  report a connection reset instead of the 413, and the exporter would take that for a
  transport failure (back-off, then disabling) rather than a failure of one entity.
- Sinks are found through the site's ``body_receivers`` attribute (a sequence of
  `BodyReceiver`); a site without it streams nothing.
- POST bodies are never parsed as HTML form submissions into ``request.args`` (twisted.web's
  default, which runs the e-mail header parser on every POST's ``Content-Type``): meteord's
  bodies are JSON or streamed uploads. Query strings still fill ``request.args``.
- A sink that cannot keep up may pause the body with `body_producer`: over HTTP/1.x that is the
  connection's transport (TCP, or TLS over it), which twisted.web itself pauses the same way,
  and an HTTP/2 stream pauses its own data.
"""

from __future__ import annotations

import io
from typing import Any, Optional, Protocol, Sequence

from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.server import Request

from meteord.web.responses import write_json_error

__all__ = ["JSON_BODY_LIMIT", "BodyReceiver", "BodySink", "StreamingRequest", "body_producer",
           "split_path"]

JSON_BODY_LIMIT = 64 * 1024


class BodySink(Protocol):
    """Where a streamed request body goes. None of these methods may raise."""

    def write(self, chunk: bytes) -> None:
        """Take the next chunk of the body, on the reactor thread, as it arrives."""

    def end(self) -> None:
        """The whole body has arrived; the resource is about to be rendered."""

    def lost(self) -> None:
        """The connection was lost before the request was answered."""


class BodyReceiver(Protocol):
    """Chooses, from the request line and headers, the requests whose body it streams."""

    def sink_for(
        self, request: Request, method: bytes, path: bytes, length: Optional[int]
    ) -> Optional[BodySink]:
        """
        A sink for this request's body, or None to leave the request alone. Only the
        request's headers and client address are known yet; ``length`` is the body's
        ``Content-Length`` (None when chunked).
        """


def split_path(path: bytes) -> list[bytes]:
    """The non-empty segments of a request target's path (query string dropped)."""
    return [segment for segment in path.split(b"?", 1)[0].split(b"/") if segment]


def body_producer(request: Request) -> Optional[IPushProducer]:
    """
    What to pause for no more of ``request``'s body to arrive for a while (and to resume for
    it to come again), or None if there is nothing to pause.
    """
    channel = request.channel
    if isinstance(channel, HTTPChannel):
        return IPushProducer(channel.transport, None)
    if IPushProducer.providedBy(channel):
        return channel
    return None


def _request_line(channel: Any) -> tuple[bytes, bytes]:
    """
    The method and target of the request whose headers the channel has just read: HTTP/1.x
    channels keep them as ``_command`` and ``_path`` until the body is in, HTTP/2 streams as
    ``command`` and ``path``.
    """
    method = getattr(channel, "_command", None) or getattr(channel, "command", None)
    path = getattr(channel, "_path", None) or getattr(channel, "path", None)
    return method or b"", path or b""


class StreamingRequest(Request):
    """
    A request whose body is streamed to a sink when a receiver of the site asks for it, and
    capped at `JSON_BODY_LIMIT` otherwise. ``body_sink`` is the sink (None when the body was
    buffered as usual); ``body_too_large`` says the body was refused and discarded.
    """

    body_sink: Optional[BodySink] = None
    body_too_large = False
    body_limit = JSON_BODY_LIMIT

    def __init__(self, channel: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["parsePOSTFormSubmission"] = False
        super().__init__(channel, *args, **kwargs)

    def gotLength(self, length: Optional[int]) -> None:
        self.body_sink = self._find_sink(length)
        if self.body_sink is not None:
            self.content = io.BytesIO()
        elif length is not None and length > self.body_limit:
            self._refuse_body()
        else:
            super().gotLength(length)

    def _find_sink(self, length: Optional[int]) -> Optional[BodySink]:
        site = getattr(self.channel, "site", None)
        receivers: Sequence[BodyReceiver] = getattr(site, "body_receivers", ())
        if not receivers:
            return None
        method, path = _request_line(self.channel)
        for receiver in receivers:
            sink = receiver.sink_for(self, method, path, length)
            if sink is not None:
                return sink
        return None

    def _refuse_body(self) -> None:
        self.body_too_large = True
        self.content = io.BytesIO()

    def handleContentChunk(self, data: bytes) -> None:
        if self.body_sink is not None:
            self.body_sink.write(data)
        elif self.body_too_large:
            return
        elif self.content.tell() + len(data) > self.body_limit:
            self.content.close()
            self._refuse_body()
        else:
            super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self.body_sink is not None:
            self.body_sink.end()
        super().requestReceived(command, path, version)

    def process(self) -> None:
        if not self.body_too_large:
            super().process()
            return
        self.site = self.channel.site
        body = write_json_error(
            self, 413, f"Request body too large (at most {self.body_limit} bytes)")
        self.write(body)
        self.finish()

    def connectionLost(self, reason: Failure) -> None:
        if self.body_sink is not None:
            self.body_sink.lost()
        super().connectionLost(reason)
