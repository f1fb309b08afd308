"""Cancellations in a worker: following ``<prefix>.cancels`` and acting on what it says.

Owns :class:`CancelBook` (this queue's cancelled task ids with the generation each cancel applies
to, and the handler calls running now, so a cancel that arrives while one runs reaches it),
:class:`CancelFollower` (a thread with a reader of its own, assigned the topic's one partition
from its beginning: no group, no commits; the worker starts taking tasks only once it has read
the topic to its end, so cancellations survive every worker restarting, and new ones arrive
within a fetch, ~0.1-0.3 s), and :func:`settle_cancelled`: the ``cancelled`` status that settles
a task record like any other outcome (its offset completes once Kafka has the status).

Memory: a cancel is kept while the topic keeps it, ``max_future`` + ``status_retention`` after it
was requested (37 days by default; by then its task was reached, since no task waits longer
than ``max_future``), and then forgotten, as the broker deletes it; only this queue's cancels are
kept, about 200 bytes each (a million cancels in that window: ~200 MB).

Does not decide where to look (the poll loop checks each record before routing it, tier records
included, and the handler call checks again right before the handler starts:
:mod:`streamjobs.worker.loop`, :mod:`streamjobs.worker.handler_call`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from streamjobs import client, status
from streamjobs.cancels import CancelRequest, decode_cancel
from streamjobs.envelope import Envelope
from streamjobs.errors import (
    Cancelled,
    DecodeError,
    KafkaUnavailable,
    StreamJobsError,
    TopicError,
    error_text,
)
from streamjobs.middleware import Heard
from streamjobs.models import TaskState
from streamjobs.settings import Settings
from streamjobs.taskcontext import CurrentTask, running
from streamjobs.topics import queue_topics
from streamjobs.worker.partitions import Partition
from streamjobs.worker.settle import Settler

_log = logging.getLogger(__name__)
_CATCH_UP_TIMEOUT_S = 30.0
_FORGET_EVERY_S = 600.0


class CancelBook:
    """Cancelled task ids and running handler calls of one queue. Thread-safe."""

    def __init__(self, settings: Settings) -> None:
        self._queue = settings.queue
        self._keep_ms = int(
            (settings.max_future + settings.status_retention).total_seconds() * 1000
        )
        self._lock = threading.Lock()
        self._cancels: dict[str, CancelRequest] = {}
        self._running: dict[str, list[CurrentTask]] = {}

    def __len__(self) -> int:
        return len(self._cancels)

    def add(self, request: CancelRequest) -> None:
        """Note a cancel; a handler call of its task running now is cancelled."""
        if request.queue != self._queue:
            return  # another queue's task: never here
        with self._lock:
            known = self._cancels.get(request.task_id)
            if known is None or request.generation >= known.generation:
                self._cancels[request.task_id] = request
            hit = [
                task
                for task in self._running.get(request.task_id, ())
                if request.applies_to(task.generation)
            ]
        for task in hit:
            _log.info("cancelling running task %s (attempt %d)", task.task_id, task.attempt)
            task.cancel()

    def remove(self, task_id: str) -> None:
        """A tombstone: the cancel was withdrawn (purged)."""
        with self._lock:
            self._cancels.pop(task_id, None)

    def cancelled(self, envelope: Envelope) -> CancelRequest | None:
        """The cancel that applies to the task in ``envelope``, if any."""
        request = self._cancels.get(envelope.task_id)  # one dict read: no lock needed
        if request is not None and request.applies_to(envelope.generation):
            return request
        return None

    def forget_expired(self, now_ms: int) -> int:
        """Drop cancels older than the topic keeps them; returns how many."""
        oldest = now_ms - self._keep_ms
        with self._lock:
            old = [k for k, r in self._cancels.items() if r.requested_at_ms < oldest]
            for task_id in old:
                del self._cancels[task_id]
        return len(old)

    def begin(self, envelope: Envelope) -> CurrentTask:
        """Before one handler call: a cancel arriving from now on reaches the returned task,
        until :meth:`end`. Raises Cancelled when the task was cancelled already: registered and
        checked under one lock, so a cancel that arrives between the poll loop's check and the
        handler's start still stops it."""
        task = CurrentTask(
            envelope.task_id, envelope.task, envelope.key, envelope.attempt, envelope.generation
        )
        with self._lock:
            request = self.cancelled(envelope)
            if request is None:
                calls = self._running.get(task.task_id)
                if calls is None:
                    self._running[task.task_id] = [task]
                else:
                    calls.append(task)
        if request is not None:
            raise Cancelled(f"task {task.task_id} was cancelled before its handler started")
        return task

    def running(self) -> list[CurrentTask]:
        """The handler calls running now (between :meth:`begin` and :meth:`end`)."""
        with self._lock:
            return [task for calls in self._running.values() for task in calls]

    def end(self, task: CurrentTask) -> None:
        """After the handler call :meth:`begin` returned ``task`` for."""
        with self._lock:
            calls = self._running[task.task_id]
            if len(calls) == 1:
                del self._running[task.task_id]
            else:
                calls.remove(task)

    @contextmanager
    def attempt(self, envelope: Envelope) -> Iterator[CurrentTask]:
        """:meth:`begin`, the task current in the block, :meth:`end`."""
        task = self.begin(envelope)
        try:
            with running(task):
                yield task
        finally:
            self.end(task)


class CancelFollower:
    """Follows the cancels topic into a :class:`CancelBook`, on a thread of its own."""

    def __init__(self, settings: Settings, clients: client.Clients) -> None:
        self.book = CancelBook(settings)
        self._topic = queue_topics(settings).cancels
        self._clients = clients
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: client.Consumer | None = None

    def start(self, timeout: float = _CATCH_UP_TIMEOUT_S) -> None:
        """Read the topic to its end (KafkaUnavailable if that takes over ``timeout``), then
        follow it on a daemon thread."""
        consumer = self._clients.reader()
        try:
            low, high = self._watermarks(consumer, timeout)
            consumer.assign([client.TopicPartition(self._topic, 0, client.OFFSET_BEGINNING)])
            if high > low:  # else there is nothing to read (and no position to compare)
                self._catch_up(consumer, high, time.monotonic() + timeout)
        except BaseException:
            consumer.close()
            raise
        self.book.forget_expired(status.now_ms())
        self._consumer = consumer
        self._thread = threading.Thread(target=self._follow, name="streamjobs-cancels", daemon=True)
        self._thread.start()
        _log.info("following %s: %d cancelled tasks of this queue", self._topic, len(self.book))

    def _watermarks(self, consumer: client.Consumer, timeout: float) -> tuple[int, int]:
        try:
            return consumer.watermarks_when_ready(self._topic, 0, timeout)
        except KafkaUnavailable as exc:
            if "UNKNOWN_PARTITION" not in str(exc) and "UNKNOWN_TOPIC" not in str(exc):
                raise
            message = f"{self._topic} is missing (run `streamjobs topics ensure`): {exc}"
            raise TopicError(message) from exc

    def _catch_up(self, consumer: client.Consumer, end: int, deadline: float) -> None:
        position = client.TopicPartition(self._topic, 0)
        while consumer.positions([position])[0].offset < end:
            if time.monotonic() > deadline:
                raise StreamJobsError(f"could not read {self._topic} to its end (offset {end})")
            self._apply(consumer.consume(500, 0.2))

    def dead_threads(self) -> list[str]:
        """The follower thread's name if it died (for the worker's watchdog)."""
        thread = self._thread
        return [thread.name] if thread is not None and not thread.is_alive() else []

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def _follow(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        forget_at = time.monotonic() + _FORGET_EVERY_S
        while not self._stop.is_set():
            try:
                self._apply(consumer.consume(500, 0.2))
            except StreamJobsError as exc:  # librdkafka reconnects by itself: keep reading
                _log.warning("reading %s: %s", self._topic, exc)
                self._stop.wait(1.0)
            if time.monotonic() >= forget_at:
                forget_at = time.monotonic() + _FORGET_EVERY_S
                self.book.forget_expired(status.now_ms())

    def _apply(self, records: list[client.Record]) -> None:
        for record in records:
            if record.key is None:
                continue
            if record.value is None:
                self.book.remove(record.key.decode(errors="replace"))
                continue
            try:
                self.book.add(decode_cancel(record.value))
            except DecodeError as exc:
                _log.warning("%s@%d: not a cancel request: %s", self._topic, record.offset, exc)


def settle_cancelled(
    settler: Settler,
    part: Partition,
    message: client.Record,
    envelope: Envelope,
    *,
    note: str,
    where: dict[str, Any] | None = None,
    exc: BaseException | None = None,
    heard: Heard | None = None,
) -> None:
    """Settle ``message`` with a ``cancelled`` status (no retry, no dead letter); ``heard``:
    the attempt's outcome, for middleware."""
    fields = where or {
        "worker_id": settler.build.worker_id,
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
    }
    record = settler.build.status(
        envelope,
        TaskState.CANCELLED,
        reason="cancelled",
        error_type=type(exc).__name__ if exc is not None else None,
        error=error_text(exc, 2000) if exc is not None else None,
        note=note,
        **fields,
    )
    settler.settle(part, message, [record], heard)
    settler.stats.cancelled += 1
    settler.retry_ended(message)  # key_ordered: a retry-tier task's key may go on


def not_started_note(request: CancelRequest) -> str:
    """The status note of a task cancelled before it started."""
    when = datetime.fromtimestamp(request.requested_at_ms / 1000, UTC).isoformat(timespec="seconds")
    who = f" by {request.requested_by}" if request.requested_by else ""
    return f"cancelled before it started (cancel requested {when}{who})"
