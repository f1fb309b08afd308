"""The task a handler is running: ``streamjobs.current_task()``.

Owns :class:`CurrentTask` (the running attempt's task id, type, key, attempt, generation and
start time, and whether the task was cancelled while it runs) and the context variable the
worker sets around each handler call. The variable follows the handler into its asyncio task
and into the thread of a timed sync call (both start from a copy of the caller's context), so a
sync handler can check ``current_task().cancelled``, wait on it, or call
``raise_if_cancelled()`` between steps of long work. Does not decide what a cancel does to a
task (:mod:`streamjobs.worker.cancels` and :mod:`streamjobs.worker.handler_call` do) and never
touches Kafka.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from streamjobs.errors import Cancelled, StreamJobsError

_log = logging.getLogger(__name__)


# guards every CurrentTask's hooks and event: cancels are rare, and one lock costs a task
# nothing to create (a Lock and an Event per task would, on every attempt)
_LOCK = threading.Lock()


class CurrentTask:
    """The task of the handler call running in this context (``started_at``: when the call was
    registered, Unix seconds). Thread-safe."""

    __slots__ = (
        "_cancelled",
        "_event",
        "_hooks",
        "attempt",
        "generation",
        "key",
        "started_at",
        "task",
        "task_id",
    )

    def __init__(
        self, task_id: str, task: str, key: str | None, attempt: int, generation: int = 0
    ) -> None:
        self.task_id = task_id
        self.task = task
        self.key = key
        self.attempt = attempt
        self.generation = generation
        self.started_at = time.time()  # Unix seconds: what heartbeats report as its start
        self._cancelled = False
        self._event: threading.Event | None = None  # made by the first wait_cancelled
        self._hooks: list[Callable[[], None]] | None = None

    def __repr__(self) -> str:
        state = " cancelled" if self.cancelled else ""
        return f"CurrentTask({self.task_id!r}, {self.task}, attempt {self.attempt}{state})"

    @property
    def cancelled(self) -> bool:
        """True once ``cancel`` was requested for this task while it runs."""
        return self._cancelled

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Block up to ``timeout`` seconds for a cancel; True if the task is cancelled. A sync
        handler that pauses between steps can pause here instead of ``time.sleep``."""
        with _LOCK:
            if self._cancelled:
                return True
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        return event.wait(timeout)

    def raise_if_cancelled(self) -> None:
        """Raise :class:`~streamjobs.errors.Cancelled` if the task was cancelled: the attempt
        then ends ``cancelled``, never retried."""
        if self._cancelled:
            raise Cancelled(f"task {self.task_id} was cancelled while running")

    # -- the worker's side ---------------------------------------------------------------------

    def on_cancel(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` when the task is cancelled (at once if it already is)."""
        with _LOCK:
            if not self._cancelled:
                if self._hooks is None:
                    self._hooks = []
                self._hooks.append(hook)
                return
        _call(hook)

    def cancel(self) -> None:
        """Mark the task cancelled and run the hooks (once); from any thread."""
        with _LOCK:
            if self._cancelled:
                return
            self._cancelled = True
            hooks, self._hooks = self._hooks or [], None
            if self._event is not None:
                self._event.set()
        for hook in hooks:
            _call(hook)


def _call(hook: Callable[[], None]) -> None:
    try:
        hook()
    except Exception:  # a closed event loop, say: the cancel flag is set all the same
        _log.warning("cancel hook failed", exc_info=True)


_CURRENT: contextvars.ContextVar[CurrentTask | None] = contextvars.ContextVar(
    "streamjobs_current_task", default=None
)


def current_task() -> CurrentTask:
    """The task whose handler is running in this context; StreamJobsError outside a handler
    (or in a thread the handler started without :func:`contextvars.copy_context`)."""
    task = _CURRENT.get()
    if task is None:
        raise StreamJobsError("current_task() called outside a task handler")
    return task


def running_task() -> CurrentTask | None:
    """The task running in this context, or None."""
    return _CURRENT.get()


@contextmanager
def running(task: CurrentTask) -> Iterator[CurrentTask]:
    """Make ``task`` current for the block (the handler call)."""
    token = _CURRENT.set(task)
    try:
        yield task
    finally:
        _CURRENT.reset(token)


#: For the worker's hot path (no generator per call): ``reset(set(task))`` around a call.
set_current = _CURRENT.set
reset_current = _CURRENT.reset
