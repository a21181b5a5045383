"""
Tests for meteord.store.files: layout, hashing, crash safety, uploads and the threads used.
"""

import errno
import hashlib
import os
import threading

from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks
from twisted.internet.threads import deferToThreadPool
from twisted.python.filepath import FilePath
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from meteord.interfaces import IFileStore
from meteord.store import files
from meteord.store.files import (
    ChecksumMismatch,
    FileAlreadyStored,
    FileNotStored,
    FileStore,
    UPLOAD_BACKLOG,
    InvalidFileId,
    StoredFile,
    UploadClosed,
    UploadTooLarge,
)

FILE_ID = "0123456789abcdef0123456789abcdef"
OTHER_ID = "fedcba9876543210fedcba9876543210"
CONTENT = os.urandom(3 * 1024 * 1024 + 17)

INVALID_IDS = [
    "../../etc",
    "../../etc/passwd",
    "0123456789ABCDEF0123456789ABCDEF",
    "0123456789abcdef0123456789abcde",
    "0123456789abcdef0123456789abcdef0",
    "0123456789abcdef0123456789abcdef\n",
    "01/3456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdeg",
    "",
    b"0123456789abcdef0123456789abcdef",
    None,
]


def expected(file_id, content):
    """
    The StoredFile that the bytes C{content} should give, hashed with hashlib directly.
    """
    return StoredFile(
        file_id=file_id,
        size=len(content),
        md5=hashlib.md5(content).hexdigest(),
        sha256=hashlib.sha256(content).hexdigest(),
    )


class _RecordingHash:
    """
    A hash object that notes the thread of every update.
    """

    def __init__(self, wrapped, threads):
        self._wrapped = wrapped
        self._threads = threads

    def update(self, data):
        self._threads.append(threading.current_thread())
        self._wrapped.update(data)

    def hexdigest(self):
        return self._wrapped.hexdigest()


class _RecordingHashlib:
    """
    Stands in for the hashlib module inside meteord.store.files.
    """

    def __init__(self, threads):
        self._threads = threads

    def md5(self, **kwargs):
        return _RecordingHash(hashlib.md5(**kwargs), self._threads)

    def sha256(self):
        return _RecordingHash(hashlib.sha256(), self._threads)


class FileStoreTests(TestCase):
    """
    A FileStore on a real temporary directory, its blocking work in a thread pool of the test.
    """

    def setUp(self):
        self.pool = ThreadPool(minthreads=1, maxthreads=2, name="test-files")
        self.pool.start()
        self.addCleanup(self.pool.stop)
        self.worker_threads = []
        self.root = FilePath(self.mktemp())
        self.store = FileStore(self.root, self.run_in_thread)
        return self.store.start()

    def run_in_thread(self, f, *args):
        """
        Run C{f} in the test's pool, noting which thread ran it.
        """

        def noted():
            self.worker_threads.append(threading.current_thread())
            return f(*args)

        return deferToThreadPool(reactor, self.pool, noted)

    def make_source(self, content=CONTENT, name="source"):
        source = FilePath(self.mktemp())
        source.makedirs()
        path = source.child(name)
        path.setContent(content)
        return path

    def tmp_entries(self):
        return self.root.child("tmp").listdir()

    @inlineCallbacks
    def upload(self, content, file_id=FILE_ID, chunk_size=65536, **expected_digests):
        upload = self.store.open_upload()
        for start in range(0, len(content), chunk_size):
            upload.write(content[start : start + chunk_size])
        stored = yield upload.commit(file_id, **expected_digests)
        return stored

    def test_provides_interface(self):
        self.assertTrue(verifyObject(IFileStore, self.store))

    def test_path_is_sharded_by_first_four_hex_chars(self):
        self.assertEqual(
            self.store.path_for(FILE_ID),
            self.root.child("01").child("23").child(FILE_ID),
        )

    def test_start_creates_root_and_tmp(self):
        self.assertTrue(self.root.isdir())
        self.assertEqual(self.tmp_entries(), [])

    def test_path_for_rejects_invalid_ids(self):
        for file_id in INVALID_IDS:
            self.assertRaises(InvalidFileId, self.store.path_for, file_id)

    @inlineCallbacks
    def test_operations_reject_invalid_ids(self):
        source = self.make_source()
        for file_id in INVALID_IDS:
            yield self.assertFailure(self.store.add_from_path(source, file_id), InvalidFileId)
            yield self.assertFailure(self.store.exists(file_id), InvalidFileId)
            yield self.assertFailure(self.store.open(file_id), InvalidFileId)
            yield self.assertFailure(self.store.open_and_read(file_id, 10), InvalidFileId)
            yield self.assertFailure(self.store.rehash(file_id), InvalidFileId)
            yield self.assertFailure(self.store.remove([FILE_ID, file_id]), InvalidFileId)
            upload = self.store.open_upload()
            upload.write(b"x")
            yield self.assertFailure(upload.commit(file_id), InvalidFileId)
        self.assertEqual(self.tmp_entries(), [])
        self.assertEqual(list(self.store.iter_file_ids()), [])
        self.assertTrue(source.exists())

    @inlineCallbacks
    def test_add_from_path_copies_and_hashes(self):
        source = self.make_source()
        stored = yield self.store.add_from_path(source, FILE_ID)
        self.assertEqual(stored, expected(FILE_ID, CONTENT))
        self.assertEqual(self.store.path_for(FILE_ID).getContent(), CONTENT)
        self.assertEqual(source.getContent(), CONTENT)
        self.assertEqual(self.tmp_entries(), [])

    @inlineCallbacks
    def test_existing_names_the_stored_files(self):
        other = "fedcba9876543210fedcba9876543210"
        self.assertEqual((yield self.store.existing([FILE_ID, other])), frozenset())
        yield self.store.add_from_path(self.make_source(), FILE_ID)
        self.assertEqual((yield self.store.existing([other, FILE_ID, FILE_ID])),
                         frozenset([FILE_ID]))
        self.assertEqual((yield self.store.existing([])), frozenset())

    @inlineCallbacks
    def test_existing_rejects_invalid_ids(self):
        yield self.store.add_from_path(self.make_source(), FILE_ID)
        for file_id in INVALID_IDS:
            yield self.assertFailure(self.store.existing([FILE_ID, file_id]), InvalidFileId)

    @inlineCallbacks
    def test_add_from_path_accepts_str(self):
        source = self.make_source()
        stored = yield self.store.add_from_path(source.path, FILE_ID, move=True)
        self.assertEqual(stored, expected(FILE_ID, CONTENT))

    @inlineCallbacks
    def test_add_from_path_move_renames_on_same_file_system(self):
        source = self.make_source()
        inode = os.stat(source.path).st_ino
        stored = yield self.store.add_from_path(source, FILE_ID, move=True)
        self.assertEqual(stored, expected(FILE_ID, CONTENT))
        self.assertFalse(source.exists())
        final = self.store.path_for(FILE_ID)
        self.assertEqual(os.stat(final.path).st_ino, inode)
        self.assertEqual(final.getContent(), CONTENT)

    @inlineCallbacks
    def test_add_from_path_move_copies_when_rename_crosses_devices(self):
        source = self.make_source()
        real_rename = os.rename

        def rename(src, dst):
            if src == source.path:
                raise OSError(errno.EXDEV, "Invalid cross-device link")
            real_rename(src, dst)

        self.patch(os, "rename", rename)
        stored = yield self.store.add_from_path(source, FILE_ID, move=True)
        self.assertEqual(stored, expected(FILE_ID, CONTENT))
        self.assertFalse(source.exists())
        self.assertEqual(self.store.path_for(FILE_ID).getContent(), CONTENT)
        self.assertEqual(self.tmp_entries(), [])

    @inlineCallbacks
    def test_add_from_path_refuses_an_id_already_stored(self):
        yield self.store.add_from_path(self.make_source(b"first"), FILE_ID)
        source = self.make_source(b"second")
        yield self.assertFailure(
            self.store.add_from_path(source, FILE_ID, move=True), FileAlreadyStored
        )
        self.assertEqual(source.getContent(), b"second")
        self.assertEqual(self.store.path_for(FILE_ID).getContent(), b"first")

    @inlineCallbacks
    def test_add_from_path_missing_source_fails_and_leaves_nothing(self):
        missing = FilePath(self.mktemp())
        yield self.assertFailure(self.store.add_from_path(missing, FILE_ID), FileNotFoundError)
        self.assertFalse(self.store.path_for(FILE_ID).exists())
        self.assertEqual(self.tmp_entries(), [])

    @inlineCallbacks
    def test_empty_file(self):
        stored = yield self.store.add_from_path(self.make_source(b""), FILE_ID)
        self.assertEqual(stored, expected(FILE_ID, b""))
        uploaded = yield self.upload(b"", OTHER_ID)
        self.assertEqual(uploaded, expected(OTHER_ID, b""))

    @inlineCallbacks
    def test_start_removes_leftover_temporary_files(self):
        tmp = self.root.child("tmp")
        tmp.child("upload-0011223344556677").setContent(b"half a file")
        tmp.child("add-8899aabbccddeeff").setContent(b"")
        removed = yield self.store.start()
        self.assertEqual(removed, 2)
        self.assertEqual(self.tmp_entries(), [])
        self.assertEqual(list(self.store.iter_file_ids()), [])

    @inlineCallbacks
    def test_start_keeps_a_temporary_file_still_being_written(self):
        upload = self.store.open_upload()
        upload.write(b"still arriving")
        removed = yield self.store.start()
        self.assertEqual(removed, 0)
        self.assertEqual(len(self.tmp_entries()), 1)
        upload.write(b" and done")
        stored = yield upload.commit(FILE_ID)
        self.assertEqual(stored, expected(FILE_ID, b"still arriving and done"))

    @inlineCallbacks
    def test_failed_fsync_of_a_copy_leaves_nothing(self):
        def fsync(fd):
            raise OSError(errno.EIO, "Input/output error")

        self.patch(os, "fsync", fsync)
        source = self.make_source()
        yield self.assertFailure(self.store.add_from_path(source, FILE_ID), OSError)
        self.assertFalse(self.store.path_for(FILE_ID).exists())
        self.assertEqual(self.tmp_entries(), [])
        self.assertEqual(source.getContent(), CONTENT)

    @inlineCallbacks
    def test_failed_fsync_of_an_upload_leaves_nothing(self):
        def fsync(fd):
            raise OSError(errno.EIO, "Input/output error")

        self.patch(os, "fsync", fsync)
        yield self.assertFailure(self.upload(CONTENT), OSError)
        self.assertFalse(self.store.path_for(FILE_ID).exists())
        self.assertEqual(self.tmp_entries(), [])

    @inlineCallbacks
    def test_failed_rename_leaves_nothing(self):
        self.root.child("01").setContent(b"not a directory")
        yield self.assertFailure(self.store.add_from_path(self.make_source(), FILE_ID), OSError)
        yield self.assertFailure(self.upload(CONTENT), OSError)
        self.assertEqual(self.tmp_entries(), [])
        self.assertEqual(list(self.store.iter_file_ids()), [])

    @inlineCallbacks
    def test_upload_round_trip(self):
        want = expected(FILE_ID, CONTENT)
        upload = self.store.open_upload()
        for start in range(0, len(CONTENT), 10000):
            upload.write(CONTENT[start : start + 10000])
        self.assertEqual(upload.size, len(CONTENT))
        stored = yield upload.commit(
            FILE_ID, expected_md5=want.md5.upper(), expected_sha256=want.sha256
        )
        self.assertEqual(stored, want)
        opened = yield self.store.open(FILE_ID)
        with opened:
            self.assertEqual(opened.read(), CONTENT)
        self.assertEqual(self.tmp_entries(), [])

    @inlineCallbacks
    def test_upload_md5_mismatch_discards_the_bytes(self):
        wrong = hashlib.md5(b"other bytes").hexdigest()
        error = yield self.assertFailure(
            self.upload(CONTENT, expected_md5=wrong), ChecksumMismatch
        )
        self.assertEqual(
            (error.file_id, error.algorithm, error.expected, error.actual),
            (FILE_ID, "md5", wrong, hashlib.md5(CONTENT).hexdigest()),
        )
        self.assertIn(wrong, str(error))
        self.assertFalse(self.store.path_for(FILE_ID).exists())
        self.assertEqual(self.tmp_entries(), [])

    @inlineCallbacks
    def test_upload_sha256_mismatch_discards_the_bytes(self):
        error = yield self.assertFailure(
            self.upload(
                CONTENT,
                expected_md5=hashlib.md5(CONTENT).hexdigest(),
                expected_sha256="0" * 64,
            ),
            ChecksumMismatch,
        )
        self.assertEqual(error.algorithm, "sha256")
        self.assertFalse(self.store.path_for(FILE_ID).exists())
        self.assertEqual(self.tmp_entries(), [])

    @inlineCallbacks
    def test_commit_of_an_id_already_stored_returns_the_stored_file(self):
        first = yield self.upload(b"the original")
        again = yield self.upload(b"whatever came second", expected_md5="0" * 32)
        self.assertEqual(again, first)
        self.assertEqual(again, expected(FILE_ID, b"the original"))
        self.assertEqual(self.store.path_for(FILE_ID).getContent(), b"the original")
        self.assertEqual(self.tmp_entries(), [])

    @inlineCallbacks
    def test_abort_discards_and_ends_the_upload(self):
        upload = self.store.open_upload()
        upload.write(b"some bytes")
        yield upload.abort()
        self.assertEqual(self.tmp_entries(), [])
        self.assertRaises(UploadClosed, upload.write, b"more")
        yield self.assertFailure(upload.commit(FILE_ID), UploadClosed)
        yield upload.abort()
        self.assertFalse(self.store.path_for(FILE_ID).exists())

    @inlineCallbacks
    def test_commit_ends_the_upload(self):
        upload = self.store.open_upload()
        upload.write(b"bytes")
        yield upload.commit(FILE_ID)
        self.assertRaises(UploadClosed, upload.write, b"more")
        yield self.assertFailure(upload.commit(OTHER_ID), UploadClosed)
        yield upload.abort()
        self.assertEqual(self.store.path_for(FILE_ID).getContent(), b"bytes")

    @inlineCallbacks
    def test_upload_size_limit(self):
        upload = self.store.open_upload(max_bytes=10)
        upload.write(b"0123456789")
        self.assertRaises(UploadTooLarge, upload.write, b"a")
        self.assertEqual(upload.size, 10)
        yield upload.abort()
        self.assertEqual(self.tmp_entries(), [])

    @inlineCallbacks
    def test_remove(self):
        yield self.upload(b"one", FILE_ID)
        yield self.upload(b"two", OTHER_ID)
        absent = "ab" * 16
        removed = yield self.store.remove([FILE_ID, absent])
        self.assertEqual(removed, [FILE_ID])
        self.assertFalse((yield self.store.exists(FILE_ID)))
        self.assertTrue((yield self.store.exists(OTHER_ID)))
        self.assertEqual(list(self.store.iter_file_ids()), [OTHER_ID])

    @inlineCallbacks
    def test_read_in_chunks_off_the_reactor_thread_with_a_digest(self):
        yield self.upload(CONTENT)
        f = yield self.store.open(FILE_ID)
        self.worker_threads.clear()
        digest = hashlib.md5()
        chunks = []
        try:
            while True:
                chunk = yield self.store.read(f, 1000, digest)
                self.assertIs(type(chunk), bytes)  # what a transport takes
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            f.close()
        self.assertEqual(b"".join(chunks), CONTENT)
        self.assertEqual(len(chunks[0]), 1000)
        self.assertEqual(digest.hexdigest(), hashlib.md5(CONTENT).hexdigest())
        self.assertEqual(len(self.worker_threads), len(chunks) + 1)
        self.assertNotIn(threading.current_thread(), self.worker_threads)

    @inlineCallbacks
    def test_open_and_read_takes_one_trip_off_the_reactor_thread(self):
        yield self.upload(CONTENT)
        self.worker_threads.clear()
        digest = hashlib.md5()
        f, size, first = yield self.store.open_and_read(FILE_ID, 1000, digest)
        try:
            self.assertEqual((size, first), (len(CONTENT), CONTENT[:1000]))
            self.assertIs(type(first), bytes)
            self.assertEqual(digest.hexdigest(), hashlib.md5(CONTENT[:1000]).hexdigest())
            self.assertEqual((yield self.store.read(f, len(CONTENT))), CONTENT[1000:])
        finally:
            f.close()
        self.assertEqual(len(self.worker_threads), 2)
        self.assertNotIn(threading.current_thread(), self.worker_threads)

    @inlineCallbacks
    def test_open_and_rehash_of_a_missing_file(self):
        yield self.assertFailure(self.store.open(FILE_ID), FileNotStored)
        yield self.assertFailure(self.store.open_and_read(FILE_ID, 10), FileNotStored)
        yield self.assertFailure(self.store.rehash(FILE_ID), FileNotStored)

    @inlineCallbacks
    def test_rehash_sees_corruption(self):
        stored = yield self.upload(CONTENT)
        self.assertEqual((yield self.store.rehash(FILE_ID)), stored)
        corrupted = bytearray(CONTENT)
        corrupted[1000] ^= 0xFF
        self.store.path_for(FILE_ID).setContent(bytes(corrupted))
        self.assertEqual(
            (yield self.store.rehash(FILE_ID)), expected(FILE_ID, bytes(corrupted))
        )

    @inlineCallbacks
    def test_iter_file_ids_walks_only_well_placed_ids(self):
        ids = ["00" * 16, OTHER_ID, FILE_ID, "0123" + "f" * 28]
        for file_id in ids:
            yield self.upload(file_id.encode("ascii"), file_id)
        self.root.child("tmp").child("upload-0123").setContent(b"")
        shard = self.root.child("01").child("23")
        shard.child("ab" * 16).setContent(b"in the wrong shard")
        shard.child("README").setContent(b"")
        self.root.child("zz").makedirs()
        self.root.child("strays").setContent(b"")
        self.assertEqual(list(self.store.iter_file_ids()), sorted(ids))

    @inlineCallbacks
    def test_blocking_work_runs_off_the_reactor_thread(self):
        hash_threads = []
        fsync_threads = []
        real_fsync = os.fsync

        def fsync(fd):
            fsync_threads.append(threading.current_thread())
            real_fsync(fd)

        self.patch(files, "hashlib", _RecordingHashlib(hash_threads))
        self.patch(os, "fsync", fsync)
        yield self.store.add_from_path(self.make_source(), FILE_ID)
        yield self.store.add_from_path(self.make_source(), OTHER_ID, move=True)
        yield self.store.rehash(FILE_ID)
        commit_id = "ab" * 16
        upload = self.store.open_upload()
        upload.write(b"bytes")
        yield upload.commit(commit_id)
        yield self.store.remove([FILE_ID])

        reactor_thread = threading.current_thread()
        self.assertIs(reactor_thread, threading.main_thread())
        self.assertTrue(hash_threads)
        self.assertTrue(fsync_threads)
        # Upload chunks are hashed where they arrive, by design; the rest runs in the pool.
        off_reactor = [t for t in hash_threads if t is not reactor_thread]
        self.assertEqual(len(hash_threads) - len(off_reactor), 2)
        self.assertNotIn(reactor_thread, fsync_threads)
        self.assertNotIn(reactor_thread, self.worker_threads)
        self.assertEqual(len(self.worker_threads), 6)


class ThreadPoolInjectionTests(TestCase):
    """
    A FileStore given a ThreadPool rather than a callable.
    """

    @inlineCallbacks
    def test_uses_the_given_thread_pool(self):
        pool = ThreadPool(minthreads=1, maxthreads=1, name="injected")
        pool.start()
        self.addCleanup(pool.stop)
        store = FileStore(self.mktemp(), pool, reactor)
        yield store.start()
        seen = []
        real_hash_path = files._hash_path

        def hash_path(path, file_id):
            seen.append(threading.current_thread().name)
            return real_hash_path(path, file_id)

        self.patch(files, "_hash_path", hash_path)
        upload = store.open_upload()
        upload.write(b"abc")
        yield upload.commit(FILE_ID)
        stored = yield store.rehash(FILE_ID)
        self.assertEqual(stored, expected(FILE_ID, b"abc"))
        self.assertEqual(len(seen), 1)
        self.assertTrue(seen[0].startswith("PoolThread-injected-"), seen[0])


class _Producer:
    """Counts the pauses and resumes a background upload asks of its connection."""

    def __init__(self) -> None:
        self.paused = 0
        self.resumed = 0

    def pauseProducing(self) -> None:
        self.paused += 1

    def resumeProducing(self) -> None:
        self.resumed += 1

    def stopProducing(self) -> None:
        pass


BACKGROUND_ID = "0123" + "a" * 28


class BackgroundUploadTests(TestCase):
    """Uploads written and hashed in the thread pool, pausing the connection when behind."""

    def setUp(self):
        self.store = FileStore(self.mktemp(), reactor=reactor)
        return self.store.start()

    def temporary_files(self) -> list[str]:
        return os.listdir(os.path.join(self.store.root.path, "tmp"))

    @inlineCallbacks
    def test_round_trip_pauses_and_resumes(self):
        producer = _Producer()
        data = os.urandom(5 * UPLOAD_BACKLOG + 123)
        upload = self.store.open_upload(producer=producer)
        for i in range(0, len(data), 65536):
            upload.write(data[i:i + 65536])
        self.assertGreaterEqual(producer.paused, 1)
        upload.end()
        stored = yield upload.commit(BACKGROUND_ID, hashlib.md5(data).hexdigest(),
                                     hashlib.sha256(data).hexdigest())
        self.assertEqual(stored.size, len(data))
        self.assertEqual(producer.paused, producer.resumed)
        self.assertEqual(self.store.path_for(BACKGROUND_ID).getContent(), data)
        self.assertEqual(self.temporary_files(), [])

    @inlineCallbacks
    def test_empty_upload_without_end(self):
        upload = self.store.open_upload(producer=_Producer())
        stored = yield upload.commit(BACKGROUND_ID)
        self.assertEqual(stored.size, 0)
        self.assertEqual(self.store.path_for(BACKGROUND_ID).getContent(), b"")
        self.assertEqual(self.temporary_files(), [])

    @inlineCallbacks
    def test_mismatch_leaves_nothing(self):
        upload = self.store.open_upload(producer=_Producer())
        upload.write(b"abc")
        upload.end()
        yield self.assertFailure(upload.commit(BACKGROUND_ID, "0" * 32), ChecksumMismatch)
        self.assertEqual(self.temporary_files(), [])
        self.assertFalse(self.store.path_for(BACKGROUND_ID).exists())

    def store_run_when_told(self):
        """A started store whose thread work runs only when ``run_all`` is called."""
        calls = []

        def run_when_told(f, *args):
            d = Deferred()
            calls.append((d, f, args))
            return d

        def run_all():
            while calls:
                d, f, args = calls.pop(0)
                try:
                    d.callback(f(*args))
                except Exception:
                    d.errback()

        store = FileStore(self.mktemp(), run_when_told)
        started = store.start()
        run_all()
        self.successResultOf(started)
        return store, run_all

    def test_a_cancelled_commit_finishes_and_cleans_up_on_its_own(self):
        store, run_all = self.store_run_when_told()
        for expected_md5 in ("0" * 32, hashlib.md5(b"abc").hexdigest()):
            upload = store.open_upload(producer=_Producer())
            upload.write(b"abc")
            upload.end()
            committing = upload.commit(BACKGROUND_ID, expected_md5)
            committing.cancel()  # the client went away
            self.failureResultOf(committing, CancelledError)
            run_all()  # what the commit had started, and what it does after
            self.assertEqual(os.listdir(os.path.join(store.root.path, "tmp")), [])
        self.assertEqual(store.path_for(BACKGROUND_ID).getContent(), b"abc")

    def test_a_cancelled_abort_finishes_and_cleans_up_on_its_own(self):
        store, run_all = self.store_run_when_told()
        upload = store.open_upload(producer=_Producer())
        upload.write(b"x" * files._UPLOAD_BATCH)  # a batch goes to be written
        upload.end()
        aborting = upload.abort()
        aborting.cancel()  # the client went away
        self.failureResultOf(aborting, CancelledError)
        run_all()  # what the abort had started, and what it does after
        self.assertEqual(os.listdir(os.path.join(store.root.path, "tmp")), [])
        self.assertFalse(store.path_for(BACKGROUND_ID).exists())

    def test_a_small_upload_takes_one_trip_to_the_threads(self):
        store, run_all = self.store_run_when_told()
        trips = []
        run = store._run

        def counting(f, *args):
            trips.append(f)
            return run(f, *args)

        store._run = counting
        upload = store.open_upload(producer=_Producer())
        upload.write(b"abc")
        upload.end()
        committing = upload.commit(BACKGROUND_ID, hashlib.md5(b"abc").hexdigest())
        run_all()
        self.assertEqual(self.successResultOf(committing).size, 3)
        self.assertEqual(len(trips), 1)
        self.assertEqual(store.path_for(BACKGROUND_ID).getContent(), b"abc")

    def test_a_large_upload_starts_its_writeback_as_it_goes(self):
        """
        Every `WRITEBACK_BYTES` written, the bytes so far (already in the file) are handed to
        the kernel to write, each range once and in order; the file is whole at the end.
        """
        store, run_all = self.store_run_when_told()
        asked = []

        def start_writeback(fd, offset, length):
            asked.append((offset, length, os.fstat(fd).st_size))

        self.patch(files, "start_writeback", start_writeback)
        data = os.urandom(2 * files.WRITEBACK_BYTES + 5 * files._UPLOAD_BATCH + 17)
        upload = store.open_upload(producer=_Producer())
        for i in range(0, len(data), 65536):
            upload.write(data[i:i + 65536])
            run_all()
        upload.end()
        committing = upload.commit(BACKGROUND_ID, hashlib.md5(data).hexdigest())
        run_all()
        self.assertEqual(self.successResultOf(committing).size, len(data))
        self.assertEqual(len(asked), 2)
        end = 0
        for offset, length, size_on_disk in asked:
            self.assertEqual(offset, end)
            self.assertGreaterEqual(length, files.WRITEBACK_BYTES)
            self.assertGreaterEqual(size_on_disk, offset + length)
            end = offset + length
        self.assertEqual(store.path_for(BACKGROUND_ID).getContent(), data)

    def test_writeback_refused_is_harmless(self):
        """A file system or descriptor that refuses the advice changes nothing."""
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"abc")
            files.start_writeback(f.fileno(), 0, 3)
        fd = os.open(path, os.O_RDONLY)
        os.close(fd)
        files.start_writeback(fd, 0, 3)  # closed: EBADF, ignored
        self.assertEqual(FilePath(path).getContent(), b"abc")

    def test_an_upload_ended_but_not_committed_is_not_synced(self):
        store, run_all = self.store_run_when_told()
        synced = []
        self.patch(os, "fsync", synced.append)
        upload = store.open_upload(producer=_Producer())
        upload.write(b"abc")
        upload.end()
        run_all()
        self.assertEqual(synced, [])
        aborting = upload.abort()
        run_all()
        self.successResultOf(aborting)
        self.assertEqual(synced, [])
        self.assertEqual(os.listdir(os.path.join(store.root.path, "tmp")), [])

    @inlineCallbacks
    def test_abort_mid_way_and_after_end(self):
        for end in (False, True):
            producer = _Producer()
            upload = self.store.open_upload(producer=producer)
            for _ in range(60):
                upload.write(b"x" * 65536)
            if end:
                upload.end()
            yield upload.abort()
            self.assertEqual(self.temporary_files(), [])
            self.assertEqual(producer.paused, producer.resumed)
            self.assertRaises(UploadClosed, upload.write, b"x")

    @inlineCallbacks
    def test_abort_before_any_byte(self):
        upload = self.store.open_upload(producer=_Producer())
        yield upload.abort()
        self.assertEqual(self.temporary_files(), [])

    @inlineCallbacks
    def test_too_large(self):
        upload = self.store.open_upload(10, producer=_Producer())
        upload.write(b"0123456789")
        self.assertRaises(UploadTooLarge, upload.write, b"a")
        yield upload.abort()
        self.assertEqual(self.temporary_files(), [])

    @inlineCallbacks
    def test_write_error_fails_the_upload(self):
        def disk_full(store, prefix):
            raise OSError(errno.ENOSPC, "full")

        self.patch(files.FileStore, "_create_temporary", disk_full)
        upload = self.store.open_upload(producer=_Producer())
        upload.write(b"abc")
        yield upload._written()
        self.assertRaises(OSError, upload.write, b"more")
        yield self.assertFailure(upload.commit(BACKGROUND_ID), OSError)

    @inlineCallbacks
    def test_a_failing_last_write_leaves_nothing(self):
        upload = self.store.open_upload(producer=_Producer())
        upload.write(b"x" * files._UPLOAD_BATCH)  # the temporary file is made
        yield upload._written()
        upload.write(b"abc")

        def disk_full(chunk):
            raise OSError(errno.ENOSPC, "full")

        upload._out.write = disk_full
        upload.end()
        yield self.assertFailure(upload.commit(BACKGROUND_ID), OSError)
        self.assertEqual(self.temporary_files(), [])
        self.assertFalse(self.store.path_for(BACKGROUND_ID).exists())

    @inlineCallbacks
    def test_sync_error_leaves_nothing(self):
        def failing_fsync(descriptor):
            raise OSError(errno.EIO, "io")

        self.patch(os, "fsync", failing_fsync)
        upload = self.store.open_upload(producer=_Producer())
        upload.write(b"abc")
        upload.end()
        yield self.assertFailure(upload.commit(BACKGROUND_ID), OSError)
        self.assertEqual(self.temporary_files(), [])

    @inlineCallbacks
    def test_existing_file_is_kept(self):
        upload = self.store.open_upload(producer=_Producer())
        upload.write(b"one")
        upload.end()
        yield upload.commit(BACKGROUND_ID)
        upload = self.store.open_upload(producer=_Producer())
        upload.write(b"two")
        upload.end()
        stored = yield upload.commit(BACKGROUND_ID, hashlib.md5(b"two").hexdigest())
        self.assertEqual(stored.size, 3)
        self.assertEqual(self.store.path_for(BACKGROUND_ID).getContent(), b"one")
        self.assertEqual(self.temporary_files(), [])
