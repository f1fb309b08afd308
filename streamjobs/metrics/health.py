"""Liveness and readiness of a worker, for Kubernetes probes. Pure: judged from the worker's
stats, no Kafka and no HTTP.

Owns the two verdicts. **Live** unless the poll loop has stalled: it turned before and has not
for ``stall_after`` (a worker still starting up is live; so is one whose handlers are all busy,
since the loop keeps polling with its partitions paused). **Ready** when the loop turns and the
worker owns at least one partition. Does not serve them (:mod:`streamjobs.metrics.endpoint`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamjobs.worker.stats import WorkerStats

#: max.poll.interval.ms is 5 minutes; a loop silent for this long is stuck well before that.
STALL_AFTER = timedelta(seconds=30)


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    detail: str


def liveness(polled_at: float, now: float, stall_after: timedelta = STALL_AFTER) -> Verdict:
    """``polled_at`` and ``now`` are ``time.monotonic()`` values; 0 means never polled."""
    if not polled_at:
        return Verdict(True, "starting")
    silent = now - polled_at
    if silent > stall_after.total_seconds():
        return Verdict(False, f"poll loop stalled for {silent:.1f}s")
    return Verdict(True, "polling")


def readiness(
    polled_at: float, now: float, partitions: int, stall_after: timedelta = STALL_AFTER
) -> Verdict:
    if not polled_at:
        return Verdict(False, "starting")
    live = liveness(polled_at, now, stall_after)
    if not live.ok:
        return live
    if partitions == 0:
        return Verdict(False, "no partitions assigned")
    return Verdict(True, f"polling, {partitions} partitions")


def of_worker(stats: WorkerStats, stall_after: timedelta = STALL_AFTER) -> tuple[Verdict, Verdict]:
    """(liveness, readiness) of a worker now."""
    now = time.monotonic()
    return (
        liveness(stats.polled_at, now, stall_after),
        readiness(stats.polled_at, now, len(stats.partitions), stall_after),
    )
