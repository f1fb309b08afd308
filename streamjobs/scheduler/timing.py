"""When a schedule is due: cron expressions and fixed intervals, in a time zone. croniter's home.

Owns the pure computation of due times: :class:`Cadence` (a 5-field cron expression in an IANA
time zone, or a fixed interval) and :func:`next_due`, the first due instant strictly after a
given instant. Every instant is an aware UTC ``datetime`` with whole seconds. Does not decide
what to fire after downtime (:mod:`streamjobs.scheduler.catchup`) or touch Kafka.

Daylight saving time (the rule, tested in ``tests/unit/test_schedule_timing.py``): a cron
expression names *wall-clock* times in its zone, and each wall-clock time fires at most once.

* A wall-clock time that does not exist (the spring-forward gap, e.g. 02:30 in Europe/Berlin on
  the last Sunday of March) fires at the first valid instant after the gap: 03:00 local. Several
  times inside one gap (``*/15 2 * * *``) fire once, together, at that instant.
* A wall-clock time that happens twice (the fall-back hour, e.g. 02:30 on the last Sunday of
  October) fires once, at its first occurrence (the summer-time one). A job every minute therefore
  does not fire again during the repeated hour.

An interval (``every``) ignores the zone: its due times are the multiples of the interval since
the Unix epoch, so every worker derives the same instants (and the same task ids).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from streamjobs.errors import ConfigError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class Cadence:
    """A cron expression in a time zone, or a fixed interval: exactly one of the two."""

    cron: str | None = None
    every: timedelta | None = None
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.every is None):
            raise ConfigError("a schedule needs exactly one of cron=... or every=...")
        if self.every is not None:
            seconds = self.every.total_seconds()
            if seconds < 1 or seconds != int(seconds):
                raise ConfigError(f"every={self.every} must be a whole number of seconds >= 1")
        if self.cron is not None and (
            len(self.cron.split()) != 5 or not croniter.is_valid(self.cron)
        ):
            raise ConfigError(
                f"cron={self.cron!r} is not a 5-field cron expression (min hour dom mon dow)"
            )
        zone(self.timezone)  # raises for an unknown zone

    def describe(self) -> str:
        if self.every is not None:
            return f"every {int(self.every.total_seconds())}s"
        return f"cron {self.cron!r} {self.timezone}"


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"unknown time zone {name!r}") from exc


def to_ms(instant: datetime) -> int:
    return int(instant.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def next_due(cadence: Cadence, after: datetime) -> datetime:
    """The first due instant strictly after ``after`` (aware), as UTC with whole seconds."""
    if after.tzinfo is None:
        raise ValueError("next_due needs an aware datetime")
    if cadence.every is not None:
        step = int(cadence.every.total_seconds())
        elapsed = int((after - EPOCH) // _SECOND)
        return EPOCH + timedelta(seconds=(elapsed // step + 1) * step)
    assert cadence.cron is not None
    tz = zone(cadence.timezone)
    wall = after.astimezone(tz).replace(tzinfo=None)
    walls = croniter(cadence.cron, wall)
    while True:
        # a wall time before ``after``'s can never resolve after it (see the module docstring),
        # but one after it may resolve before ``after`` (the repeated hour): skip those
        instant = resolve(walls.get_next(datetime), tz)
        if instant > after:
            return instant


def resolve(wall: datetime, tz: ZoneInfo) -> datetime:
    """The UTC instant a naive wall-clock time fires at in ``tz`` (the DST rule above)."""
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == wall:
        return first  # exists; fold=0 is the first occurrence of an ambiguous time
    # In a gap, fold=1 applies the offset after the transition and fold=0 the one before:
    # the transition lies between the two instants. Find its first second by bisection.
    low = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    high = first
    if low > high:
        low, high = high, low
    while high - low > _SECOND:
        middle = low + timedelta(seconds=int((high - low) // _SECOND) // 2)
        if middle.astimezone(tz).replace(tzinfo=None) >= wall:
            high = middle
        else:
            low = middle
    return high


def due_after(
    cadence: Cadence, after: datetime, until: datetime, limit: int
) -> tuple[list[datetime], int]:
    """Due instants in ``(after, until]``: the newest ``limit`` of them, oldest first, and how
    many older ones were left out. A cron schedule looks back at most :data:`MAX_LOOKBACK`
    (after a longer outage the count of left-out fires is a lower bound)."""
    if until <= after:
        return [], 0
    if cadence.every is not None:
        step = int(cadence.every.total_seconds())
        first = int((after - EPOCH) // _SECOND) // step + 1
        last = int((until - EPOCH) // _SECOND) // step
        count = max(0, last - first + 1)
        kept = range(max(first, last - limit + 1), last + 1)
        return [EPOCH + timedelta(seconds=n * step) for n in kept], count - len(kept)
    moment, older = max(after, until - MAX_LOOKBACK), 0
    found: list[datetime] = []
    while True:
        moment = next_due(cadence, moment)
        if moment > until:
            return found, older
        found.append(moment)
        if len(found) > limit:
            del found[0]
            older += 1


#: How far back a cron schedule's missed fires are counted after an outage.
MAX_LOOKBACK = timedelta(days=31)
