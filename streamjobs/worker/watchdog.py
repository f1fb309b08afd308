"""Noticing that a thread the worker owns has died, so the worker stops instead of idling.

Owns the check, run from the poll loop, over every source of long-lived worker threads (the task
executor's pool, the handler runner's event loop): a dead thread means tasks would queue for it
forever while the process stays alive and keeps its partitions ("alive but idle"), so the first
death found becomes a :class:`~streamjobs.errors.WorkerCrashed` for the worker to stop with.
Does not restart threads (a supervisor restarts the whole process: state a dead thread held,
such as a half-run task, is not recoverable in place) or stop the worker itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from streamjobs.errors import WorkerCrashed

DeadThreads = Callable[[], list[str]]  # names of the threads of one source that died


class Watchdog:
    """Checks the sources at most once per ``interval`` seconds (``is_alive`` per thread)."""

    def __init__(self, sources: Sequence[DeadThreads], *, interval: float = 0.2) -> None:
        self._sources = list(sources)
        self._interval = interval
        self._next = 0.0

    def check(self) -> WorkerCrashed | None:
        """The failure to stop with if a thread died, else None."""
        now = time.monotonic()
        if now < self._next:
            return None
        self._next = now + self._interval
        dead = [name for source in self._sources for name in source()]
        if not dead:
            return None
        return WorkerCrashed(
            f"worker thread(s) died: {', '.join(dead)}; stopping so the process is restarted"
        )
