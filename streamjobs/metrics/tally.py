"""Attempts counted per queue and task type: the numbers behind the attempt metrics.

Owns :class:`OutcomeTally`, plain integers and a duration histogram per (queue, task), written
only by the worker's poll thread (the middleware outcome hooks run there), so an increment needs
no lock. It is read by the scrape thread, which sees each number as of some moment (a
histogram's count is taken from its own buckets, so they agree); attempts started are the
worker's own count (``WorkerStats.starts``). Pure: no Prometheus, no Kafka, no clock. This is
on every task's path: prometheus-client's locked counters and histogram cost about 2.5 us per
task here; these
count a poll-loop turn's successes per task type at once (:meth:`OutcomeTally.succeeded_many`),
well under 0.1 us apiece. Does not decide what an outcome is (:mod:`streamjobs.middleware`) or
format anything (:mod:`streamjobs.metrics.prometheus`).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(slots=True)
class TaskTally:
    """Outcomes of one task type's attempts. ``buckets[i]`` counts durations in
    ``(bounds[i-1], bounds[i]]``; the last one those above every bound."""

    buckets: list[int]
    succeeded: int = 0
    cancelled: int = 0
    duration_sum: float = 0.0
    failed: dict[str, int] = field(default_factory=dict)  # by exception type
    retried: dict[str, int] = field(default_factory=dict)  # by tier
    dead_lettered: dict[str, int] = field(default_factory=dict)  # by reason

    def cumulative(self) -> list[int]:
        """Counts at or below each bound, then the total (Prometheus' ``le`` buckets)."""
        total, out = 0, []
        for count in list(self.buckets):
            total += count
            out.append(total)
        return out


def _bump(counts: dict[str, int], label: str) -> None:
    counts[label] = counts.get(label, 0) + 1


class OutcomeTally:
    """Every (queue, task) seen, with its :class:`TaskTally`."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self._tasks: dict[tuple[str, str], TaskTally] = {}

    def _of(self, queue: str, task: str) -> TaskTally:
        tally = self._tasks.get((queue, task))
        if tally is None:
            tally = self._tasks[(queue, task)] = TaskTally([0] * (len(self.bounds) + 1))
        return tally

    def succeeded(self, queue: str, task: str, seconds: float) -> None:
        tally = self._of(queue, task)
        tally.buckets[bisect_left(self.bounds, seconds)] += 1
        tally.duration_sum += seconds
        tally.succeeded += 1

    def succeeded_many(self, durations: dict[tuple[str, str], list[float]]) -> None:
        """Successes by (queue, task), their durations in order
        (:meth:`~streamjobs.middleware.Outcomes.successes_by_task`): the same counts as
        :meth:`succeeded` for each, a few list increments apiece."""
        bounds = self.bounds
        lowest = bounds[0]
        for (queue, task), seconds in durations.items():
            tally = self._of(queue, task)
            buckets, total, quick = tally.buckets, tally.duration_sum, 0
            for value in seconds:
                if value <= lowest:  # the first bucket: most attempts of a busy queue
                    quick += 1
                else:
                    buckets[bisect_left(bounds, value)] += 1
                total += value  # one by one, as succeeded() adds them: the same float sum
            buckets[0] += quick
            tally.duration_sum = total
            tally.succeeded += len(seconds)

    def cancelled(self, queue: str, task: str, seconds: float) -> None:
        """An attempt that ended cancelled (neither a success nor a failure)."""
        tally = self._of(queue, task)
        tally.buckets[bisect_left(self.bounds, seconds)] += 1
        tally.duration_sum += seconds
        tally.cancelled += 1

    def failed(
        self,
        queue: str,
        task: str,
        seconds: float,
        *,
        exception: str | None,
        tier: str | None = None,
        reason: str | None = None,
    ) -> None:
        """A failed attempt: ``exception`` None for a handler's own ``Retry``/``Discard``;
        ``tier`` when it was retried, else ``reason`` it was dead-lettered for."""
        tally = self._of(queue, task)
        tally.buckets[bisect_left(self.bounds, seconds)] += 1
        tally.duration_sum += seconds
        if exception is not None:
            _bump(tally.failed, exception)
        if tier is not None:
            _bump(tally.retried, tier)
        else:
            _bump(tally.dead_lettered, reason or "unknown")

    def items(self) -> list[tuple[tuple[str, str], TaskTally]]:
        return list(self._tasks.items())
