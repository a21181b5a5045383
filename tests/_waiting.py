"""
Waiting, on the real reactor, for what another party does in its own time (a socket, a
process, an exporter's rounds): polled, and a failure naming what never happened.
"""

from __future__ import annotations

from typing import Any, Callable, Coroutine

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater


async def wait_until(condition: Callable[[], Any], what: str = "the condition",
                     timeout: float = 20.0, interval: float = 0.05) -> None:
    """
    Poll ``condition`` (which may return a Deferred or coroutine) every ``interval`` seconds
    until it is true; fail after ``timeout`` seconds.
    """
    deadline = reactor.seconds() + timeout
    while True:
        result = condition()
        if isinstance(result, (Deferred, Coroutine)):
            result = await result
        if result:
            return
        if reactor.seconds() >= deadline:
            raise AssertionError(f"gave up waiting {timeout:g} s for {what}")
        await deferLater(reactor, interval)
