"""A child process for tests that run one (a node in a network namespace, a second exporter)."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure


class ChildProcess(ProcessProtocol):
    """Collects a child's output and fires C{ended} with (exit code, stdout, stderr)."""

    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.ended: Deferred[tuple[int | None, bytes, bytes]] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback((reason.value.exitCode, self.out, self.err))
