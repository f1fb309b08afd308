"""Catch-up policies after downtime: skip, latest (default), all up to a bound."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from streamjobs.scheduler.catchup import SKIP_GRACE, CatchUp, plan
from streamjobs.scheduler.timing import Cadence

EVERY_MINUTE = Cadence(every=timedelta(minutes=1))
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def minutes(n: int) -> datetime:
    return T0 + timedelta(minutes=n)


def test_nothing_is_owed_before_the_next_due_time() -> None:
    for policy in CatchUp:
        owed = plan(EVERY_MINUTE, policy, since=T0, now=T0 + timedelta(seconds=59))
        assert owed.fire == []
        assert owed.skipped == 0
        assert owed.settled is None


def test_a_due_time_just_passed_fires_under_every_policy() -> None:
    for policy in CatchUp:
        owed = plan(EVERY_MINUTE, policy, since=T0, now=minutes(1) + timedelta(seconds=2))
        assert owed.fire == [minutes(1)]
        assert owed.skipped == 0
        assert owed.settled == minutes(1)


def test_latest_fires_the_newest_missed_due_time_once_and_skips_the_rest() -> None:
    owed = plan(EVERY_MINUTE, CatchUp.LATEST, since=T0, now=minutes(10) + timedelta(seconds=30))
    assert owed.fire == [minutes(10)]
    assert owed.skipped == 9
    assert owed.settled == minutes(10)


def test_skip_fires_nothing_once_the_newest_due_time_is_past_the_grace() -> None:
    every_5 = Cadence(every=timedelta(minutes=5))
    late = minutes(10) + SKIP_GRACE
    owed = plan(every_5, CatchUp.SKIP, since=T0, now=late)
    assert owed.fire == []
    assert owed.skipped == 2
    assert owed.settled == minutes(10)  # the state advances: they are never owed again


def test_skip_still_fires_a_due_time_within_the_grace_like_after_a_failover() -> None:
    owed = plan(EVERY_MINUTE, CatchUp.SKIP, since=T0, now=minutes(3) + timedelta(seconds=20))
    assert owed.fire == [minutes(3)]
    assert owed.skipped == 2


def test_all_fires_every_missed_due_time_oldest_first() -> None:
    owed = plan(EVERY_MINUTE, CatchUp.ALL, since=T0, now=minutes(5) + timedelta(seconds=1))
    assert owed.fire == [minutes(n) for n in range(1, 6)]
    assert owed.skipped == 0


def test_all_is_bounded_by_its_limit_keeping_the_newest() -> None:
    owed = plan(EVERY_MINUTE, CatchUp.ALL, since=T0, now=minutes(50), limit=3)
    assert owed.fire == [minutes(48), minutes(49), minutes(50)]
    assert owed.skipped == 47
