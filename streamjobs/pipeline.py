"""The pipelined confirmed write: many submits in flight at once, each reported by callback.

Owns :class:`SubmitPipeline`, a poll thread over the producer's librdkafka client that carries
each task through the same two confirmed steps as :meth:`streamjobs.Producer.submit` (its
``queued`` status acknowledged, then its task record acknowledged) without anyone waiting in
between: a submitter hands a prepared task over and is called back, on the poll thread, once the
task has its handle or its error. Any number of tasks are in flight at once, so their records
share librdkafka's batches. The write order and what a failure leaves behind are the sync
producer's (a failed task's ``queued`` status is taken back, best effort).

Does not validate or encode tasks (:class:`streamjobs.Producer` does, and builds the handle's
fields), nor know about asyncio (:mod:`streamjobs.aio` turns the callback into a future).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from streamjobs import client
from streamjobs.client.protocols import ProduceHeaders
from streamjobs.errors import KafkaUnavailable, StreamJobsError, SubmitError
from streamjobs.middleware import MiddlewareChain, SubmitContext
from streamjobs.settings import Settings
from streamjobs.taskhandle import TaskHandle

_log = logging.getLogger(__name__)

#: how long the idle poll thread blocks in librdkafka's poll before looking at its queues again
_IDLE_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class PipelineItem:
    """One prepared task: its records' bytes and where they go (built by the producer)."""

    task_id: str
    topic: str
    record_key: bytes
    value: bytes
    status_value: bytes
    submitted_at_ms: int
    #: every status record of the task carries these (its submission digest)
    status_headers: tuple[tuple[str, bytes | None], ...]
    #: wraps producing the task record (tracing adds its headers there); None: no middleware
    wrap: Callable[[Callable[[list[tuple[str, bytes]]], None]], None] | None


Done = Callable[[TaskHandle | SubmitError], None]


@dataclass(slots=True)
class _Flight:
    item: PipelineItem
    done: Done
    context: contextvars.Context
    step: str = "queued status"


class SubmitPipeline:
    """Writes prepared tasks with pipelined confirmations; thread-safe :meth:`write`."""

    def __init__(self, settings: Settings, producer: client.Producer, status_topic: str) -> None:
        self._settings = settings
        self._producer = producer
        self._status_topic = status_topic
        self._ready: deque[_Flight] = deque()  # queued status acknowledged: produce the task
        self._blocked: deque[tuple[_Flight, bool]] = deque()  # local queue was full: retry
        self._in_flight = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="streamjobs-submit", daemon=True)
        self._thread.start()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def write(self, item: PipelineItem, done: Done) -> None:
        """Start writing ``item``; ``done`` gets its handle or SubmitError, on the poll thread.

        The caller's context variables (the current span, for one) are kept for producing the
        task record, which happens on the poll thread.
        """
        if self._stopping.is_set():
            raise StreamJobsError("producer is closed")
        flight = _Flight(item, done, contextvars.copy_context())
        with self._lock:
            self._in_flight += 1
        self._produce(flight, task=False)

    def close(self, timeout: float) -> None:
        """Wait up to ``timeout`` for every task in flight to be reported, then stop polling."""
        deadline = time.monotonic() + timeout
        while self._in_flight and time.monotonic() < deadline:
            time.sleep(0.01)  # the poll thread is serving the last reports
        self._stopping.set()
        self._thread.join()

    # -- the poll thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._producer.poll(0 if self._ready or self._blocked else _IDLE_POLL_S)
            for _ in range(len(self._blocked)):
                flight, task = self._blocked.popleft()
                self._produce(flight, task=task)
            while self._ready:
                flight = self._ready.popleft()
                flight.context.run(self._produce_task, flight)

    def _produce_task(self, flight: _Flight) -> None:
        if flight.item.wrap is None:
            self._produce(flight, task=True)
            return
        flight.item.wrap(lambda headers: self._produce(flight, task=True, headers=headers))

    def _produce(
        self, flight: _Flight, *, task: bool, headers: ProduceHeaders | None = None
    ) -> None:
        item = flight.item
        if task:
            topic, key, value = item.topic, item.record_key, item.value
            flight.step = "task"
        else:
            topic, key, value = self._status_topic, item.task_id.encode(), item.status_value
            headers = list(item.status_headers)

        def on_delivery(report: client.Delivery) -> None:
            self._delivered(flight, task, report)

        try:
            queued = self._producer.produce(
                topic, value, key, headers=headers, on_delivery=on_delivery
            )
        except KafkaUnavailable as exc:  # refused before it was queued
            self._finish(flight, SubmitError(f"{flight.step} refused: {exc}", task_id=item.task_id))
            return
        if not queued:  # local queue full: the poll thread tries again after serving reports
            self._blocked.append((flight, task))

    def _delivered(self, flight: _Flight, task: bool, report: client.Delivery) -> None:
        item = flight.item
        if report.error is not None:
            message = f"{flight.step} of task {item.task_id} not confirmed by Kafka: {report.error}"
            self._finish(flight, SubmitError(message, task_id=item.task_id))
        elif not task:
            self._ready.append(flight)  # produced by the poll loop once this poll returns
        else:
            handle = TaskHandle(
                self._settings,
                item.task_id,
                item.topic,
                report.partition,
                report.offset,
                item.submitted_at_ms,
            )
            self._finish(flight, handle)

    def _finish(self, flight: _Flight, outcome: TaskHandle | SubmitError) -> None:
        if isinstance(outcome, SubmitError) and flight.step == "task":
            # best effort: no ``queued`` status for a task Kafka may not have (a tombstone)
            with contextlib.suppress(KafkaUnavailable):
                self._producer.produce(self._status_topic, None, flight.item.task_id.encode())
        with self._lock:
            self._in_flight -= 1
        try:
            flight.done(outcome)
        except Exception:  # a callback's failure must not stop the poll thread
            _log.exception("submit callback of task %s failed", flight.item.task_id)


def wrap_with(
    hooks: MiddlewareChain | None, ctx: SubmitContext
) -> Callable[[Callable[[list[tuple[str, bytes]]], None]], None] | None:
    """A :attr:`PipelineItem.wrap` producing the task record inside the submit hooks, with the
    headers they add (the trace context); None when no middleware wraps submits."""
    if hooks is None:
        return None
    chain = hooks

    def wrap(produce: Callable[[list[tuple[str, bytes]]], None]) -> None:
        with chain.submit(ctx):
            produce(list(ctx.headers))

    return wrap
