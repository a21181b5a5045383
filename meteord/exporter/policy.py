"""
The exporter's rules as arithmetic: failure accounting with back-off and disabling, request
timeouts and the byte-rate cap. Time windows belong to the model
(`meteord.model.ExportConfiguration.in_window`).

Everything here is pure: times are passed in (`now_ms` in integer milliseconds since the epoch,
or `now` in seconds from the reactor's clock for the rate limiter), and decisions come back as
data for the exporter service to store and act on.

Choices where the specification is silent:

- A transport failure that arrives while the configuration is already deferred (`now_ms` before
  the recorded `deferred_until_ms`) is not counted again: with several entities in flight, one
  outage fails them all at once, and it should count as one failure, not disable the
  configuration in a single stroke. Disabling therefore takes `max_failures_before_disable`
  failures separated by back-off periods, as an operator would expect.
- A success resets the count (the store does it as it marks the task done) but keeps the
  deferral, so late failures of requests that were in flight with it still count as the same
  outage.
- The rate limiter's bucket holds one second of the rate, so at most `max_bytes_per_second`
  bytes go out in a burst after a quiet period.
"""

from typing import Optional

from attrs import frozen

DEFAULT_DEFER_ON_FAILURE_SECONDS = 1800
DEFAULT_MAX_FAILURES_BEFORE_DISABLE = 4

REQUEST_TIMEOUT_SECONDS = 30.0
MINIMUM_UPLOAD_BYTES_PER_SECOND = 64 * 1024


@frozen
class FailurePolicy:
    """The back-off settings of `[exporter]`: `defer_on_failure` is in seconds."""

    defer_on_failure: float = DEFAULT_DEFER_ON_FAILURE_SECONDS
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
    call `transport_failure` after a transport failure (a success resets the count in the
    store, as the task is marked done).
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
        defer_until_ms = now_ms + round(policy.defer_on_failure * 1000)
        disable = failures >= policy.max_failures_before_disable
        if disable:
            reason = f"{failures} consecutive transport failures, the last: {reason}"
        return FailureDecision(
            account=FailureAccount(failures, defer_until_ms), counted=True,
            defer_until_ms=defer_until_ms, disable=disable, reason=reason)


def request_timeout(upload_bytes: int = 0) -> float:
    """Seconds to allow one request: 30 s, plus the upload's bytes at 64 KiB/s."""
    return REQUEST_TIMEOUT_SECONDS + upload_bytes / MINIMUM_UPLOAD_BYTES_PER_SECOND


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
