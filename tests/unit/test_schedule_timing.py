"""Due times of cron and interval schedules, including the DST rule of
:mod:`streamjobs.scheduler.timing`: a nonexistent wall time fires when the gap ends, an ambiguous
one fires once, at its first occurrence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from streamjobs.errors import ConfigError
from streamjobs.scheduler.timing import Cadence, due_after, next_due, resolve, zone

BERLIN = "Europe/Berlin"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def local(zone_name: str, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=zone(zone_name), fold=fold)  # type: ignore[misc]


def test_daily_cron_fires_at_the_wall_clock_time_of_its_zone() -> None:
    cadence = Cadence(cron="0 3 * * *", timezone=BERLIN)
    # winter: Berlin is UTC+1
    assert next_due(cadence, utc(2026, 1, 10, 0, 0)) == utc(2026, 1, 10, 2, 0)
    # summer: UTC+2
    assert next_due(cadence, utc(2026, 7, 10, 0, 0)) == utc(2026, 7, 10, 1, 0)


def test_next_due_is_strictly_after_the_given_instant() -> None:
    cadence = Cadence(cron="0 3 * * *", timezone="UTC")
    assert next_due(cadence, utc(2026, 1, 10, 3, 0)) == utc(2026, 1, 11, 3, 0)


def test_a_0230_job_on_the_spring_forward_day_fires_when_the_gap_ends_at_0300_local() -> None:
    cadence = Cadence(cron="30 2 * * *", timezone=BERLIN)
    # 2026-03-29: Berlin clocks jump from 02:00 CET to 03:00 CEST (01:00 UTC)
    fired = next_due(cadence, utc(2026, 3, 28, 12, 0))
    assert fired == utc(2026, 3, 29, 1, 0)
    assert fired.astimezone(zone(BERLIN)).strftime("%H:%M %Z") == "03:00 CEST"
    # and the day after it is 02:30 again
    assert next_due(cadence, fired) == local(BERLIN, 2026, 3, 30, 2, 30).astimezone(UTC)


def test_several_times_inside_the_gap_fire_once_together_when_it_ends() -> None:
    cadence = Cadence(cron="*/20 2-3 * * *", timezone=BERLIN)
    first = next_due(cadence, utc(2026, 3, 29, 0, 30))  # 01:30 CET
    second = next_due(cadence, first)
    third = next_due(cadence, second)
    assert first == utc(2026, 3, 29, 1, 0)  # 02:00, 02:20, 02:40 all collapse onto 03:00 CEST
    assert second == local(BERLIN, 2026, 3, 29, 3, 20).astimezone(UTC)
    assert third == local(BERLIN, 2026, 3, 29, 3, 40).astimezone(UTC)


def test_a_0130_job_on_the_fall_back_day_fires_once_at_the_first_occurrence() -> None:
    # US/Eastern falls back on 2026-11-01: 01:00-02:00 happens twice (EDT, then EST)
    cadence = Cadence(cron="30 1 * * *", timezone="America/New_York")
    fired = next_due(cadence, utc(2026, 11, 1, 0, 0))
    assert fired == utc(2026, 11, 1, 5, 30)  # 01:30 EDT (UTC-4), the first occurrence
    # after it, the repeated 01:30 EST (06:30 UTC) is not a due time: the next is a day later
    assert next_due(cadence, fired) == utc(2026, 11, 2, 6, 30)


def test_an_hourly_job_in_berlins_repeated_hour_fires_once_for_that_wall_time() -> None:
    cadence = Cadence(cron="30 * * * *", timezone=BERLIN)
    # 2026-10-25: 03:00 CEST -> 02:00 CET; 02:30 happens at 00:30 UTC and 01:30 UTC
    due = next_due(cadence, utc(2026, 10, 25, 0, 0))
    assert due == utc(2026, 10, 25, 0, 30)
    assert next_due(cadence, due) == utc(2026, 10, 25, 2, 30)  # 03:30 CET: 01:30 UTC skipped


def test_next_due_from_inside_the_second_pass_of_the_repeated_hour_goes_forward() -> None:
    cadence = Cadence(cron="30 * * * *", timezone=BERLIN)
    inside = utc(2026, 10, 25, 1, 10)  # 02:10 CET, the second 02:xx
    assert next_due(cadence, inside) == utc(2026, 10, 25, 2, 30)


def test_resolve_returns_existing_wall_times_unchanged() -> None:
    tz = zone(BERLIN)
    assert resolve(datetime(2026, 6, 1, 12, 0), tz) == utc(2026, 6, 1, 10, 0)


def test_intervals_are_aligned_to_the_unix_epoch() -> None:
    cadence = Cadence(every=timedelta(seconds=2))
    assert next_due(cadence, utc(2026, 1, 1, 0, 0, 1)) == utc(2026, 1, 1, 0, 0, 2)
    assert next_due(cadence, utc(2026, 1, 1, 0, 0, 2)) == utc(2026, 1, 1, 0, 0, 4)
    five = Cadence(every=timedelta(minutes=5))
    assert next_due(five, utc(2026, 1, 1, 0, 3, 59)) == utc(2026, 1, 1, 0, 5)


def test_due_after_keeps_the_newest_and_counts_the_older_ones() -> None:
    cadence = Cadence(every=timedelta(seconds=10))
    owed, older = due_after(cadence, utc(2026, 1, 1, 0, 0, 0), utc(2026, 1, 1, 0, 1, 0), 2)
    assert owed == [utc(2026, 1, 1, 0, 0, 50), utc(2026, 1, 1, 0, 1, 0)]
    assert older == 4
    cron = Cadence(cron="* * * * *")
    owed, older = due_after(cron, utc(2026, 1, 1, 0, 0), utc(2026, 1, 1, 0, 10), 3)
    assert owed == [utc(2026, 1, 1, 0, 8), utc(2026, 1, 1, 0, 9), utc(2026, 1, 1, 0, 10)]
    assert older == 7


def test_due_after_an_instant_later_than_until_is_empty() -> None:
    cadence = Cadence(every=timedelta(seconds=10))
    assert due_after(cadence, utc(2026, 1, 1, 0, 1), utc(2026, 1, 1, 0, 0), 5) == ([], 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one"),
        ({"cron": "* * * * *", "every": timedelta(seconds=5)}, "exactly one"),
        ({"cron": "0 3 * *"}, "5-field"),
        ({"cron": "0 3 * * * *"}, "5-field"),
        ({"cron": "61 3 * * *"}, "5-field"),
        ({"every": timedelta(milliseconds=1500)}, "whole number"),
        ({"every": timedelta(0)}, "whole number"),
        ({"cron": "0 3 * * *", "timezone": "Mars/Olympus"}, "time zone"),
    ],
)
def test_bad_cadences_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Cadence(**kwargs)  # type: ignore[arg-type]
