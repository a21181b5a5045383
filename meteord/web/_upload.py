"""
The body of a file-data upload (``POST /import/data/{file_id}/{md5}``) streamed into the file
store as it arrives: either raw bytes (``application/octet-stream``) or ``multipart/form-data``
whose part ``file`` holds the bytes (the original MeteorPi exporter), parsed incrementally with
``multipart.PushMultipartParser``. `UploadBody` is a `meteord.web._request.BodySink`; the
import API's handler later commits or aborts it.

Choices where the specification is silent:

- A request without ``Authorization: Basic`` credentials, or whose path does not carry a
  valid file id and md5, never opens a temporary file: its bytes are discarded as they come
  and the handler answers 401 or 400. The importer starts checking the credentials as the
  headers arrive; until that answers, bytes are kept, so a wrong password costs at most one
  temporary file that is then removed.
- For a streamed request the importer opens the file-store upload with the body's producer
  (``meteord.web._request.body_producer``), so the store hashes and writes in its thread pool
  and pauses the connection when it falls behind. The upload is told as soon as the body has
  ended, so the connection is never left paused; the bytes are synced to disk only when the
  handler commits them.
- Only the first part named ``file`` is kept; other parts are read and ignored. A multipart
  body may exceed ``max_bytes`` by `MULTIPART_OVERHEAD` bytes of boundaries and part headers.
- Any other content type is answered 415; a missing or malformed boundary, a malformed
  multipart stream or one without a ``file`` part is 400.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

import attrs
from multipart import MultipartError, MultipartSegment, PushMultipartParser, parse_options_header
from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

from meteord.store.files import BackgroundUpload, StoredFile, Upload, UploadTooLarge

__all__ = ["MULTIPART_OVERHEAD", "UploadBody", "UploadRefused"]

MULTIPART_OVERHEAD = 64 * 1024
_FILE_PART = "file"

log = Logger()


@attrs.frozen(auto_exc=True)
class UploadRefused(Exception):
    """The upload cannot be stored: answer ``status`` with ``message``."""

    status: int
    message: str


def _header(headers: Headers, name: bytes) -> Optional[str]:
    values = headers.getRawHeaders(name)
    if not values:
        return None
    return values[0].decode("latin-1")


class UploadBody:
    """
    Receives the body of one upload. ``open_upload`` starts a file-store upload (called at
    most once, when the first byte of the file is due); ``accept`` False discards the bytes.
    After `end`, `refusal` says why the bytes cannot be stored, if they cannot.
    ``authorization``, when set, is the credential check started as the headers arrived
    (a Deferred firing with the user, for the handler to await once): if it fails, the bytes
    are discarded at once.
    """

    authorization: Optional[Deferred[Any]] = None

    def __init__(
        self,
        open_upload: Callable[[], Union[Upload, BackgroundUpload]],
        headers: Headers,
        length: Optional[int],
        max_bytes: int,
        accept: bool = True,
    ) -> None:
        self._open_upload = open_upload
        self._max_bytes = max_bytes
        self._upload: Optional[Union[Upload, BackgroundUpload]] = None
        self._parser: Optional[PushMultipartParser] = None
        self._in_file_part = False
        self._file_seen = False
        self._ended = False
        self._discarding: list[Deferred[None]] = []
        self.refusal: Optional[UploadRefused] = None
        self.accepting = accept
        if accept:
            self._check_headers(headers, length)

    def _check_headers(self, headers: Headers, length: Optional[int]) -> None:
        content_type = _header(headers, b"Content-Type")
        media_type, options = parse_options_header(content_type or "")
        if media_type == "multipart/form-data":
            boundary = options.get("boundary")
            if not boundary:
                self._refuse(400, "multipart/form-data without a boundary")
                return
            try:
                self._parser = PushMultipartParser(boundary)
            except MultipartError as e:
                self._refuse(400, f"Malformed multipart body: {e}")
                return
            limit = self._max_bytes + MULTIPART_OVERHEAD
        elif media_type == "application/octet-stream":
            limit = self._max_bytes
        else:
            self._refuse(415, "File data must be multipart/form-data (part 'file') or "
                              "application/octet-stream")
            return
        if length is not None and length > limit:
            self._refuse(413, f"Upload too large (at most {self._max_bytes} bytes)")

    def _refuse(self, status: int, message: str) -> None:
        """Stop keeping bytes: discard what was written and remember why."""
        if self.refusal is None:
            self.refusal = UploadRefused(status, message)
        self.accepting = False
        self._discard()

    def _discard(self) -> None:
        if self._upload is not None:
            upload, self._upload = self._upload, None
            self._discarding.append(upload.abort().addErrback(
                lambda f: log.failure("Could not remove an aborted upload", f)))

    def _write_file_bytes(self, chunk: bytes) -> None:
        try:
            if self._upload is None:
                self._upload = self._open_upload()
            self._upload.write(chunk)
        except UploadTooLarge:
            self._refuse(413, f"Upload too large (at most {self._max_bytes} bytes)")
        except OSError:
            log.failure("Could not write an upload to the file store")
            self._refuse(503, "The file store cannot take the upload now")

    def write(self, chunk: bytes) -> None:
        """Take the next chunk of the body (never raises)."""
        if not self.accepting:
            return
        if self._parser is None:
            self._write_file_bytes(chunk)
            return
        try:
            for event in self._parser.parse(chunk):
                if not self.accepting:
                    return
                self._on_part_event(event)
        except MultipartError as e:
            self._refuse(400, f"Malformed multipart body: {e}")

    def _on_part_event(self, event: object) -> None:
        if isinstance(event, MultipartSegment):
            self._in_file_part = event.name == _FILE_PART and not self._file_seen
            if self._in_file_part:
                self._file_seen = True
                self._write_file_bytes(b"")
        elif event is None:
            self._in_file_part = False
        elif self._in_file_part:
            self._write_file_bytes(event)  # type: ignore[arg-type]

    def end(self) -> None:
        """The whole body has arrived (never raises)."""
        self._ended = True
        if not self.accepting:
            return
        if self._parser is None:
            self._write_file_bytes(b"")
        else:
            try:
                self._parser.close()
            except MultipartError as e:
                self._refuse(400, f"Malformed multipart body: {e}")
                return
            if not self._file_seen:
                self._refuse(400, "The multipart body has no part named 'file'")
                return
        if self._upload is not None:
            self._upload.end()

    def check_authorization(self, authorization: Deferred[Any]) -> None:
        """Keep the bytes only if ``authorization`` succeeds; see ``authorization``."""

        def refused(failure: Failure) -> Failure:
            self.abort()
            return failure

        self.authorization = authorization.addErrback(refused)

    def lost(self) -> None:
        """The connection went away: discard the bytes."""
        self._refuse(400, "Connection lost during the upload")
        if self.authorization is not None:
            # Nobody will await it now; its failure is of no interest.
            self.authorization.addErrback(lambda _: None)

    def abort(self) -> None:
        """Discard the bytes (the handler decided not to keep them)."""
        self.accepting = False
        self._discard()

    async def discarded(self) -> None:
        """Wait until the bytes discarded so far are gone from the file store."""
        while self._discarding:
            await self._discarding.pop(0)

    def commit(self, file_id: str, md5: str, sha256: Optional[str] = None
               ) -> Deferred[StoredFile]:
        """
        Move the received bytes into the store under ``file_id`` once they match ``md5`` (and
        ``sha256``, when known); fails with UploadRefused if the body was refused or is not
        complete, or with the file store's ChecksumMismatch after discarding the bytes.
        """
        if self.refusal is not None:
            return fail(self.refusal)
        if not self._ended or self._upload is None:
            self._discard()
            return fail(UploadRefused(400, "The upload is incomplete"))
        upload, self._upload = self._upload, None
        self.accepting = False
        return upload.commit(file_id, expected_md5=md5, expected_sha256=sha256)

    def feed(self, content: object, chunk_size: int = 64 * 1024) -> None:
        """
        Read an already buffered body (a binary file object) through `write` and `end`, for
        requests that did not stream (a plain twisted.web site, or tests' StubTreq).
        """
        read = getattr(content, "read", None)
        if read is not None:
            while self.accepting and (chunk := read(chunk_size)):
                self.write(chunk)
        self.end()
