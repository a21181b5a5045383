"""
Tests for meteord.exporter.policy: back-off and disabling arithmetic, request timeouts and the
rate limiter's arithmetic.
"""

from twisted.trial.unittest import SynchronousTestCase

from meteord.exporter.policy import FailureAccount, FailurePolicy, RateLimiter, request_timeout


class FailureAccountTests(SynchronousTestCase):
    """Transport failures back off and eventually disable; successes reset."""

    def test_first_failure_defers_by_defer_on_failure(self):
        decision = FailureAccount().transport_failure(FailurePolicy(), "refused", 1000)
        self.assertEqual(decision.account, FailureAccount(1, 1000 + 1800 * 1000))
        self.assertEqual(decision.defer_until_ms, 1801000)
        self.assertTrue(decision.counted)
        self.assertFalse(decision.disable)
        self.assertEqual(decision.reason, "refused")

    def test_disabled_on_the_fourth_consecutive_failure_exactly(self):
        policy = FailurePolicy()
        account = FailureAccount()
        now = 0
        disables = []
        for _ in range(4):
            decision = account.transport_failure(policy, "HTTP 500 from importer", now)
            disables.append(decision.disable)
            account = decision.account
            now = decision.defer_until_ms
        self.assertEqual(disables, [False, False, False, True])
        self.assertEqual(account.consecutive_failures, 4)
        self.assertEqual(
            decision.reason,
            "4 consecutive transport failures, the last: HTTP 500 from importer")

    def test_custom_policy(self):
        policy = FailurePolicy(defer_on_failure=60, max_failures_before_disable=2)
        first = FailureAccount().transport_failure(policy, "x", 5000)
        self.assertEqual((first.defer_until_ms, first.disable), (65000, False))
        second = first.account.transport_failure(policy, "x", 65000)
        self.assertEqual((second.defer_until_ms, second.disable), (125000, True))

    def test_failure_while_deferred_is_not_counted(self):
        policy = FailurePolicy()
        first = FailureAccount().transport_failure(policy, "refused", 1000)
        again = first.account.transport_failure(policy, "refused", 1001)
        self.assertFalse(again.counted)
        self.assertFalse(again.disable)
        self.assertEqual(again.account, first.account)
        self.assertEqual(again.defer_until_ms, first.defer_until_ms)

    def test_failure_at_the_end_of_the_deferral_is_counted(self):
        policy = FailurePolicy()
        first = FailureAccount().transport_failure(policy, "refused", 0)
        second = first.account.transport_failure(policy, "refused", first.defer_until_ms)
        self.assertTrue(second.counted)
        self.assertEqual(second.account.consecutive_failures, 2)

    def test_one_outage_with_many_tasks_in_flight_does_not_disable(self):
        policy = FailurePolicy()
        account = FailureAccount()
        for _ in range(10):
            decision = account.transport_failure(policy, "refused", 0)
            self.assertFalse(decision.disable)
            account = decision.account
        self.assertEqual(account.consecutive_failures, 1)


class RequestTimeoutTests(SynchronousTestCase):
    """30 s plus the upload at 64 KiB/s."""

    def test_message_without_upload(self):
        self.assertEqual(request_timeout(), 30.0)

    def test_upload_adds_one_second_per_64_kib(self):
        self.assertEqual(request_timeout(64 * 1024), 31.0)
        self.assertEqual(request_timeout(10 * 64 * 1024 + 32 * 1024), 40.5)


class RateLimiterTests(SynchronousTestCase):
    """Token bucket arithmetic."""

    def test_first_burst_of_one_second_is_free(self):
        limiter = RateLimiter(1000)
        self.assertEqual(limiter.delay_for(1000, 50.0), 0.0)

    def test_beyond_the_bucket_waits_at_the_rate(self):
        limiter = RateLimiter(1000)
        self.assertEqual(limiter.delay_for(3500, 50.0), 2.5)

    def test_reservations_queue(self):
        limiter = RateLimiter(1000)
        self.assertEqual(limiter.delay_for(1000, 0.0), 0.0)
        self.assertEqual(limiter.delay_for(500, 0.0), 0.5)
        self.assertEqual(limiter.delay_for(500, 0.0), 1.0)

    def test_tokens_refill_with_time(self):
        limiter = RateLimiter(1000)
        limiter.delay_for(1000, 0.0)
        self.assertEqual(limiter.delay_for(500, 0.5), 0.0)
        self.assertEqual(limiter.delay_for(500, 0.5), 0.5)

    def test_refill_is_capped_at_one_second(self):
        limiter = RateLimiter(1000)
        limiter.delay_for(1000, 0.0)
        self.assertEqual(limiter.delay_for(2000, 100.0), 1.0)

    def test_debt_is_paid_back_over_time(self):
        limiter = RateLimiter(1000)
        self.assertEqual(limiter.delay_for(5000, 0.0), 4.0)
        self.assertEqual(limiter.delay_for(1000, 2.0), 3.0)

    def test_clock_going_backwards_adds_nothing(self):
        limiter = RateLimiter(1000)
        limiter.delay_for(1000, 10.0)
        self.assertEqual(limiter.delay_for(1000, 5.0), 1.0)
        self.assertEqual(limiter.delay_for(0, 10.0), 1.0)

    def test_zero_bytes_never_wait_on_a_full_bucket(self):
        self.assertEqual(RateLimiter(1).delay_for(0, 0.0), 0.0)

    def test_invalid_arguments(self):
        self.assertRaises(ValueError, RateLimiter, 0)
        self.assertRaises(ValueError, RateLimiter, -5)
        self.assertRaises(ValueError, RateLimiter(10).delay_for, -1, 0.0)
