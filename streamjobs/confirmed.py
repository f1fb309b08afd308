"""The confirmed write behind a submit: prepared tasks produced, and Kafka's word on each.

Owns the write order that keeps the status topic honest (every ``queued`` status of a batch is
acknowledged before its task records are produced, so a fast worker's ``succeeded`` can never be
followed, and compacted away, by a late ``queued``), taking back the statuses of tasks Kafka may
not have, the middleware around producing each task record and what it hears after, and serving
delivery reports: one submitting thread at a time polls librdkafka for every waiting thread. Does
not validate or encode tasks (:mod:`streamjobs.producer` does, into :class:`PreparedTask`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

from streamjobs import client
from streamjobs.errors import KafkaUnavailable, SubmitError
from streamjobs.middleware import MiddlewareChain, SubmitContext, SubmitOutcome
from streamjobs.settings import Settings
from streamjobs.taskhandle import TaskHandle

RecordHeaders = Sequence[tuple[str, bytes | None]]


@dataclass(slots=True)
class Pending:
    """One record waiting for its delivery report."""

    error: str | None = None  # "NAME: description" of a failed delivery or refusal
    partition: int = -1
    offset: int = -1
    done: bool = False


@dataclass(slots=True)
class PreparedTask:
    task: str
    task_id: str
    key: str | None
    topic: str
    value: bytes
    status_value: bytes
    headers: list[tuple[str, bytes]]
    submitted_at_ms: int
    delay: timedelta | None = None  # how long a scheduled task waits before it is due
    # every status record of the task carries these (its submission digest)
    status_headers: list[tuple[str, bytes | None]] = field(default_factory=list)
    handle: TaskHandle | None = field(default=None)
    error: SubmitError | None = field(default=None)
    # a replay or redrive: (operation, headers of the original record) for a linked span
    replay_of: tuple[Literal["replay", "redrive"], RecordHeaders] | None = None

    def submit_context(self, queue: str) -> SubmitContext:
        operation, original = self.replay_of or ("submit", ())
        return SubmitContext(
            task_id=self.task_id,
            task=self.task,
            key=self.key,
            queue=queue,
            topic=self.topic,
            operation=operation,
            delay=self.delay,
            origin_headers=tuple(original),
        )


class ConfirmedWriter:
    """Writes prepared tasks of one Producer and waits for Kafka to confirm them."""

    def __init__(
        self,
        settings: Settings,
        producer: Callable[[], client.Producer],
        status_topic: str,
        middleware: MiddlewareChain,
        timeout_s: float,
    ) -> None:
        """``producer`` gives the Producer's client (raising once it is closed)."""
        self.settings = settings
        self._producer = producer
        self._status_topic = status_topic
        self._middleware = middleware
        self._timeout_s = timeout_s
        self._polling = threading.Lock()  # held by the thread serving delivery reports
        self._served = threading.Condition()  # notified after each serving

    def write(self, batch: Sequence[PreparedTask]) -> None:
        """:meth:`_write_each`, raising the first item's SubmitError if any was not confirmed."""
        started = time.monotonic()
        self.write_each(batch)
        self.report(batch, started)
        for item in batch:
            if item.error is not None:
                raise item.error

    def write_each(self, batch: Sequence[PreparedTask]) -> None:
        """The confirmed two-phase write: every ``queued`` status acknowledged, then the tasks.

        Leaves a handle or an error on every item. The statuses go first so that a fast
        worker's ``succeeded`` can never be followed (and compacted away) by a late ``queued``;
        hence when any status of the batch fails, no task of the batch is produced.
        """
        statuses = [Pending() for _ in batch]
        for item, pending in zip(batch, statuses, strict=True):
            self.produce(
                self._status_topic,
                item.task_id.encode(),
                item.status_value,
                item.status_headers,
                pending,
            )
        acked = self._settle(batch, statuses, "queued status of task")
        failed = next((e for e in acked if e is not None), None)
        if failed is not None:
            for item, error in zip(batch, acked, strict=True):
                item.error = error or SubmitError(
                    f"not produced, a status of its batch failed: {failed}", task_id=item.task_id
                )
            self._withdraw([item for item, error in zip(batch, acked, strict=True) if not error])
            return
        records = [Pending() for _ in batch]
        hooks = self._middleware.for_submit()  # once per batch: None when no middleware wraps
        for item, pending in zip(batch, records, strict=True):
            key = (item.key or item.task_id).encode()
            if hooks is None:
                self.produce(item.topic, key, item.value, [], pending)
                continue
            ctx = item.submit_context(self.settings.queue)
            with hooks.submit(ctx):  # middleware may add headers (trace context)
                self.produce(item.topic, key, item.value, ctx.headers, pending)
        delivered = self._settle(batch, records, "task")
        for item, pending, error in zip(batch, records, delivered, strict=True):
            item.error = error
            if error is None:
                item.handle = TaskHandle(
                    self.settings,
                    item.task_id,
                    item.topic,
                    pending.partition,
                    pending.offset,
                    item.submitted_at_ms,
                )
        # only the unconfirmed: a confirmed task will run, and its statuses must stay
        self._withdraw([item for item in batch if item.error is not None])

    def report(self, batch: Sequence[PreparedTask], started: float) -> None:
        """Tell the middleware which records Kafka confirmed, and how long the write took."""
        if not self._middleware.observes_submits:
            return
        duration = timedelta(seconds=time.monotonic() - started)
        for item in batch:
            error = None if item.error is None else str(item.error)
            outcome = SubmitOutcome(item.error is None, duration, error)
            self._middleware.submitted(item.submit_context(self.settings.queue), outcome)

    def _withdraw(self, items: Sequence[PreparedTask]) -> None:
        """Best effort: no ``queued`` status for a task Kafka may not have (tombstones)."""
        if not items:
            return
        for item in items:
            self.produce(self._status_topic, item.task_id.encode(), None, [], Pending())
        self._producer().flush(5.0)

    def produce(
        self,
        topic: str,
        key: bytes,
        value: bytes | None,
        headers: Sequence[tuple[str, str | bytes | None]],
        pending: Pending,
    ) -> None:
        """Produce one record; its delivery report (or a refusal to queue it) lands on
        ``pending``."""

        def on_delivery(report: client.Delivery) -> None:
            pending.error = report.error
            pending.partition, pending.offset = report.partition, report.offset
            pending.done = True

        try:
            while not self._producer().produce(
                topic, value, key, headers=headers, on_delivery=on_delivery
            ):
                self._producer().poll(0.05)  # local queue full: serve deliveries, then try again
        except KafkaUnavailable as exc:  # refused before it was queued
            pending.error, pending.done = str(exc), True

    def _settle(
        self, batch: Sequence[PreparedTask], pendings: Sequence[Pending], what: str
    ) -> list[SubmitError | None]:
        """Per item, None once Kafka confirmed its record, else why not."""
        self.wait(pendings)
        return [
            failure(pending, f"{what} {item.task_id}", self._timeout_s, item.task_id)
            for item, pending in zip(batch, pendings, strict=True)
        ]

    def wait(self, pendings: Sequence[Pending]) -> None:
        """Serve delivery reports until every one of ``pendings`` has its report, or the
        deadline (librdkafka's own ``message.timeout.ms`` plus a margin) passes."""
        deadline = time.monotonic() + self._timeout_s + 5
        for pending in pendings:
            while not pending.done and time.monotonic() <= deadline:
                self._serve_or_wait(pending)

    def _serve_or_wait(self, pending: Pending) -> None:
        """One submitting thread at a time polls librdkafka, serving every thread's delivery
        reports, and then wakes the others. Threads each polling for themselves would find
        their report served by another thread's poll and only see it when their own poll timed
        out: 8 threads sharing a Producer were slower than one."""
        if self._polling.acquire(blocking=False):
            try:
                self._producer().poll(0.01)
            finally:
                self._polling.release()
            with self._served:
                self._served.notify_all()
            return
        with self._served:
            if not pending.done:
                self._served.wait(0.01)


def failure(
    pending: Pending, what: str, timeout_s: float, task_id: str | None
) -> SubmitError | None:
    if not pending.done:
        return SubmitError(f"{what} not confirmed within {timeout_s}s", task_id=task_id)
    if pending.error is not None:
        return SubmitError(f"record not confirmed by Kafka: {pending.error}", task_id=task_id)
    return None


def outcome(item: PreparedTask) -> TaskHandle | SubmitError:
    if item.handle is not None:
        return item.handle
    assert item.error is not None, "a written item has a handle or an error"
    return item.error
