"""
Tests for meteord.exporter.policy: back-off and disabling arithmetic, request timeouts, time
windows at their edges and the rate limiter's arithmetic.
"""

from twisted.trial.unittest import SynchronousTestCase

from meteord.exporter.policy import (
    FailureAccount, FailurePolicy, InvalidWindow, RateLimiter, TimeWindow, in_window,
    next_window_start, parse_window, parse_windows, request_timeout)

MINUTE = 60 * 1000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
# 2024-01-02T00:00:00Z, a midnight, in ms.
MIDNIGHT = 1704153600000


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

    def test_success_resets_the_count(self):
        policy = FailurePolicy()
        account = FailureAccount(3, 500)
        self.assertEqual(account.success(), FailureAccount(0, 500))
        decision = account.success().transport_failure(policy, "x", 500)
        self.assertEqual(decision.account.consecutive_failures, 1)
        self.assertFalse(decision.disable)


class RequestTimeoutTests(SynchronousTestCase):
    """30 s plus the upload at 64 KiB/s."""

    def test_message_without_upload(self):
        self.assertEqual(request_timeout(), 30.0)

    def test_upload_adds_one_second_per_64_kib(self):
        self.assertEqual(request_timeout(64 * 1024), 31.0)
        self.assertEqual(request_timeout(10 * 64 * 1024 + 32 * 1024), 40.5)


class ParseWindowTests(SynchronousTestCase):
    """The HH:MM-HH:MM syntax."""

    def test_simple(self):
        self.assertEqual(parse_window("01:30-02:45"), TimeWindow(90 * MINUTE, 165 * MINUTE))

    def test_wrapping(self):
        self.assertEqual(parse_window("22:00-06:00"), TimeWindow(22 * HOUR, 6 * HOUR))

    def test_whole_day(self):
        self.assertEqual(parse_window("00:00-24:00"), TimeWindow(0, DAY))

    def test_surrounding_space_is_ignored(self):
        self.assertEqual(parse_window(" 22:00-06:00 "), TimeWindow(22 * HOUR, 6 * HOUR))

    def test_invalid(self):
        for text in ["", "22-06", "2:00-06:00", "22:00 - 06:00", "24:00-01:00",
                     "10:00-24:01", "10:60-11:00", "10:00-25:00", "10:00-10:00",
                     "00:00-00:00", None, 2200]:
            self.assertRaises(InvalidWindow, parse_window, text)

    def test_invalid_window_is_a_value_error(self):
        self.assertTrue(issubclass(InvalidWindow, ValueError))

    def test_error_names_the_window(self):
        error = self.assertRaises(InvalidWindow, parse_window, "late")
        self.assertIn("'late'", str(error))

    def test_parse_windows_absent_is_empty(self):
        self.assertEqual(parse_windows(None), ())
        self.assertEqual(parse_windows(["01:00-02:00", "03:00-04:00"]),
                         (TimeWindow(HOUR, 2 * HOUR), TimeWindow(3 * HOUR, 4 * HOUR)))


class InWindowTests(SynchronousTestCase):
    """Start inclusive, end exclusive, midnight wrapping."""

    def test_no_windows_is_always_allowed(self):
        self.assertTrue(in_window((), MIDNIGHT + 5 * HOUR))

    def test_plain_window_edges(self):
        windows = parse_windows(["01:00-02:00"])
        self.assertFalse(in_window(windows, MIDNIGHT + HOUR - 1))
        self.assertTrue(in_window(windows, MIDNIGHT + HOUR))
        self.assertTrue(in_window(windows, MIDNIGHT + 2 * HOUR - 1))
        self.assertFalse(in_window(windows, MIDNIGHT + 2 * HOUR))

    def test_wrapping_window_edges(self):
        windows = parse_windows(["22:00-06:00"])
        self.assertFalse(in_window(windows, MIDNIGHT + 22 * HOUR - 1))
        self.assertTrue(in_window(windows, MIDNIGHT + 22 * HOUR))
        self.assertTrue(in_window(windows, MIDNIGHT + DAY - 1))
        self.assertTrue(in_window(windows, MIDNIGHT + DAY))
        self.assertTrue(in_window(windows, MIDNIGHT + 6 * HOUR - 1))
        self.assertFalse(in_window(windows, MIDNIGHT + 6 * HOUR))
        self.assertFalse(in_window(windows, MIDNIGHT + 12 * HOUR))

    def test_whole_day_window(self):
        windows = parse_windows(["00:00-24:00"])
        self.assertTrue(in_window(windows, MIDNIGHT))
        self.assertTrue(in_window(windows, MIDNIGHT - 1))

    def test_window_ending_at_midnight(self):
        windows = parse_windows(["23:00-24:00"])
        self.assertTrue(in_window(windows, MIDNIGHT - 1))
        self.assertFalse(in_window(windows, MIDNIGHT))

    def test_any_of_several_windows(self):
        windows = parse_windows(["01:00-02:00", "13:00-14:00"])
        self.assertTrue(in_window(windows, MIDNIGHT + 13 * HOUR + 30 * MINUTE))
        self.assertFalse(in_window(windows, MIDNIGHT + 3 * HOUR))


class NextWindowStartTests(SynchronousTestCase):
    """When exports may next run."""

    def test_no_windows_is_now(self):
        self.assertEqual(next_window_start((), MIDNIGHT + 7), MIDNIGHT + 7)

    def test_inside_a_window_is_now(self):
        windows = parse_windows(["22:00-06:00"])
        self.assertEqual(next_window_start(windows, MIDNIGHT + HOUR), MIDNIGHT + HOUR)

    def test_later_today(self):
        windows = parse_windows(["22:00-06:00"])
        self.assertEqual(next_window_start(windows, MIDNIGHT + 6 * HOUR),
                         MIDNIGHT + 22 * HOUR)

    def test_tomorrow(self):
        windows = parse_windows(["01:00-02:00"])
        self.assertEqual(next_window_start(windows, MIDNIGHT + 2 * HOUR),
                         MIDNIGHT + DAY + HOUR)

    def test_earliest_of_several(self):
        windows = parse_windows(["20:00-21:00", "03:00-04:00", "15:00-16:00"])
        self.assertEqual(next_window_start(windows, MIDNIGHT + 16 * HOUR),
                         MIDNIGHT + 20 * HOUR)
        self.assertEqual(next_window_start(windows, MIDNIGHT + 21 * HOUR),
                         MIDNIGHT + DAY + 3 * HOUR)

    def test_one_ms_before_start(self):
        windows = parse_windows(["01:00-02:00"])
        self.assertEqual(next_window_start(windows, MIDNIGHT + HOUR - 1), MIDNIGHT + HOUR)


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
