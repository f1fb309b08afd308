"""Retry policy: what happens to a task after a failed attempt. Pure functions, no Kafka.

Owns the decision between another attempt (which tier, due when) and a dead letter (which
reason), and the choice of tier for a delay. Does not produce records: the worker carries the
decision out, and commits the source offset only once it is durably written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from streamjobs.errors import BadInput, Discard, Retry

MAX_ATTEMPT = 1000


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Per queue (or per task type): attempts, tier delays and exceptions not worth retrying."""

    max_attempts: int
    tiers: tuple[timedelta, ...]
    non_retryable: tuple[type[BaseException], ...] = field(default=())


@dataclass(frozen=True, slots=True)
class RetryAt:
    """Schedule attempt ``attempt`` on tier ``tier``, not before ``not_before_ms``."""

    attempt: int
    tier: timedelta
    not_before_ms: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str


Decision = RetryAt | DeadLetter


def pick_tier(tiers: tuple[timedelta, ...] | list[timedelta], remaining: timedelta) -> timedelta:
    """The longest tier not longer than ``remaining`` (the shortest when all are longer).

    A record waits on a tier for at most that tier's delay, then hops to the tier that fits
    what is left, so it never runs early and is late by at most the shortest tier.
    """
    fitting = [t for t in tiers if t <= remaining]
    return max(fitting) if fitting else min(tiers)


def decide(policy: RetryPolicy, attempt: int, exc: BaseException, now_ms: int) -> Decision:
    """The outcome of attempt ``attempt`` failing with ``exc``."""
    if isinstance(exc, Discard):
        return DeadLetter(exc.reason)
    if isinstance(exc, BadInput):
        return DeadLetter(exc.reason)
    if isinstance(exc, policy.non_retryable) and not isinstance(exc, Retry):
        return DeadLetter("non_retryable")
    if attempt >= min(policy.max_attempts, MAX_ATTEMPT):
        return DeadLetter("max_attempts")
    if isinstance(exc, Retry) and exc.delay is not None:
        delay = max(exc.delay, timedelta(0))
        tier = pick_tier(policy.tiers, delay)
    else:
        tier = policy.tiers[min(attempt - 1, len(policy.tiers) - 1)]
        delay = tier
    # exact ceiling, never early: total_seconds() * 1000 turned 1001 ms into 1000
    return RetryAt(attempt + 1, tier, now_ms - (-delay // timedelta(milliseconds=1)))


def clamp_attempt(attempt: int) -> int | None:
    """A sane attempt number from a record, or None when it is garbage (dead-letter it)."""
    return attempt if 1 <= attempt <= MAX_ATTEMPT else None
