"""The attempts a worker is running now, with their start times.

Owns one small thread-safe table, filled by the metrics middleware as attempts start and end,
and read by the heartbeat (the tasks a worker reports as running) and by the Prometheus gauge of
the oldest running attempt per task type (the "task running too long" alert). Does not run or
time handlers itself.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RunningTask:
    """One attempt running now; ``started_at`` is Unix seconds."""

    task_id: str
    task: str
    key: str | None
    attempt: int
    started_at: float


class RunningTasks:
    """Attempts by a token the caller keeps between :meth:`begin` and :meth:`end`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, RunningTask] = {}
        self._next = 0

    def begin(self, task_id: str, task: str, key: str | None, attempt: int) -> int:
        entry = RunningTask(task_id, task, key, attempt, time.time())
        with self._lock:
            self._next += 1
            self._running[self._next] = entry
            return self._next

    def end(self, token: int) -> None:
        with self._lock:
            self._running.pop(token, None)

    def snapshot(self) -> list[RunningTask]:
        """Every running attempt, oldest first."""
        with self._lock:
            entries = list(self._running.values())  # insertion order is start order
        return entries

    def oldest_by_task(self) -> dict[str, float]:
        """The start time of the oldest running attempt of each task type."""
        oldest: dict[str, float] = {}
        for entry in self.snapshot():
            oldest.setdefault(entry.task, entry.started_at)
        return oldest

    def __len__(self) -> int:
        return len(self._running)
