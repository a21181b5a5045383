"""
`shielded`: a Deferred whose cancellation does not reach the work behind it. A store call
cancelled because its HTTP client went away must still finish what it started: a
transaction, or a file upload's commit and the removal of its temporary file.
"""

from __future__ import annotations

from typing import Any, TypeVar

from twisted.internet.defer import Deferred

T = TypeVar("T")


def shielded(running: Deferred[T]) -> Deferred[T]:
    """
    A Deferred with the outcome of ``running``. Cancelling it fails it at once with
    CancelledError and leaves ``running`` to finish on its own; its outcome is then dropped.
    """
    result: Deferred[T] = Deferred(lambda _: None)

    def deliver(outcome: Any) -> None:
        if not result.called:
            result.callback(outcome)

    running.addBoth(deliver)
    return result
