"""
Tests of meteord.store._batch.BatchedReads without a reactor: each run of ``read_many`` is a
Deferred the test fires by hand.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.trial.unittest import SynchronousTestCase

from meteord.store._batch import BatchedReads


class Boom(Exception):
    pass


class BatchedReadsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.runs: list[tuple[list[str], Deferred[dict[str, str]]]] = []
        self.reads: BatchedReads[str, str] = BatchedReads(self.read_many, limit=3, runs=2)

    def read_many(self, keys: list[str]) -> Deferred[dict[str, str]]:
        result: Deferred[dict[str, str]] = Deferred()
        self.runs.append((keys, result))
        return result

    def answer(self, index: int) -> None:
        """Fire run ``index`` with a value for every key but "missing"."""
        keys, result = self.runs[index]
        result.callback({key: key.upper() for key in keys if key != "missing"})

    def test_idle_reads_run_at_once(self) -> None:
        first = self.reads.read("a")
        second = self.reads.read("b")
        self.assertEqual([keys for keys, _ in self.runs], [["a"], ["b"]])
        self.answer(1)
        self.assertEqual(self.successResultOf(second), "B")
        self.assertNoResult(first)
        self.answer(0)
        self.assertEqual(self.successResultOf(first), "A")

    def test_reads_asked_meanwhile_go_together(self) -> None:
        """Beyond ``runs`` at once, reads wait and go as one run of distinct keys."""
        self.reads.read("a")
        self.reads.read("b")
        waiting = [self.reads.read(key) for key in ("c", "d", "c", "missing")]
        self.assertEqual(len(self.runs), 2)
        self.answer(0)
        self.assertEqual(self.runs[2][0], ["c", "d", "missing"])
        self.answer(2)
        self.assertEqual([self.successResultOf(read) for read in waiting],
                         ["C", "D", "C", None])

    def test_limit_keys_a_run(self) -> None:
        self.reads.read("a")
        self.reads.read("b")
        late = [self.reads.read(key) for key in "cdefg"]
        self.answer(0)
        self.answer(1)
        self.assertEqual([keys for keys, _ in self.runs[2:]], [["c", "d", "e"], ["f", "g"]])
        self.answer(2)
        self.answer(3)
        self.assertEqual([self.successResultOf(read) for read in late], list("CDEFG"))

    def test_a_failed_run_fails_its_reads_only(self) -> None:
        self.reads.read("a")
        failing = self.reads.read("b")
        later = self.reads.read("c")
        self.runs[1][1].errback(Boom())
        self.failureResultOf(failing, Boom)
        self.assertEqual(self.runs[2][0], ["c"])
        self.answer(2)
        self.assertEqual(self.successResultOf(later), "C")

    def test_a_run_that_fails_at_once(self) -> None:
        reads = BatchedReads(lambda keys: fail(Boom()))
        self.failureResultOf(reads.read("a"), Boom)
        self.failureResultOf(reads.read("b"), Boom)

    def test_a_cancelled_read_leaves_the_others(self) -> None:
        self.reads.read("a")
        self.reads.read("b")
        gone = self.reads.read("c")
        kept = self.reads.read("c")
        gone.cancel()
        self.failureResultOf(gone, CancelledError)
        self.answer(0)
        self.answer(2)
        self.assertEqual(self.successResultOf(kept), "C")

    def test_reads_asked_by_a_reader_keep_the_bound(self) -> None:
        """A read asked for while answers are handed out waits like any other."""
        asked: list[Deferred[str | None]] = []
        self.reads.read("a").addCallback(lambda _: asked.append(self.reads.read("x")))
        self.reads.read("b")
        for key in "cdef":
            self.reads.read(key)
        self.answer(0)
        self.assertEqual([keys for keys, _ in self.runs[2:]], [["c", "d", "e"]])
        self.answer(1)
        self.assertEqual(self.runs[3][0], ["f", "x"])
        self.answer(3)
        self.assertEqual(self.successResultOf(asked[0]), "X")
