"""The confirmed write behind a submit: prepared tasks produced, and Kafka's word on each.

Owns the one decision of write order, for every way a task is queued:

* **A new task** (``submit``, ``submit_many``, the asyncio API): its *submitted* record (the
  ``queued``/``scheduled`` fact, keyed by task id) goes to the compacted ``<prefix>.submitted``
  topic and its task record to the queue, produced together and confirmed together: one round
  trip. Nothing else ever writes the submitted topic (but tombstones), and readers rank any
  status-topic record above a submitted record (:func:`streamjobs.status.merged`), so however
  late the submitted record lands, even after a fast worker's ``succeeded``, it can neither hide
  nor compact away that status.
* **A re-submission** (replay, dead-letter redrive): a new generation of a task that has
  statuses already, so its ``queued`` must outrank them on the status topic itself: every status
  of the batch is acknowledged before its tasks are produced (two round trips; bulk operations).

Also owns taking back the queued fact of a task Kafka may not have (tombstones), the middleware
around producing each task record and what it hears after, and the pipelined mode of the
asyncio API (:meth:`ConfirmedWriter.write_pipelined`: the same records, confirmed through a
callback on the resident poll thread). Waiting for reports is :mod:`streamjobs.deliveries`'.
Does not validate or encode tasks (:mod:`streamjobs.submission` does, into :class:`PreparedTask`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

from streamjobs import client
from streamjobs.deliveries import Deliveries, Pending
from streamjobs.errors import KafkaUnavailable, SubmitError
from streamjobs.middleware import MiddlewareChain, SubmitContext, SubmitOutcome
from streamjobs.settings import Settings
from streamjobs.taskhandle import TaskHandle
from streamjobs.topics import QueueTopics

RecordHeaders = Sequence[tuple[str, bytes | None]]
Done = Callable[[TaskHandle | SubmitError], None]
_log = logging.getLogger(__name__)


@dataclass(slots=True)
class PreparedTask:
    task: str
    task_id: str
    key: str | None
    topic: str
    value: bytes
    status_value: bytes  # the queued (or scheduled) record: submitted topic, or status topic
    submitted_at_ms: int
    delay: timedelta | None = None  # how long a scheduled task waits before it is due
    # every status record of the task carries these (its submission digest)
    status_headers: list[tuple[str, bytes | None]] = field(default_factory=list)
    handle: TaskHandle | None = field(default=None)
    error: SubmitError | None = field(default=None)
    # a replay or redrive: (operation, headers of the original record) for a linked span
    replay_of: tuple[Literal["replay", "redrive"], RecordHeaders] | None = None

    @property
    def record_key(self) -> bytes:
        return (self.key or self.task_id).encode()

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


class _Flight:
    """A pipelined write: the two records of one task, and who hears the outcome. Each record's
    report calls it (its Pendings' ``then``: no closure per write)."""

    __slots__ = (
        "done",
        "item",
        "reports",
        "started",
        "submitted",
        "task",
        "task_headers",
        "writer",
    )

    def __init__(self, writer: ConfirmedWriter, item: PreparedTask, done: Done) -> None:
        self.writer, self.item, self.done = writer, item, done
        self.started = time.monotonic()
        self.submitted, self.task = Pending(then=self), Pending(then=self)
        self.task_headers: Sequence[tuple[str, bytes]] = ()
        self.reports = 0

    def __call__(self) -> None:
        self.writer._reported(self)


class ConfirmedWriter:
    """Writes prepared tasks of one Producer and waits for Kafka to confirm them."""

    def __init__(
        self,
        settings: Settings,
        producer: Callable[[], client.Producer],
        topics: QueueTopics,
        middleware: MiddlewareChain,
        timeout_s: float,
    ) -> None:
        """``producer`` gives the Producer's client (raising once it is closed)."""
        self.settings = settings
        self._producer = producer
        self._topics = topics
        self._middleware = middleware
        self._timeout_s = timeout_s
        self.deliveries = Deliveries(producer)
        self._lock = threading.Lock()  # pipelined bookkeeping: reports may come on two threads
        self._blocked: deque[tuple[_Flight, bool]] = deque()  # (flight, task?): queue was full
        self._in_flight = 0

    # -- new tasks: one round trip -----------------------------------------------------------

    def write(self, batch: Sequence[PreparedTask]) -> None:
        """:meth:`write_each`, raising the first item's SubmitError if any was not confirmed."""
        started = time.monotonic()
        self.write_each(batch)
        self.report(batch, started)
        for item in batch:
            if item.error is not None:
                raise item.error

    def write_each(self, batch: Sequence[PreparedTask]) -> None:
        """New tasks: each one's submitted record and task record produced together, every
        delivery report of the batch awaited once. Leaves a handle or an error on every item."""
        hooks = self._middleware.for_submit()  # once per batch: None when no middleware wraps
        pairs = []
        for item in batch:
            submitted, task = Pending(), Pending()
            self._produce_task(item, hooks, task)  # first: see write_pipelined
            self.produce(
                self._topics.submitted,
                item.task_id.encode(),
                item.status_value,
                item.status_headers,
                submitted,
            )
            pairs.append((submitted, task))
        self.wait([pending for pair in pairs for pending in pair])
        for item, (submitted, task) in zip(batch, pairs, strict=True):
            self._settle_new(item, submitted, task)

    def _settle_new(self, item: PreparedTask, submitted: Pending, task: Pending) -> None:
        """The outcome of a new task from its two reports. Only the task record decides it: a
        confirmed task will run; an unconfirmed one is an error, and its queued fact is taken
        back. A confirmed task whose submitted record failed gets it written again (late is
        harmless: any status of the worker outranks it)."""
        if not task.done or task.error is not None:
            item.error = failure(task, f"task {item.task_id}", self._timeout_s, item.task_id)
            self._withdraw(self._topics.submitted, [item], confirm=False)
            return
        item.handle = self._handle(item, task)
        if not submitted.done or submitted.error is not None:
            _log.warning(
                "task %s is queued, but its submitted record was not confirmed (%s): writing "
                "it again",
                item.task_id,
                submitted.error or "no report in time",
            )
            again = Pending()
            again.then = lambda: _log_unconfirmed(item.task_id, again)
            key = item.task_id.encode()
            self._once(self._topics.submitted, key, item.status_value, item.status_headers, again)

    # -- re-submissions: statuses first ------------------------------------------------------

    def write_statuses_first(self, batch: Sequence[PreparedTask]) -> None:
        """Re-submissions: every ``queued`` status acknowledged on the status topic, then the
        tasks. Leaves a handle or an error on every item.

        A re-submission is a new generation of a task with statuses already: its ``queued``
        belongs on the status topic, where only acknowledging it first keeps a fast worker's
        ``succeeded`` from being followed (and compacted away) by it; hence when any status of
        the batch fails, no task of the batch is produced.
        """
        statuses = [Pending() for _ in batch]
        for item, pending in zip(batch, statuses, strict=True):
            key = item.task_id.encode()
            self.produce(self._topics.status, key, item.status_value, item.status_headers, pending)
        acked = self._settle(batch, statuses, "queued status of task")
        failed = next((e for e in acked if e is not None), None)
        if failed is not None:
            for item, error in zip(batch, acked, strict=True):
                item.error = error or SubmitError(
                    f"not produced, a status of its batch failed: {failed}", task_id=item.task_id
                )
            confirmed = [item for item, error in zip(batch, acked, strict=True) if not error]
            self._withdraw(self._topics.status, confirmed, confirm=True)
            return
        records = [Pending() for _ in batch]
        hooks = self._middleware.for_submit()
        for item, pending in zip(batch, records, strict=True):
            self._produce_task(item, hooks, pending)
        delivered = self._settle(batch, records, "task")
        for item, pending, error in zip(batch, records, delivered, strict=True):
            item.error = error
            if error is None:
                item.handle = self._handle(item, pending)
        # only the unconfirmed: a confirmed task will run, and its statuses must stay
        unconfirmed = [item for item in batch if item.error is not None]
        self._withdraw(self._topics.status, unconfirmed, confirm=True)

    # -- new tasks, pipelined (asyncio) ------------------------------------------------------

    def start_pipelining(self) -> None:
        """Serve delivery reports on a resident thread, for :meth:`write_pipelined`."""
        self.deliveries.start(self._retry_blocked)

    def stop_pipelining(self, timeout: float) -> None:
        """Wait up to ``timeout`` for every pipelined write to be reported, then stop the
        resident thread."""
        deadline = time.monotonic() + timeout
        while self._in_flight and time.monotonic() < deadline:
            time.sleep(0.01)  # the resident thread is serving the last reports
        self.deliveries.stop()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def write_pipelined(self, item: PreparedTask, done: Done) -> None:
        """:meth:`write_each` of one new task without waiting: never blocks; ``done`` gets its
        handle or SubmitError on the resident poll thread (:meth:`start_pipelining`)."""
        flight = _Flight(self, item, done)
        # The task record first: librdkafka sends each partition's records in a request of its
        # own and the broker answers one connection's requests in turn, so the record produced
        # first is appended one request sooner, and a worker can start the task that much
        # earlier. Its submitted record may land after the worker's ``running``: harmless.
        hooks = self._middleware.for_submit()
        if hooks is None:
            self._try_flight(flight, task=True)  # raises only when the producer is closed
        else:
            ctx = item.submit_context(self.settings.queue)
            with hooks.submit(ctx):  # middleware may add headers (trace context)
                flight.task_headers = list(ctx.headers)  # kept, should the local queue be full
                self._try_flight(flight, task=True)
        with self._lock:  # counted before its second record is queued: it cannot be done yet
            self._in_flight += 1
        self._try_flight(flight, task=False)

    def _try_flight(self, flight: _Flight, *, task: bool) -> None:
        item = flight.item
        if task:
            sent = self._try(
                item.topic, item.record_key, item.value, flight.task_headers, flight.task
            )
        else:
            topic, key = self._topics.submitted, item.task_id.encode()
            sent = self._try(topic, key, item.status_value, item.status_headers, flight.submitted)
        if not sent:  # local queue full: the resident thread tries again after serving reports
            self._blocked.append((flight, task))

    def _retry_blocked(self) -> None:
        for _ in range(len(self._blocked)):
            flight, task = self._blocked.popleft()
            self._try_flight(flight, task=task)

    def _reported(self, flight: _Flight) -> None:
        with self._lock:
            flight.reports += 1
            if flight.reports < 2:
                return
            self._in_flight -= 1
        item = flight.item
        self._settle_new(item, flight.submitted, flight.task)
        if self._middleware.observes_submits:
            self.report((item,), flight.started)
        try:
            flight.done(item.handle or outcome(item))
        except Exception:  # a callback's failure must not stop the poll thread
            _log.exception("submit callback of task %s failed", item.task_id)

    # -- shared ------------------------------------------------------------------------------

    def report(self, batch: Sequence[PreparedTask], started: float) -> None:
        """Tell the middleware which records Kafka confirmed, and how long the write took."""
        if not self._middleware.observes_submits:
            return
        duration = timedelta(seconds=time.monotonic() - started)
        for item in batch:
            error = None if item.error is None else str(item.error)
            outcome = SubmitOutcome(item.error is None, duration, error)
            self._middleware.submitted(item.submit_context(self.settings.queue), outcome)

    def _handle(self, item: PreparedTask, task: Pending) -> TaskHandle:
        return TaskHandle(
            self.settings,
            item.task_id,
            item.topic,
            task.partition,
            task.offset,
            item.submitted_at_ms,
        )

    def _produce_task(
        self, item: PreparedTask, hooks: MiddlewareChain | None, pending: Pending
    ) -> None:
        if hooks is None:
            self.produce(item.topic, item.record_key, item.value, [], pending)
            return
        ctx = item.submit_context(self.settings.queue)
        with hooks.submit(ctx):  # middleware may add headers (trace context)
            self.produce(item.topic, item.record_key, item.value, ctx.headers, pending)

    def _withdraw(self, topic: str, items: Sequence[PreparedTask], *, confirm: bool) -> None:
        """Best effort: no queued fact for a task Kafka may not have (tombstones on ``topic``);
        ``confirm``: wait a moment for them (never from the resident thread)."""
        if not items:
            return
        for item in items:
            self._once(topic, item.task_id.encode(), None, [], Pending())
        if confirm:
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
        ``pending``. A full local queue is waited out, serving reports meanwhile."""
        while not self._try(topic, key, value, headers, pending):
            self.deliveries.serve_once(0.05)

    def _once(
        self,
        topic: str,
        key: bytes,
        value: bytes | None,
        headers: Sequence[tuple[str, str | bytes | None]],
        pending: Pending,
    ) -> None:
        """Best effort, never waiting (delivery callbacks call this): a full local queue drops
        the record, with a warning."""
        if not self._try(topic, key, value, headers, pending):
            _log.warning("local queue full: record for %s of %s not written", topic, key)

    def _try(
        self,
        topic: str,
        key: bytes,
        value: bytes | None,
        headers: Sequence[tuple[str, str | bytes | None]],
        pending: Pending,
    ) -> bool:
        """Queue one record; False when the local queue is full."""
        try:
            return self._producer().produce(
                topic, value, key, headers=headers, on_delivery=pending.report
            )
        except KafkaUnavailable as exc:  # refused before it was queued
            pending.refuse(str(exc))
            return True

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
        """Until every one of ``pendings`` has its report, or the deadline (librdkafka's own
        ``message.timeout.ms`` plus a margin) passes."""
        self.deliveries.wait(pendings, time.monotonic() + self._timeout_s + 5)


def _log_unconfirmed(task_id: str, pending: Pending) -> None:
    if pending.error is not None:
        _log.warning(
            "task %s: its submitted record failed again (%s): the task id answers no status "
            "until a worker runs it",
            task_id,
            pending.error,
        )


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
