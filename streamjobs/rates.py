"""Rate limits as written by users: ``"100/m"``, ``"20/s"``, ``"500/h"``.

Owns the :class:`Rate` value (a count per period) and its parsing, shared by the registry (a
task type's ``rate_limit=``) and the settings (``queue_rate_limit``), so that a bad string is a
``ConfigError`` when the handler is registered or the settings are built, never later in a
worker. Does not count tasks or share a limit between workers
(:mod:`streamjobs.worker.ratelimit`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from streamjobs.errors import ConfigError

_PERIODS = {"s": timedelta(seconds=1), "m": timedelta(minutes=1), "h": timedelta(hours=1)}
_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*/\s*([smh])\s*")


@dataclass(frozen=True, slots=True)
class Rate:
    """At most ``count`` task starts per ``period``, over the whole consumer group."""

    count: float
    period: timedelta

    @property
    def per_second(self) -> float:
        return self.count / self.period.total_seconds()

    def __str__(self) -> str:
        unit = next(u for u, p in _PERIODS.items() if p == self.period)
        return f"{self.count:g}/{unit}"


def parse_rate(text: str) -> Rate:
    """``"N/s"``, ``"N/m"`` or ``"N/h"`` (N a positive number) as a :class:`Rate`."""
    match = _RATE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ConfigError(f"not a rate limit: {text!r} (use e.g. 20/s, 100/m, 500/h)")
    count = float(match.group(1))
    if count <= 0:
        raise ConfigError(f"a rate limit must be positive: {text!r}")
    return Rate(count, _PERIODS[match.group(2)])
