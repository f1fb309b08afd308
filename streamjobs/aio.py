"""The asyncio API: ``AsyncProducer.submit`` and ``await handle.wait()``, never blocking the loop.

Owns :class:`AsyncProducer` (an ``async with`` producer whose ``submit`` takes the same
arguments as :meth:`streamjobs.Producer.submit` and awaits Kafka's confirmation without blocking
the event loop) and :class:`AsyncTaskHandle` (status and wait, offloaded to a thread). Validation
and encoding are :class:`streamjobs.Producer`'s (:meth:`~streamjobs.Producer.prepare_submit`),
called on the loop when they are pure CPU work (microseconds), on a worker thread when they
block; the write is the sync producer's own, in its pipelined mode
(:meth:`~streamjobs.Producer.write_pipelined`: the same records in the same order, reported on
its resident poll thread), whose callbacks resolve asyncio futures on the loop, one
``loop.call_soon_threadsafe`` per burst of delivery reports (:class:`_Wakeups`): hundreds of
submits are in flight at once and share batches, each coroutine waking when its own task is
confirmed. The promise is the sync producer's: a returned handle means Kafka has the task.

Does not run an event loop of its own, nor read the status topic itself
(:mod:`streamjobs.status` does, on a worker thread), nor write cancels itself.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

from streamjobs import statusreads
from streamjobs.cancels import CancelResult
from streamjobs.errors import StreamJobsError, SubmitError
from streamjobs.middleware import Middleware
from streamjobs.models import Task
from streamjobs.producer import Producer
from streamjobs.settings import Settings
from streamjobs.status import StatusView
from streamjobs.taskhandle import TaskHandle

Outcome = TaskHandle | SubmitError


class AsyncTaskHandle:
    """A submitted task, for asyncio code: its id, where it landed, and awaitable reads of its
    status. Each read runs :class:`streamjobs.TaskHandle`'s on a worker thread (one consumer
    per read), so the loop keeps serving while it waits."""

    __slots__ = ("handle",)

    def __init__(self, handle: TaskHandle) -> None:
        self.handle = handle  # the sync handle, for code that is not async

    def __repr__(self) -> str:
        return f"Async{self.handle!r}"

    @property
    def task_id(self) -> str:
        return self.handle.task_id

    @property
    def topic(self) -> str:
        return self.handle.topic

    @property
    def partition(self) -> int:
        return self.handle.partition

    @property
    def offset(self) -> int:
        return self.handle.offset

    async def status(self, timeout: float = 10.0) -> StatusView | None:
        """The latest status on the status topic (None if none was written yet)."""
        return await asyncio.to_thread(self.handle.status, timeout)

    async def wait(self, timeout: float = 60.0) -> Any:
        """The handler's result; TaskFailed if dead-lettered, TaskTimeout if not done in time."""
        return await asyncio.to_thread(self.handle.wait, timeout)

    async def cancel(self, timeout: float = 10.0) -> CancelResult:
        """Cancel the task (:meth:`streamjobs.TaskHandle.cancel`, on a worker thread)."""
        return await asyncio.to_thread(self.handle.cancel, timeout)


class AsyncProducer:
    """Submits tasks from asyncio code; use ``async with AsyncProducer(settings) as producer``.

    One per process (or per event loop) is plenty: concurrent ``submit`` calls share its
    client and their records share batches. ``middleware`` as for :class:`streamjobs.Producer`.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        timeout: timedelta = timedelta(seconds=30),
        middleware: list[Middleware] | None = None,
    ) -> None:
        self.settings = settings
        self._timeout = timeout
        self._middleware = middleware
        self._sync: Producer | None = None
        self._loop_wakeups: _Wakeups | None = None

    async def __aenter__(self) -> AsyncProducer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Create the Kafka client and its poll thread (``async with`` does this)."""
        if self._sync is not None:
            return

        def make() -> Producer:
            sync = Producer(self.settings, timeout=self._timeout, middleware=self._middleware)
            sync.start_pipelining()
            return sync

        self._sync = await asyncio.to_thread(make)

    async def submit(
        self,
        task: Task,
        *,
        key: str | None = None,
        task_id: str | None = None,
        delay: timedelta | None = None,
        eta: datetime | None = None,
        max_attempts: int | None = None,
    ) -> AsyncTaskHandle:
        """Append ``task`` to the queue; returns once Kafka confirmed it. Same key, same order
        (among submits that were awaited in turn). Raises what ``Producer.submit`` raises."""
        sync = self._open()
        if sync.prepare_blocks(task, task_id):
            # an explicit id's status read, or the type's first schema write: off the loop
            prepared = await asyncio.to_thread(
                sync.prepare_submit,
                task,
                key=key,
                task_id=task_id,
                delay=delay,
                eta=eta,
                max_attempts=max_attempts,
            )
        else:  # pure CPU work: no read, no write
            prepared = sync.prepare_submit(
                task, key=key, task_id=task_id, delay=delay, eta=eta, max_attempts=max_attempts
            )
        if isinstance(prepared, TaskHandle):  # a known task id, submitted with these arguments
            return AsyncTaskHandle(prepared)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[TaskHandle | SubmitError] = loop.create_future()
        sync.write_pipelined(prepared, self._wakeups(loop).deliver_to(future))
        # cancelling this await does not unsend the task: the write goes on, and its outcome
        # finds the future cancelled and is dropped
        outcome = await future
        if isinstance(outcome, SubmitError):
            raise outcome
        return AsyncTaskHandle(outcome)

    async def status(self, task_id: str, timeout: float = 10.0) -> StatusView | None:
        """The latest status of any task id (None if unknown), read on a worker thread."""
        sync = self._open()
        return await asyncio.to_thread(sync.status, task_id, timeout)

    async def wait_status(self, task_id: str, timeout: float = 60.0) -> StatusView:
        """The status of any task id once it is final (succeeded or dead-lettered), read on a
        worker thread; TaskTimeout when it is not final within ``timeout`` seconds."""
        return await asyncio.to_thread(statusreads.wait, self.settings, task_id, timeout)

    async def cancel(self, task_id: str) -> CancelResult:
        """Cancel any task id (:meth:`streamjobs.Producer.cancel`, on a worker thread)."""
        sync = self._open()
        return await asyncio.to_thread(sync.cancel, task_id)

    def handle(self, handle: TaskHandle) -> AsyncTaskHandle:
        """An awaitable view of a handle the sync API returned."""
        return AsyncTaskHandle(handle)

    async def close(self) -> None:
        """Wait for every submit in flight to be confirmed, then release the client."""
        sync, self._sync = self._sync, None
        if sync is not None:
            await asyncio.to_thread(sync.close)  # waits for the writes in flight

    def _wakeups(self, loop: asyncio.AbstractEventLoop) -> _Wakeups:
        """The running loop's wake-ups (a producer used from another loop gets new ones: each
        write keeps the ones it was given, so its outcome still reaches its own loop)."""
        wakeups = self._loop_wakeups
        if wakeups is None or wakeups.loop is not loop:
            wakeups = self._loop_wakeups = _Wakeups(loop)
        return wakeups

    def _open(self) -> Producer:
        if self._sync is None:
            raise StreamJobsError(
                "AsyncProducer is not started: use `async with AsyncProducer(...)`"
            )
        return self._sync


class _Wakeups:
    """Outcomes from the poll thread to one event loop, one wake-up per burst.

    The poll thread serves delivery reports in bursts; the first outcome of a burst schedules
    one call on the loop (``call_soon_threadsafe``: a write to the loop's self-pipe) and the
    rest join it, so the loop wakes once and settles the whole list, not once per task."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._ready: list[tuple[asyncio.Future[Outcome], Outcome]] = []

    def deliver_to(self, future: asyncio.Future[Outcome]) -> Callable[[Outcome], None]:
        """The ``done`` of one write: hands its outcome to ``future`` on the loop."""
        return functools.partial(self._deliver, future)

    def _deliver(self, future: asyncio.Future[Outcome], outcome: Outcome) -> None:
        with self._lock:
            self._ready.append((future, outcome))
            if len(self._ready) > 1:  # a wake-up is scheduled already and will take this too
                return
        try:
            self.loop.call_soon_threadsafe(self._settle)
        except RuntimeError:  # the loop is closed: nobody awaits these any more
            with self._lock:
                self._ready.clear()
            raise

    def _settle(self) -> None:
        with self._lock:
            ready, self._ready = self._ready, []
        for future, outcome in ready:
            if not future.done():  # a cancelled submit
                future.set_result(outcome)
