"""The attempts a worker is running now, with their start times, as heartbeats and metrics show
them.

Owns :class:`RunningTask` (one attempt as a heartbeat reports it) and reading the worker's own
table of running handler calls (:meth:`streamjobs.worker.loop.Worker.running_tasks`, which the
worker keeps for cancels anyway) into the tasks a heartbeat lists and the start of the oldest
running attempt per task type (the "task running too long" alert). Pure: keeping that table
costs an attempt nothing here, and it is read only when a report is written or a scrape comes.
Does not run or time handlers itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from streamjobs.taskcontext import CurrentTask


@dataclass(frozen=True, slots=True)
class RunningTask:
    """One attempt running now; ``started_at`` is Unix seconds."""

    task_id: str
    task: str
    key: str | None
    attempt: int
    started_at: float


def snapshot(running: Iterable[CurrentTask]) -> list[RunningTask]:
    """Every running attempt, oldest first."""
    tasks = [RunningTask(t.task_id, t.task, t.key, t.attempt, t.started_at) for t in running]
    tasks.sort(key=lambda t: t.started_at)
    return tasks


def oldest_by_task(running: Iterable[CurrentTask]) -> dict[str, float]:
    """The start time of the oldest running attempt of each task type."""
    oldest: dict[str, float] = {}
    for task in running:
        started = oldest.get(task.task)
        if started is None or task.started_at < started:
            oldest[task.task] = task.started_at
    return oldest
