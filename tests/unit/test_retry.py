"""streamjobs.retry: what happens after a failed attempt. Pure: no clock, no Kafka."""

from __future__ import annotations

from datetime import timedelta

import pytest

from streamjobs.errors import BadInput, DecodeError, Discard, InvalidArgs, Retry
from streamjobs.retry import (
    MAX_ATTEMPT,
    DeadLetter,
    RetryAt,
    RetryPolicy,
    clamp_attempt,
    decide,
    pick_tier,
)

S5, S30, M5 = timedelta(seconds=5), timedelta(seconds=30), timedelta(minutes=5)
NOW = 1_700_000_000_000
POLICY = RetryPolicy(max_attempts=5, tiers=(S5, S30, M5))


def _ms(delay: timedelta) -> int:
    return delay // timedelta(milliseconds=1)


def test_discard_dead_letters_at_once_with_its_reason() -> None:
    assert decide(POLICY, 1, Discard("spam"), NOW) == DeadLetter("spam")
    assert decide(POLICY, 1, Discard(), NOW) == DeadLetter("discarded")


def test_discard_keeps_its_reason_even_on_the_last_attempt() -> None:
    assert decide(POLICY, 5, Discard("spam"), NOW) == DeadLetter("spam")


def test_bad_input_dead_letters_at_once_with_its_reason_code() -> None:
    assert decide(POLICY, 1, InvalidArgs("width < 0"), NOW) == DeadLetter("invalid_args")
    assert decide(POLICY, 1, BadInput("nope"), NOW) == DeadLetter("bad_input")
    failed = DecodeError("x", reason="trailing_bytes")
    assert decide(POLICY, 2, failed, NOW) == DeadLetter("trailing_bytes")


def test_non_retryable_exception_and_its_subclasses_dead_letter_as_non_retryable() -> None:
    policy = RetryPolicy(max_attempts=5, tiers=(S5,), non_retryable=(LookupError,))
    assert decide(policy, 1, LookupError("gone"), NOW) == DeadLetter("non_retryable")
    assert decide(policy, 1, KeyError("gone"), NOW) == DeadLetter("non_retryable")
    assert isinstance(decide(policy, 1, ValueError("flaky"), NOW), RetryAt)


def test_retry_request_is_honoured_even_when_exception_is_non_retryable() -> None:
    policy = RetryPolicy(max_attempts=5, tiers=(S5,), non_retryable=(Exception,))
    assert decide(policy, 1, Retry(), NOW) == RetryAt(2, S5, NOW + 5000)
    assert decide(policy, 1, RuntimeError("x"), NOW) == DeadLetter("non_retryable")


def test_last_attempt_failing_dead_letters_with_max_attempts() -> None:
    assert decide(POLICY, 5, ValueError("x"), NOW) == DeadLetter("max_attempts")
    assert decide(POLICY, 6, ValueError("x"), NOW) == DeadLetter("max_attempts")
    assert decide(POLICY, 4, ValueError("x"), NOW) == RetryAt(5, M5, NOW + _ms(M5))


def test_retry_request_on_the_last_attempt_dead_letters_with_max_attempts() -> None:
    assert decide(POLICY, 5, Retry(delay=S5), NOW) == DeadLetter("max_attempts")


def test_single_attempt_policy_never_retries() -> None:
    policy = RetryPolicy(max_attempts=1, tiers=(S5,))
    assert decide(policy, 1, ValueError("x"), NOW) == DeadLetter("max_attempts")


def test_attempts_are_capped_at_max_attempt_whatever_the_policy() -> None:
    policy = RetryPolicy(max_attempts=10 * MAX_ATTEMPT, tiers=(S5,))
    assert decide(policy, MAX_ATTEMPT, ValueError("x"), NOW) == DeadLetter("max_attempts")
    assert decide(policy, MAX_ATTEMPT - 1, ValueError("x"), NOW) == RetryAt(
        MAX_ATTEMPT, S5, NOW + 5000
    )


@pytest.mark.parametrize(
    ("attempt", "tier"), [(1, S5), (2, S30), (3, M5), (4, M5)], ids=["1st", "2nd", "3rd", "4th"]
)
def test_default_tier_progresses_with_the_attempt_then_stays_on_the_last(
    attempt: int, tier: timedelta
) -> None:
    assert decide(POLICY, attempt, ValueError("x"), NOW) == RetryAt(
        attempt + 1, tier, NOW + _ms(tier)
    )


def test_retry_without_delay_follows_the_default_progression() -> None:
    assert decide(POLICY, 2, Retry(), NOW) == RetryAt(3, S30, NOW + 30_000)


@pytest.mark.parametrize(
    ("delay", "tier"),
    [
        (timedelta(seconds=45), S30),  # longest tier not longer than the delay
        (timedelta(seconds=30), S30),  # exact fit
        (timedelta(hours=2), M5),  # longer than every tier: the longest, then hops
        (timedelta(seconds=2), S5),  # shorter than every tier: the shortest
    ],
    ids=["between", "exact", "beyond", "below"],
)
def test_retry_with_delay_picks_a_tier_and_is_due_exactly_after_the_delay(
    delay: timedelta, tier: timedelta
) -> None:
    assert decide(POLICY, 1, Retry(delay=delay), NOW) == RetryAt(2, tier, NOW + _ms(delay))


def test_retry_with_negative_delay_is_due_now_on_the_shortest_tier() -> None:
    assert decide(POLICY, 1, Retry(delay=timedelta(seconds=-3)), NOW) == RetryAt(2, S5, NOW)


def test_not_before_keeps_millisecond_precision() -> None:
    # timedelta.total_seconds() * 1000 gives 1000.9999999999999 for 1001 ms: one ms early.
    for ms in (1001, 1003, 4097, 86_400_001):
        delay = timedelta(milliseconds=ms)
        assert decide(POLICY, 1, Retry(delay=delay), NOW).not_before_ms == NOW + ms  # type: ignore[union-attr]


def test_sub_millisecond_delay_rounds_up_so_the_task_never_runs_early() -> None:
    decision = decide(POLICY, 1, Retry(delay=timedelta(microseconds=1500)), NOW)
    assert decision == RetryAt(2, S5, NOW + 2)


def test_not_before_is_computed_from_the_given_now() -> None:
    first = decide(POLICY, 1, ValueError("x"), 0)
    later = decide(POLICY, 1, ValueError("x"), 10_000)
    assert isinstance(first, RetryAt)
    assert isinstance(later, RetryAt)
    assert (first.not_before_ms, later.not_before_ms) == (5_000, 15_000)


@pytest.mark.parametrize(
    ("remaining", "expected"),
    [
        (timedelta(0), S5),
        (timedelta(seconds=4, microseconds=999_999), S5),
        (S5, S5),
        (timedelta(seconds=29), S5),
        (S30, S30),
        (timedelta(minutes=4), S30),
        (M5, M5),
        (timedelta(days=365), M5),
        (timedelta(seconds=-1), S5),
    ],
)
def test_pick_tier_takes_the_longest_tier_that_fits_else_the_shortest(
    remaining: timedelta, expected: timedelta
) -> None:
    assert pick_tier((S5, S30, M5), remaining) == expected


def test_pick_tier_does_not_depend_on_tier_order() -> None:
    assert pick_tier([M5, S5, S30], timedelta(minutes=1)) == S30
    assert pick_tier([M5, S5, S30], timedelta(seconds=1)) == S5


def test_pick_tier_with_a_single_tier_always_returns_it() -> None:
    assert pick_tier((S30,), timedelta(0)) == S30
    assert pick_tier((S30,), timedelta(days=1)) == S30


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(0, None), (-1, None), (1, 1), (2, 2), (1000, 1000), (1001, None), (999_999, None)],
)
def test_clamp_attempt_accepts_1_to_1000_and_nothing_else(
    attempt: int, expected: int | None
) -> None:
    assert clamp_attempt(attempt) == expected
