"""The attempts a worker is running now, with their start times.

Owns one small table, filled by the metrics middleware as attempts start and end, and read by
the heartbeat (the tasks a worker reports as running) and by the Prometheus gauge of the oldest
running attempt per task type (the "task running too long" alert). Does not run or time
handlers itself.
"""

from __future__ import annotations

import itertools
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
    """Attempts by a token the caller keeps between :meth:`begin` and :meth:`end`.

    Lock-free: taking a token (``next`` on a count), setting, popping and copying a dict are
    each atomic in CPython, and this sits on every attempt's path.
    """

    def __init__(self) -> None:
        self._running: dict[int, tuple[str, str, str | None, int, float]] = {}
        self._tokens = itertools.count()

    def begin(self, task_id: str, task: str, key: str | None, attempt: int) -> int:
        token = next(self._tokens)
        self._running[token] = (task_id, task, key, attempt, time.time())
        return token

    def end(self, token: int) -> None:
        self._running.pop(token, None)

    def snapshot(self) -> list[RunningTask]:
        """Every running attempt, oldest first."""
        entries = self._running.copy()  # tokens grow with start order
        return [RunningTask(*entries[token]) for token in sorted(entries)]

    def oldest_by_task(self) -> dict[str, float]:
        """The start time of the oldest running attempt of each task type."""
        oldest: dict[str, float] = {}
        for entry in self.snapshot():
            oldest.setdefault(entry.task, entry.started_at)
        return oldest

    def __len__(self) -> int:
        return len(self._running)
