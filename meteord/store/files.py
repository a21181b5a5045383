"""
The on-disk file store: the bytes behind file records, under ``<root>/<aa>/<bb>/<file_id>``
(sharded by the first four hex characters of the id), with temporary files in ``<root>/tmp/``.

Every write goes to a temporary file, is hashed (md5 and sha256) as it is written, fsynced,
renamed into place and its directory fsynced, so a crash leaves either no file or the whole
file under the final name. Blocking work runs in a thread pool, never on the reactor thread.

Choices where the specification is silent:

- Uploads (``open_upload``) are hashed and written synchronously on the reactor thread through
  a 256 KiB write buffer, as twisted.web itself does with request bodies, unless the caller
  hands in the ``producer`` that delivers the chunks: without one nothing could slow the sender
  down, so nothing may be queued. A buffered write only copies into the page cache, but each
  chunk costs the reactor CPU time in proportion to its size (mostly hashing), and creating the
  temporary file waits on the file system. With a producer (`BackgroundUpload`), creating,
  hashing and writing run in the thread pool, one batch of chunks at a time per upload, so the
  reactor only queues chunks and several uploads hash at once; the producer is paused while
  more than `UPLOAD_BACKLOG` bytes wait, which bounds memory. The calls that wait on the disk
  (fsync, rename, directory fsync, unlink, reading a whole file) always run in the thread pool.
- A background upload's ``commit`` writes its last chunks, verifies, fsyncs and renames in one
  trip to the thread pool: a small file (one batch) costs that single trip in all. Each trip
  costs the reactor a thread wake-up and a result delivery, which for files of a few hundred
  KB is more than the work itself.
- A background upload asks the kernel to start writing its bytes to disk every
  `WRITEBACK_BYTES` (``posix_fadvise``), so the disk works while the rest arrives and the
  fsync at commit waits for the last few MiB, not the whole file. Measured with 20 files of
  50 MB at once: 184-198 MB/s against 163-175 without.
- A new shard directory is made durable by fsyncing its parent after the rename into it rather
  than before, so on a journalling file system one commit usually covers the new directories
  and the rename; the file counts as stored only once every fsync has returned, as before.
- Each temporary file holds an exclusive ``flock`` while it is written, and ``start`` removes
  only the leftovers it can lock, so a second process sharing the store never loses a file it
  is still writing.
- ``commit`` with an id that already has a file discards the upload without checking it and
  answers with the stored file, re-hashed; ``add_from_path`` with such an id fails with
  ``FileAlreadyStored`` and leaves the source untouched, since its bytes may differ.
- ``commit`` always ends the upload: on any failure its temporary file is deleted.
- ``remove`` does not fsync directories: a removal undone by a crash leaves an orphan, which
  fsck finds.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO, Union

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from meteord.interfaces import IFileStore
from meteord.store._shield import shielded

_FILE_ID = re.compile(r"[0-9a-f]{32}")
_SHARD = re.compile(r"[0-9a-f]{2}")
# Bytes read at a time to copy or hash a file in a worker thread. Small, because the
# allocator keeps what each thread frees for that thread: with 1 MiB reads, registering 1 GB
# of files left a node 20 MiB larger.
_READ_CHUNK = 64 * 1024
_UPLOAD_BUFFER = 256 * 1024
UPLOAD_BACKLOG = 2 * 1024 * 1024
_UPLOAD_BATCH = 1024 * 1024
# A background upload asks the kernel to start writing its bytes to disk each time this many
# more are written, so that the disk works while the rest arrives rather than all at the fsync.
WRITEBACK_BYTES = 8 * 1024 * 1024

RunInThread = Callable[..., Deferred]


class FileStoreError(Exception):
    """
    Base of the errors raised by the file store.
    """


class InvalidFileId(FileStoreError, ValueError):
    """
    A file id is not 32 lowercase hex characters.
    """


class FileNotStored(FileStoreError):
    """
    No file is stored under the id asked for.
    """


class FileAlreadyStored(FileStoreError):
    """
    A file is already stored under the id given for new bytes.
    """


class UploadClosed(FileStoreError):
    """
    The upload was already committed or aborted.
    """


class UploadTooLarge(FileStoreError):
    """
    A chunk would take an upload beyond its size limit.
    """


@attrs.define(auto_exc=True)
class ChecksumMismatch(FileStoreError):
    """
    Received bytes do not have the digest announced for them; they were discarded.
    """

    file_id: str
    algorithm: str
    expected: str
    actual: str

    def __str__(self) -> str:
        return (
            f"{self.algorithm} of file {self.file_id} is {self.actual}, "
            f"expected {self.expected}"
        )


@attrs.frozen
class StoredFile:
    """
    A file in the store: its id, its size in bytes, and its md5 and sha256 as lowercase hex.
    """

    file_id: str
    size: int
    md5: str
    sha256: str


def validate_file_id(file_id: object) -> str:
    """
    Return C{file_id} if it is 32 lowercase hex characters, so it cannot name anything
    outside the store; raise L{InvalidFileId} otherwise.
    """
    if not isinstance(file_id, str) or _FILE_ID.fullmatch(file_id) is None:
        raise InvalidFileId(f"not a file id: {file_id!r}")
    return file_id


class _Digests:
    """
    The md5, sha256 and size of bytes seen so far.
    """

    def __init__(self) -> None:
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha256 = hashlib.sha256()
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self._md5.update(chunk)
        self._sha256.update(chunk)
        self.size += len(chunk)

    def stored_file(self, file_id: str) -> StoredFile:
        return StoredFile(
            file_id=file_id,
            size=self.size,
            md5=self._md5.hexdigest(),
            sha256=self._sha256.hexdigest(),
        )


def _fsync_dir(path: str) -> None:
    """
    Make the entries of a directory (a rename, a new file) durable.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync(out: BinaryIO) -> None:
    """
    Make the bytes written to C{out} durable.
    """
    out.flush()
    os.fsync(out.fileno())


def start_writeback(fd: int, offset: int, length: int) -> None:
    """
    Ask the kernel to start writing a range of a file to disk, without waiting for it. On
    Linux, ``POSIX_FADV_DONTNEED`` starts the writeback of the range's dirty pages (and drops
    the clean ones, which an upload does not read again); elsewhere, or if refused, this does
    nothing and the final fsync writes everything, as before.
    """
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:
        return
    try:
        advise(fd, offset, length, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass


def _existing(paths: list[tuple[str, str]]) -> frozenset[str]:
    return frozenset(file_id for file_id, path in paths if os.path.isfile(path))


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _hash_open_file(f: BinaryIO, file_id: str) -> StoredFile:
    digests = _Digests()
    while chunk := f.read(_READ_CHUNK):
        digests.update(chunk)
    return digests.stored_file(file_id)


def _read_into(f: BinaryIO, buffer: bytearray, digest: Any) -> int:
    view = memoryview(buffer)
    size = f.readinto(view)
    if digest is not None:
        digest.update(view[:size])
    return size


def _hash_path(path: str, file_id: str) -> StoredFile:
    try:
        with open(path, "rb") as f:
            return _hash_open_file(f, file_id)
    except FileNotFoundError:
        raise FileNotStored(file_id) from None


def _check_digest(file_id: str, algorithm: str, expected: str | None, actual: str) -> None:
    if expected is not None and expected.lower() != actual:
        raise ChecksumMismatch(file_id, algorithm, expected, actual)


def _as_str(path: str | FilePath) -> str:
    return path.path if isinstance(path, FilePath) else os.fspath(path)


@implementer(IFileStore)
class FileStore:
    """
    Files on disk under C{root}; see the module docstring for the layout and guarantees.
    """

    _log = Logger()

    def __init__(
        self,
        root: str | FilePath,
        threads: ThreadPool | RunInThread | None = None,
        reactor: Any = None,
    ) -> None:
        """
        @param threads: where blocking work runs: a L{ThreadPool} (used through C{reactor}),
            or a callable C{run_in_thread(f, *args) -> Deferred}; by default the reactor's
            thread pool.
        @param reactor: the reactor delivering results from a L{ThreadPool}; by default the
            global one.
        """
        self._root = os.path.abspath(_as_str(root))
        self._tmp = os.path.join(self._root, "tmp")
        if threads is None or isinstance(threads, ThreadPool):
            if reactor is None:
                from twisted.internet import reactor
            pool = reactor.getThreadPool() if threads is None else threads
            self._run: RunInThread = lambda f, *a: deferToThreadPool(reactor, pool, f, *a)
        else:
            self._run = threads

    @property
    def root(self) -> FilePath:
        """
        The directory holding the store.
        """
        return FilePath(self._root)

    def path_for(self, file_id: str) -> FilePath:
        """
        The path of C{file_id} in the store; raises L{InvalidFileId} for anything but an id.
        """
        return FilePath(self._path(file_id))

    def _path(self, file_id: str) -> str:
        validate_file_id(file_id)
        return os.path.join(self._root, file_id[:2], file_id[2:4], file_id)

    def start(self) -> Deferred[int]:
        """
        Create the store's directories and remove the temporary files no writer holds.
        """
        d = self._run(self._start)
        d.addCallback(self._log_removed)
        return d

    def _log_removed(self, removed: int) -> int:
        if removed:
            self._log.info(
                "Removed {count} leftover temporary files from {path}",
                count=removed,
                path=self._tmp,
            )
        return removed

    def _start(self) -> int:
        os.makedirs(self._tmp, exist_ok=True)
        removed = 0
        with os.scandir(self._tmp) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False) and self._remove_if_unlocked(entry.path):
                    removed += 1
        return removed

    def _remove_if_unlocked(self, path: str) -> bool:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        try:
            _unlink_quietly(path)
        finally:
            os.close(fd)
        return True

    def _create_temporary(self, prefix: str) -> tuple[str, BinaryIO]:
        """
        Create and lock a new temporary file, returning its path and a buffered writer on it.
        """
        path = os.path.join(self._tmp, f"{prefix}-{secrets.token_hex(8)}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return path, os.fdopen(fd, "wb", buffering=_UPLOAD_BUFFER)
        except BaseException:
            os.close(fd)
            _unlink_quietly(path)
            raise

    def _place(self, current_path: str, file_id: str) -> str:
        """
        Rename a complete, fsynced file to its final name and make the rename durable.
        """
        first = os.path.join(self._root, file_id[:2])
        second = os.path.join(first, file_id[2:4])
        created = []
        for parent, directory in ((self._root, first), (first, second)):
            try:
                os.mkdir(directory)
            except FileExistsError:
                pass
            else:
                created.append(parent)
        final_path = os.path.join(second, file_id)
        os.rename(current_path, final_path)
        _fsync_dir(second)
        for parent in reversed(created):
            _fsync_dir(parent)
        return final_path

    def add_from_path(
        self, source_path: str | FilePath, file_id: str, move: bool = False
    ) -> Deferred[StoredFile]:
        """
        Store a copy of the file at C{source_path} under C{file_id}; with C{move} the source
        is renamed into place when it is on the store's file system, and removed otherwise.
        """
        try:
            final_path = self._path(file_id)
        except InvalidFileId:
            return fail()
        return self._run(self._add, _as_str(source_path), file_id, final_path, move)

    def _add(self, source: str, file_id: str, final_path: str, move: bool) -> StoredFile:
        if os.path.lexists(final_path):
            raise FileAlreadyStored(file_id)
        if move and os.stat(source).st_dev == os.stat(self._tmp).st_dev:
            try:
                return self._move(source, file_id)
            except OSError as e:
                # Bind mounts share a device number yet refuse renames between them.
                if e.errno != errno.EXDEV:
                    raise
        stored = self._copy(source, file_id)
        if move:
            os.unlink(source)
            _fsync_dir(os.path.dirname(os.path.abspath(source)))
        return stored

    def _move(self, source: str, file_id: str) -> StoredFile:
        with open(source, "rb") as f:
            stored = _hash_open_file(f, file_id)
            # The writer of the source may not have synced it; it must be durable before the
            # database row that points at it.
            os.fsync(f.fileno())
        self._place(source, file_id)
        _fsync_dir(os.path.dirname(os.path.abspath(source)))
        return stored

    def _copy(self, source: str, file_id: str) -> StoredFile:
        with open(source, "rb") as src:
            tmp_path, out = self._create_temporary("add")
            try:
                with out:
                    digests = _Digests()
                    while chunk := src.read(_READ_CHUNK):
                        digests.update(chunk)
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                    self._place(tmp_path, file_id)
            except BaseException:
                _unlink_quietly(tmp_path)
                raise
        return digests.stored_file(file_id)

    def open_upload(
        self, max_bytes: int | None = None, producer: IPushProducer | None = None
    ) -> Union[Upload, BackgroundUpload]:
        """
        Start receiving a file in chunks; see L{Upload}. With C{max_bytes}, a chunk that
        would take the upload beyond it raises L{UploadTooLarge}. With C{producer} (what
        delivers the chunks, e.g. the HTTP connection), see L{BackgroundUpload}.
        """
        if producer is not None:
            return BackgroundUpload(self, max_bytes, producer)
        tmp_path, out = self._create_temporary("upload")
        return Upload(self, tmp_path, out, max_bytes)

    def _finish_upload(
        self,
        out: BinaryIO,
        tmp_path: str,
        received: StoredFile,
        expected_md5: str | None,
        expected_sha256: str | None,
    ) -> StoredFile:
        file_id = received.file_id
        try:
            final_path = self._path(file_id)
            if os.path.lexists(final_path):
                out.close()
                _unlink_quietly(tmp_path)
                return _hash_path(final_path, file_id)
            _check_digest(file_id, "md5", expected_md5, received.md5)
            _check_digest(file_id, "sha256", expected_sha256, received.sha256)
            _sync(out)
            # Kept open until renamed, so its lock keeps start() elsewhere from removing it.
            self._place(tmp_path, file_id)
            out.close()
            return received
        except BaseException:
            self._discard(out, tmp_path)
            raise

    def _discard(self, out: BinaryIO, tmp_path: str) -> None:
        try:
            out.close()
        except OSError:
            pass
        _unlink_quietly(tmp_path)

    def remove(self, file_ids: Iterable[str]) -> Deferred[list[str]]:
        """
        Remove the files with these ids (once the database no longer points at them).
        """
        try:
            paths = [(file_id, self._path(file_id)) for file_id in file_ids]
        except InvalidFileId:
            return fail()
        return self._run(self._remove, paths)

    def _remove(self, paths: list[tuple[str, str]]) -> list[str]:
        removed = []
        for file_id, path in paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            removed.append(file_id)
        return removed

    def move_out(self, file_id: str, path: str | FilePath) -> Deferred[None]:
        """
        Move the file stored under C{file_id} to C{path} (an absent path): a file moved in
        for a record that could not be made goes back where it came from.
        """
        try:
            stored = self._path(file_id)
        except InvalidFileId:
            return fail()
        return self._run(shutil.move, stored, _as_str(path))

    def exists(self, file_id: str) -> Deferred[bool]:
        """
        Whether a file is stored under C{file_id}.
        """
        try:
            path = self._path(file_id)
        except InvalidFileId:
            return fail()
        return self._run(os.path.isfile, path)

    def existing(self, file_ids: Iterable[str]) -> Deferred[frozenset[str]]:
        """
        Which of C{file_ids} have a file stored: what L{exists} answers, for all of them in
        one trip to the thread pool.
        """
        try:
            paths = [(file_id, self._path(file_id)) for file_id in file_ids]
        except InvalidFileId:
            return fail()
        return self._run(_existing, paths)

    def open(self, file_id: str) -> Deferred[BinaryIO]:
        """
        Open the file stored under C{file_id} for reading; the caller closes it.
        """
        try:
            path = self._path(file_id)
        except InvalidFileId:
            return fail()
        return self._run(self._open_for_reading, path, file_id)

    def read(self, f: BinaryIO, size: int, digest: Any = None) -> Deferred[bytes]:
        """
        The next C{size} bytes (fewer at the end) of a file that C{open} or C{open_and_read}
        returned, read in a thread; C{digest} (a C{hashlib} object), when given, is updated
        with them there. Their memory is allocated on the calling thread: the allocator keeps
        memory freed in a worker thread for that thread, so bytes held while they are sent,
        as an upload does, would leave every pool thread holding its own share.
        """
        buffer = bytearray(size)
        return self._run(_read_into, f, buffer, digest).addCallback(
            lambda n: bytes(memoryview(buffer)[:n]))

    def open_and_read(
        self, file_id: str, size: int, digest: Any = None
    ) -> Deferred[tuple[BinaryIO, int, bytes]]:
        """
        L{open} and the first L{read} of C{size} bytes in one trip to a thread: the open file,
        its size on disk and those bytes. The caller closes the file.
        """
        try:
            path = self._path(file_id)
        except InvalidFileId:
            return fail()
        buffer = bytearray(size)
        return self._run(self._open_and_read_into, path, file_id, buffer, digest).addCallback(
            lambda opened: (opened[0], opened[1], bytes(memoryview(buffer)[: opened[2]])))

    def _open_and_read_into(
        self, path: str, file_id: str, buffer: bytearray, digest: Any
    ) -> tuple[BinaryIO, int, int]:
        f = self._open_for_reading(path, file_id)
        try:
            return f, os.fstat(f.fileno()).st_size, _read_into(f, buffer, digest)
        except BaseException:
            f.close()
            raise

    def _open_for_reading(self, path: str, file_id: str) -> BinaryIO:
        try:
            return open(path, "rb")
        except FileNotFoundError:
            raise FileNotStored(file_id) from None

    def rehash(self, file_id: str) -> Deferred[StoredFile]:
        """
        Read the file stored under C{file_id} again and return its size and digests.
        """
        try:
            path = self._path(file_id)
        except InvalidFileId:
            return fail()
        return self._run(_hash_path, path, file_id)

    def iter_file_ids(self) -> Iterator[str]:
        """
        Yield, in order, the id of every file in its right place in the store; this blocks.
        """
        for first in self._subdirectories(self._root, _SHARD):
            for second in self._subdirectories(os.path.join(self._root, first), _SHARD):
                prefix = first + second
                directory = os.path.join(self._root, first, second)
                with os.scandir(directory) as entries:
                    names = sorted(
                        entry.name
                        for entry in entries
                        if entry.is_file(follow_symlinks=False)
                        and _FILE_ID.fullmatch(entry.name)
                        and entry.name.startswith(prefix)
                    )
                yield from names

    def _subdirectories(self, directory: str, pattern: re.Pattern[str]) -> list[str]:
        try:
            with os.scandir(directory) as entries:
                return sorted(
                    entry.name
                    for entry in entries
                    if entry.is_dir(follow_symlinks=False) and pattern.fullmatch(entry.name)
                )
        except FileNotFoundError:
            return []


class Upload:
    """
    A file being received in chunks on the reactor thread: each chunk is hashed and written to
    a temporary file at once; L{commit} checks the digests and moves the file into place.
    """

    def __init__(
        self, store: FileStore, tmp_path: str, out: BinaryIO, max_bytes: int | None
    ) -> None:
        self._store = store
        self._tmp_path = tmp_path
        self._out = out
        self._max_bytes = max_bytes
        self._digests = _Digests()
        self._active = True

    @property
    def size(self) -> int:
        """
        The number of bytes written so far.
        """
        return self._digests.size

    def write(self, chunk: bytes) -> None:
        """
        Hash and write one chunk. If this raises, the upload should be aborted.
        """
        if not self._active:
            raise UploadClosed()
        if self._max_bytes is not None and self.size + len(chunk) > self._max_bytes:
            raise UploadTooLarge(f"upload exceeds {self._max_bytes} bytes")
        self._out.write(chunk)
        self._digests.update(chunk)

    def end(self) -> None:
        """
        No more bytes will come. Nothing to do here: L{commit} syncs the bytes.
        """

    def abort(self) -> Deferred[None]:
        """
        Discard the upload and its temporary file; does nothing once the upload has been
        committed or aborted.
        """
        if not self._active:
            return succeed(None)
        self._active = False
        return self._store._run(self._store._discard, self._out, self._tmp_path)

    def commit(
        self,
        file_id: str,
        expected_md5: str | None = None,
        expected_sha256: str | None = None,
    ) -> Deferred[StoredFile]:
        """
        Store the received bytes under C{file_id}, after checking any expected digest (hex, in
        either case). Fails with L{ChecksumMismatch} after discarding bytes that do not match;
        answers with the stored file, discarding these bytes, if C{file_id} already has one.
        The upload ends either way.
        """
        if not self._active:
            return fail(UploadClosed())
        self._active = False
        return self._store._run(
            self._store._finish_upload,
            self._out,
            self._tmp_path,
            self._digests.stored_file(file_id),
            expected_md5,
            expected_sha256,
        )


class BackgroundUpload:
    """
    A file being received in chunks on the reactor thread whose temporary file is created,
    hashed and written in the store's thread pool: L{write} only queues a chunk, and once a
    batch of at least 1 MiB is queued it goes to a thread, one batch at a time, in order (so a
    small file costs a single trip to the thread pool, at L{end}). While more than
    L{UPLOAD_BACKLOG} bytes are queued or being written, C{producer} is paused; it is resumed
    once they are down to half of that, and whenever the upload ends.

    L{commit} writes what is still queued, checks, fsyncs and places the file in one go. A
    failure to create or write the temporary file is raised by the next L{write} (and by
    L{commit}); the bytes queued then are dropped.
    """

    def __init__(
        self, store: FileStore, max_bytes: int | None, producer: IPushProducer
    ) -> None:
        self._store = store
        self._max_bytes = max_bytes
        self._producer = producer
        self._paused = False
        self._queue: list[bytes] = []
        self._queued = 0
        self._pending = 0
        self._size = 0
        self._writing = False
        self._idle: list[Deferred[None]] = []
        self._error: BaseException | None = None
        self._active = True
        # Touched only by the thread running the current batch, one batch at a time.
        self._tmp_path: str | None = None
        self._out: BinaryIO | None = None
        self._digests = _Digests()
        self._written_back = 0

    @property
    def size(self) -> int:
        """
        The number of bytes received so far (written or still queued).
        """
        return self._size

    def write(self, chunk: bytes) -> None:
        """
        Queue one chunk to be hashed and written. If this raises, the upload should be
        aborted.
        """
        if not self._active:
            raise UploadClosed()
        if self._error is not None:
            raise self._error
        if self._max_bytes is not None and self._size + len(chunk) > self._max_bytes:
            raise UploadTooLarge(f"upload exceeds {self._max_bytes} bytes")
        self._size += len(chunk)
        if chunk:
            self._queue.append(chunk)
            self._queued += len(chunk)
            self._pending += len(chunk)
        if self._queued >= _UPLOAD_BATCH:
            self._next_batch()
        if self._pending > UPLOAD_BACKLOG and not self._paused:
            self._paused = True
            self._producer.pauseProducing()

    def _next_batch(self) -> None:
        if self._writing:
            return
        if self._error is not None or not self._active or (
                not self._queue and self._out is not None):
            self._wake_idle()
            return
        batch, self._queue, self._queued = self._queue, [], 0
        self._writing = True
        self._store._run(self._write_batch, batch).addBoth(self._batch_written, batch)

    def _write_batch(self, batch: list[bytes]) -> None:
        if self._out is None:
            self._tmp_path, self._out = self._store._create_temporary("upload")
        for chunk in batch:
            self._out.write(chunk)
            self._digests.update(chunk)
        written = self._digests.size
        if written - self._written_back >= WRITEBACK_BYTES:
            self._out.flush()
            start_writeback(self._out.fileno(), self._written_back, written - self._written_back)
            self._written_back = written

    def _batch_written(self, result: object, batch: list[bytes]) -> None:
        self._writing = False
        self._pending -= sum(len(chunk) for chunk in batch)
        if isinstance(result, Failure):
            if self._error is None:
                self._error = result.value
            self._queue, self._queued, self._pending = [], 0, 0
            self._wake_idle()
        if self._paused and (self._pending <= UPLOAD_BACKLOG // 2 or self._error is not None):
            self._resume()
        if self._idle or self._queued >= _UPLOAD_BATCH:
            self._next_batch()

    def _resume(self) -> None:
        if self._paused:
            self._paused = False
            self._producer.resumeProducing()

    def _wake_idle(self) -> None:
        idle, self._idle = self._idle, []
        for d in idle:
            d.callback(None)

    def _written(self) -> Deferred[None]:
        """
        Fires once every queued chunk is written (or writing failed), the file created.
        """
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        self._next_batch()
        return d

    def end(self) -> None:
        """
        No more bytes will come: the connection is no longer paused (L{commit} writes the rest).
        """
        if self._active:
            self._resume()

    def _write_last(self, batch: list[bytes]) -> None:
        """Write the last batch; on failure remove the temporary file, then raise."""
        try:
            self._write_batch(batch)
        except BaseException:
            if self._out is not None:
                assert self._tmp_path is not None
                self._store._discard(self._out, self._tmp_path)
            raise

    def _finish(self, batch: list[bytes], file_id: str, expected_md5: str | None,
                expected_sha256: str | None) -> StoredFile:
        self._write_last(batch)
        assert self._out is not None and self._tmp_path is not None
        return self._store._finish_upload(self._out, self._tmp_path,
                                          self._digests.stored_file(file_id), expected_md5,
                                          expected_sha256)

    def abort(self) -> Deferred[None]:
        """
        Discard the upload and its temporary file; does nothing once the upload has been
        committed or aborted.
        """
        if not self._active:
            return succeed(None)
        self._active = False
        self._queue, self._queued = [], 0
        self._resume()
        return shielded(Deferred.fromCoroutine(self._abort()))

    async def _abort(self) -> None:
        await self._batch_done()
        if self._out is not None:
            assert self._tmp_path is not None
            await self._store._run(self._store._discard, self._out, self._tmp_path)

    async def _batch_done(self) -> None:
        """Wait until no batch is being written."""
        if self._writing:
            idle: Deferred[None] = Deferred()
            self._idle.append(idle)
            await idle

    def commit(
        self,
        file_id: str,
        expected_md5: str | None = None,
        expected_sha256: str | None = None,
    ) -> Deferred[StoredFile]:
        """
        As L{Upload.commit}, once every queued chunk is written.
        """
        if not self._active:
            return fail(UploadClosed())
        self._active = False
        self._resume()
        # A cancelled caller (its client gone) must not stop the commit half-way: the
        # commit finishes, or fails and removes the temporary file, on its own.
        return shielded(Deferred.fromCoroutine(
            self._commit(file_id, expected_md5, expected_sha256)))

    async def _commit(
        self, file_id: str, expected_md5: str | None, expected_sha256: str | None
    ) -> StoredFile:
        await self._batch_done()
        if self._error is not None:
            if self._out is not None:
                assert self._tmp_path is not None
                await self._store._run(self._store._discard, self._out, self._tmp_path)
            raise self._error
        batch, self._queue, self._queued = self._queue, [], 0
        return await self._store._run(self._finish, batch, file_id, expected_md5,
                                      expected_sha256)
