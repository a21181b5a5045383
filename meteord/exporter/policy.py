"""
The exporter's rules as arithmetic: failure accounting with back-off and disabling, request
timeouts, daily time windows and the byte-rate cap.

Everything here is pure: times are passed in (`now_ms` in integer milliseconds since the epoch,
or `now` in seconds from the reactor's clock for the rate limiter), and decisions come back as
data for the exporter service to store and act on.

Choices where the specification is silent:

- A transport failure that arrives while the configuration is already deferred (`now_ms` before
  the recorded `deferred_until_ms`) is not counted again: with several entities in flight, one
  outage fails them all at once, and it should count as one failure, not disable the
  configuration in a single stroke. Disabling therefore takes `max_failures_before_disable`
  failures separated by back-off periods, as an operator would expect.
- A success resets the count but keeps the deferral, so late failures of requests that were
  in flight with it still count as the same outage.
- Windows are `"HH:MM-HH:MM"` in UTC, start inclusive and end exclusive. `24:00` is allowed as
  an end only, so `"00:00-24:00"` is the whole day; a start after the end wraps midnight
  (`"22:00-06:00"`); equal start and end is rejected as ambiguous (empty or whole day?).
- The rate limiter's bucket holds one second of the rate, so at most `max_bytes_per_second`
  bytes go out in a burst after a quiet period.
"""

import re
from typing import Iterable, Optional, Sequence

from attrs import evolve, frozen

DEFAULT_DEFER_ON_FAILURE_SECONDS = 1800
DEFAULT_MAX_FAILURES_BEFORE_DISABLE = 4

REQUEST_TIMEOUT_SECONDS = 30.0
MINIMUM_UPLOAD_BYTES_PER_SECOND = 64 * 1024

MS_PER_MINUTE = 60 * 1000
MS_PER_DAY = 24 * 60 * MS_PER_MINUTE


@frozen
class FailurePolicy:
    """The back-off settings of `[exporter]`: `defer_on_failure` is in seconds."""

    defer_on_failure: int = DEFAULT_DEFER_ON_FAILURE_SECONDS
    max_failures_before_disable: int = DEFAULT_MAX_FAILURES_BEFORE_DISABLE


@frozen
class FailureDecision:
    """
    What to do after a transport failure: store `account`; if `counted`, defer the
    configuration's pending tasks until `defer_until_ms`; if `disable`, disable the
    configuration with `reason` as its recorded reason.
    """

    account: "FailureAccount"
    counted: bool
    defer_until_ms: int
    disable: bool
    reason: str


@frozen
class FailureAccount:
    """
    The stored failure state of one export configuration. Entity failures never change it;
    call `transport_failure` after a transport failure and `success` after a completed task.
    """

    consecutive_failures: int = 0
    deferred_until_ms: Optional[int] = None

    def transport_failure(self, policy: FailurePolicy, reason: str,
                          now_ms: int) -> FailureDecision:
        """Count a transport failure at `now_ms` and decide on back-off and disabling."""
        if self.deferred_until_ms is not None and now_ms < self.deferred_until_ms:
            return FailureDecision(
                account=self, counted=False, defer_until_ms=self.deferred_until_ms,
                disable=False, reason=reason)
        failures = self.consecutive_failures + 1
        defer_until_ms = now_ms + policy.defer_on_failure * 1000
        disable = failures >= policy.max_failures_before_disable
        if disable:
            reason = f"{failures} consecutive transport failures, the last: {reason}"
        return FailureDecision(
            account=FailureAccount(failures, defer_until_ms), counted=True,
            defer_until_ms=defer_until_ms, disable=disable, reason=reason)

    def success(self) -> "FailureAccount":
        """Reset the count after a success."""
        return evolve(self, consecutive_failures=0)


def request_timeout(upload_bytes: int = 0) -> float:
    """Seconds to allow one request: 30 s, plus the upload's bytes at 64 KiB/s."""
    return REQUEST_TIMEOUT_SECONDS + upload_bytes / MINIMUM_UPLOAD_BYTES_PER_SECOND


class InvalidWindow(ValueError):
    """A time window that is not `"HH:MM-HH:MM"` with valid times."""


@frozen
class TimeWindow:
    """A daily UTC window as ms after midnight: `start_ms` inclusive, `end_ms` exclusive."""

    start_ms: int
    end_ms: int

    def contains(self, now_ms: int) -> bool:
        """Whether `now_ms` (ms since the epoch) falls inside this window."""
        t = now_ms % MS_PER_DAY
        if self.start_ms < self.end_ms:
            return self.start_ms <= t < self.end_ms
        return t >= self.start_ms or t < self.end_ms


_WINDOW = re.compile(r"(\d\d):(\d\d)-(\d\d):(\d\d)")


def parse_window(text: str) -> TimeWindow:
    """Parse `"HH:MM-HH:MM"`; raise `InvalidWindow` naming the window if it is not valid."""
    match = _WINDOW.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise InvalidWindow(f"window {text!r} is not HH:MM-HH:MM")
    start_h, start_m, end_h, end_m = (int(g) for g in match.groups())
    if start_h > 23 or start_m > 59 or end_m > 59 or end_h > 24 or (end_h == 24 and end_m):
        raise InvalidWindow(f"window {text!r} has an impossible time")
    start_ms = (start_h * 60 + start_m) * MS_PER_MINUTE
    end_ms = (end_h * 60 + end_m) * MS_PER_MINUTE
    if start_ms == end_ms:
        raise InvalidWindow(f"window {text!r} starts when it ends")
    return TimeWindow(start_ms, end_ms)


def parse_windows(texts: Optional[Iterable[str]]) -> tuple[TimeWindow, ...]:
    """Parse a configuration's `window` list; absent means no windows (always allowed)."""
    if texts is None:
        return ()
    return tuple(parse_window(text) for text in texts)


def in_window(windows: Sequence[TimeWindow], now_ms: int) -> bool:
    """Whether exports may run at `now_ms`: inside any window, or there are no windows."""
    return not windows or any(window.contains(now_ms) for window in windows)


def next_window_start(windows: Sequence[TimeWindow], now_ms: int) -> int:
    """The first time at or after `now_ms` (in ms) when exports may run."""
    if in_window(windows, now_ms):
        return now_ms
    midnight = now_ms - now_ms % MS_PER_DAY
    starts = []
    for window in windows:
        start = midnight + window.start_ms
        if start <= now_ms:
            start += MS_PER_DAY
        starts.append(start)
    return min(starts)


class RateLimiter:
    """
    A token bucket capping file uploads at `max_bytes_per_second`. Pure arithmetic on the
    times passed in (seconds, from the reactor's clock); the service waits with its clock.
    """

    def __init__(self, max_bytes_per_second: float) -> None:
        if max_bytes_per_second <= 0:
            raise ValueError("max_bytes_per_second must be positive")
        self.rate = float(max_bytes_per_second)
        self.capacity = self.rate
        self._tokens = self.capacity
        self._last: Optional[float] = None

    def delay_for(self, nbytes: int, now: float) -> float:
        """
        Reserve `nbytes` at time `now` and return how many seconds to wait before sending
        them. Reservations queue: a second call before the first's bytes are paid for waits
        behind them.
        """
        if nbytes < 0:
            raise ValueError("nbytes must not be negative")
        if self._last is not None and now > self._last:
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        if self._last is None or now > self._last:
            self._last = now
        self._tokens -= nbytes
        return max(0.0, -self._tokens / self.rate)
