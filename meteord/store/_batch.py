"""
`BatchedReads`: reads of one entity by key, gathered into reads of many. Under load most of the
cost of reading an event by id is the statement's round trip through the driver, not the rows;
a read asked for while the runs allowed are under way waits for one to end, then goes with
every read asked for meanwhile as one statement. An idle store reads at once, so a lone read
waits for nothing. Two runs at a time (not one) let the database work on one while the node
answers the readers of the other.
"""

from __future__ import annotations

from itertools import islice
from typing import Callable, Generic, Hashable, Mapping, Optional, TypeVar

import attrs
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
KEYS_A_RUN = 32


@attrs.define(eq=False)
class BatchedReads(Generic[K, V]):
    """
    ``read_many(keys)`` (a mapping of the keys found to their values) run for at most ``limit``
    distinct keys at a time, at most ``runs`` runs at a time. ``read(key)`` gives the value, or
    None when the key is not found; a failed run fails every read it was for.
    """

    read_many: Callable[[list[K]], Deferred[Mapping[K, V]]]
    limit: int = KEYS_A_RUN
    runs: int = 2
    _waiting: dict[K, list[Deferred[Optional[V]]]] = attrs.field(factory=dict, init=False)
    _running: int = attrs.field(default=0, init=False)

    def read(self, key: K) -> Deferred[Optional[V]]:
        """The value of ``key``, read with the others asked for before the next run starts."""
        result: Deferred[Optional[V]] = Deferred()
        self._waiting.setdefault(key, []).append(result)
        self._run()
        return result

    def _run(self) -> None:
        if self._running >= self.runs or not self._waiting:
            return
        keys = list(islice(self._waiting, self.limit))
        readers = {key: self._waiting.pop(key) for key in keys}
        self._running += 1
        maybeDeferred(self.read_many, keys).addBoth(self._deliver, readers)

    def _deliver(self, found: Mapping[K, V] | Failure,
                 readers: dict[K, list[Deferred[Optional[V]]]]) -> None:
        self._running -= 1
        for key, waiting in readers.items():
            for result in waiting:
                # A reader cancelled (its client went away) has already been answered.
                if result.called:
                    continue
                if isinstance(found, Failure):
                    result.errback(found)
                else:
                    result.callback(found.get(key))
        self._run()
