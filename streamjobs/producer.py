"""Submitting tasks: ``Producer.submit`` and what it checks before anything is written.

Owns the producer's client, publishing a task type's writer schema once before its first task,
and the batches of prepared tasks (validated, encoded and size-checked before anything is
produced, with their ids and due times: :mod:`streamjobs.submission`) handed to the confirmed
write (:mod:`streamjobs.confirmed`: a new task's submitted record and task record in one
round trip; a submit returns only once Kafka has the task, idempotent producer, ``acks=all``, and
raises SubmitError otherwise), and the seam of the asyncio API (:meth:`Producer.prepare_submit`,
:meth:`Producer.write_pipelined`). Replays and redrives queue existing envelopes again in batches:
``prepare_resubmit`` checks one, ``resubmit_many`` writes many with the same confirmed write and
reports per task. A submit naming its own ``task_id`` first reads that id's status: a task already
known is never written again (same arguments: its handle is returned; other arguments:
DuplicateTask). ``cancel`` writes a cancel request, confirmed, through the same client
(:mod:`streamjobs.cancels` decides whether to). Does not run tasks, nor wait for their outcome: the
``TaskHandle`` a submit returns does that (:mod:`streamjobs.taskhandle`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType
from typing import Literal

from streamjobs import cancels, client, status, statusreads
from streamjobs.confirmed import ConfirmedWriter, PreparedTask, failure, outcome
from streamjobs.deliveries import Pending
from streamjobs.envelope import Envelope
from streamjobs.errors import (
    ConfigError,
    StreamJobsError,
    SubmitError,
)
from streamjobs.middleware import Middleware, chain_of
from streamjobs.models import Task
from streamjobs.schemastore import schema_record
from streamjobs.settings import Settings
from streamjobs.submission import Preparer, due_ms
from streamjobs.taskhandle import TaskHandle, existing_handle
from streamjobs.taskids import new_ids
from streamjobs.tasktypes import TaskType
from streamjobs.topics import queue_topics
from streamjobs.tracing import TracingMiddleware

RecordHeaders = Sequence[tuple[str, bytes | None]]


@dataclass(frozen=True, slots=True)
class Resubmission:
    """A task ready to be queued again: validated, encoded and size-checked by
    :meth:`Producer.prepare_resubmit`, written by :meth:`Producer.resubmit_many`.
    ``queued_status`` is the encoded status record that write acknowledges first."""

    task_id: str
    key: str | None
    queued_status: bytes = field(repr=False)
    _prepared: PreparedTask = field(repr=False)


@dataclass(frozen=True, slots=True)
class EncodedTask:
    """A task validated and encoded exactly as :meth:`Producer.submit` would write it, for a
    writer of its own (the scheduler writes it in a Kafka transaction): the task record
    (``topic``, ``record_key``, ``value``, ``headers``) and its ``queued`` status record
    (``queued_status``, with ``status_headers``: the submission digest every status carries)."""

    task: str
    task_id: str
    key: str | None
    topic: str
    value: bytes = field(repr=False)
    queued_status: bytes = field(repr=False)
    headers: tuple[tuple[str, bytes], ...] = ()
    status_headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def record_key(self) -> bytes:
        return (self.key or self.task_id).encode()


class Producer:
    """Submits tasks to a queue. Thread-safe; one per process is plenty. Use as a context manager.

    ``submit`` waits for Kafka to confirm each task; ``submit_many`` confirms a whole batch at once
    and is the fast path for bulk work. ``middleware`` wraps producing each task record
    (:mod:`streamjobs.middleware`; None: tracing only). It starts no thread of its own (unless
    :meth:`start_pipelining`, for the asyncio API): delivery reports are served by the submitting
    threads, one polling for all (:mod:`streamjobs.deliveries`), so in a long-running service a
    broker problem is always the next submit's error (SubmitError, KafkaUnavailable), never a
    background thread failing silently.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        timeout: timedelta = timedelta(seconds=30),
        middleware: Sequence[Middleware] | None = None,
    ) -> None:
        self.settings = settings
        self._middleware = chain_of(middleware, TracingMiddleware)
        self._topics = queue_topics(settings)
        self._timeout_s = timeout.total_seconds()
        self._client: client.Producer | None = client.new_producer(
            settings, **{"message.timeout.ms": int(self._timeout_s * 1000)}
        )
        self._preparer = Preparer(settings, self._topics)
        self._announced: set[bytes] = set()
        self._lock = threading.Lock()
        self._writer = ConfirmedWriter(
            settings, lambda: self._producer, self._topics, self._middleware, self._timeout_s
        )
        self._closed = False

    def __enter__(self) -> Producer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def submit(
        self,
        task: Task,
        *,
        key: str | None = None,
        task_id: str | None = None,
        delay: timedelta | None = None,
        eta: datetime | None = None,
        max_attempts: int | None = None,
    ) -> TaskHandle:
        """Append ``task`` to the queue; returns once Kafka confirmed it. Same key, same order.

        With ``task_id``, the id's status is read first (its status and submitted partitions):
        if either topic knows the id, nothing is written; the existing task's handle is
        returned when it was submitted with the same task type, key and payload (a retried
        submit), else :class:`~streamjobs.errors.DuplicateTask` is raised. A purged id is free
        again. Two submits of one new id at the same moment can both pass this check: see the
        README (*Choosing task ids*).
        """
        prepared = self.prepare_submit(
            task, key=key, task_id=task_id, delay=delay, eta=eta, max_attempts=max_attempts
        )
        if isinstance(prepared, TaskHandle):
            return prepared
        self._writer.write([prepared])
        assert prepared.handle is not None
        return prepared.handle

    # -- the seam of the asyncio API (streamjobs.aio) ----------------------------------------

    def prepare_submit(
        self,
        task: Task,
        *,
        key: str | None = None,
        task_id: str | None = None,
        delay: timedelta | None = None,
        eta: datetime | None = None,
        max_attempts: int | None = None,
    ) -> PreparedTask | TaskHandle:
        """What :meth:`submit` writes, or the existing handle of a known ``task_id`` (then
        nothing is to be written). Blocks only when :meth:`prepare_blocks` says so."""
        not_before_ms = None if delay is None and eta is None else due_ms(delay, eta)
        if self._closed:
            raise StreamJobsError("producer is closed")
        task_type = self._preparer.task_type(task)
        prepared = self._preparer.prepare(
            task_type, task, key, task_id, not_before_ms, max_attempts
        )
        if task_id is not None:  # before anything is written, the schema record included
            known = statusreads.latest(self.settings, task_id, timeout=self._timeout_s)
            if known is not None:
                return existing_handle(self.settings, known, prepared.status_headers)
        self._announce(task_type)
        return prepared

    def prepare_blocks(self, task: Task, task_id: str | None) -> bool:
        """Whether :meth:`prepare_submit` may block: an explicit id's status read, or the task
        type's first schema write. Otherwise it is pure CPU work (microseconds)."""
        return (
            task_id is not None or self._preparer.task_type(task).fingerprint not in self._announced
        )

    def start_pipelining(self) -> None:
        """Serve delivery reports on a resident thread, for :meth:`write_pipelined`."""
        self._writer.start_pipelining()

    def write_pipelined(
        self, prepared: PreparedTask, done: Callable[[TaskHandle | SubmitError], None]
    ) -> None:
        """Write what :meth:`prepare_submit` prepared, as :meth:`submit` does, without waiting:
        ``done`` gets its handle or SubmitError on the resident thread once Kafka answered.
        Needs :meth:`start_pipelining`; :meth:`close` waits for the writes in flight."""
        self._writer.write_pipelined(prepared, done)

    def submit_many(
        self, tasks: Iterable[Task], *, keys: Iterable[str | None] | None = None
    ) -> list[TaskHandle]:
        """Submit a batch; all are validated before any is produced, confirmed together."""
        task_list = list(tasks)
        key_list = list(keys) if keys is not None else [None] * len(task_list)
        if len(key_list) != len(task_list):
            raise ConfigError("submit_many: keys and tasks differ in length")
        ids = new_ids(len(task_list))
        preparer, prepared = self._preparer, []
        for task, key, task_id in zip(task_list, key_list, ids, strict=True):
            if self._closed:
                raise StreamJobsError("producer is closed")
            task_type = preparer.task_type(task)
            prepared.append(preparer.prepare(task_type, task, key, task_id, None, None))
            self._announce(task_type)
        self._writer.write(prepared)
        return [p.handle for p in prepared if p.handle is not None]

    def resubmit(
        self,
        envelope: Envelope,
        *,
        note: str,
        origin: client.Position | None,
        headers: RecordHeaders | None = None,
        operation: Literal["replay", "redrive"] = "replay",
    ) -> TaskHandle:
        """Queue an already-encoded task again under its own ``task_id`` and key.

        For replays and dead-letter redrives: the caller chooses ``envelope.generation``
        (higher than any earlier one, so the new statuses outrank the old); the attempt count
        starts again at 1 and the task runs now. ``note`` (who, from where) lands on the
        ``queued`` status, ``origin`` (where the task was read from) on the envelope,
        and the record's PRODUCER span is linked to the trace in ``headers``. Same confirmed
        two-phase write as :meth:`submit`. For many tasks, :meth:`prepare_resubmit` each and
        write them with one :meth:`resubmit_many`.
        """
        prepared = self.prepare_resubmit(
            envelope, note=note, origin=origin, headers=headers, operation=operation
        )
        [result] = self.resubmit_many([prepared])
        if isinstance(result, SubmitError):
            raise result
        return result

    def prepare_resubmit(
        self,
        envelope: Envelope,
        *,
        note: str,
        origin: client.Position | None,
        headers: RecordHeaders | None = None,
        operation: Literal["replay", "redrive"] = "replay",
    ) -> Resubmission:
        """Validate, encode and size-check a re-submission (see :meth:`resubmit`); produces
        nothing. Raises ConfigError for a task of another queue, PayloadTooLarge when it no
        longer fits ``max_message_bytes``."""
        if self._closed:
            raise StreamJobsError("producer is closed")
        if envelope.queue != self.settings.queue:
            raise ConfigError(
                f"task {envelope.task_id} belongs to queue {envelope.queue!r}, "
                f"this producer to {self.settings.queue!r}"
            )
        prepared = self._preparer.resubmitted(
            envelope, note=note, origin=origin, headers=headers, operation=operation
        )
        return Resubmission(prepared.task_id, prepared.key, prepared.status_value, prepared)

    def resubmit_many(self, batch: Sequence[Resubmission]) -> list[TaskHandle | SubmitError]:
        """Write prepared re-submissions in one confirmed two-phase write, in ``batch`` order
        (:meth:`streamjobs.confirmed.ConfirmedWriter.write_statuses_first`).

        Every ``queued`` status of the batch is acknowledged before its first task is produced;
        if any status fails, no task of the batch is produced. Returns, per item, its handle or
        the SubmitError that kept it from being confirmed (its ``queued`` status is then taken
        back, best effort). Tasks of one key keep their order within and across batches.
        """
        if any(r._prepared.handle is not None for r in batch):
            # Kafka has it: writing it again would queue the task twice
            raise ConfigError("resubmit_many: a resubmission in the batch was already written")
        items = [r._prepared for r in batch]
        started = time.monotonic()
        self._writer.write_statuses_first(items)
        self._writer.report(items, started)
        return [outcome(item) for item in items]

    def encode(self, task: Task, *, task_id: str, key: str | None = None) -> EncodedTask:
        """Validate, encode and size-check ``task`` for the main topic, under the submit hooks
        of the producer's middleware (their headers are on the result); produces nothing but
        its type's writer schema (confirmed, once)."""
        if self._closed:
            raise StreamJobsError("producer is closed")
        task_type = self._preparer.task_type(task)
        prepared = self._preparer.prepare(task_type, task, key, task_id, None, None)
        self._announce(task_type)
        headers: list[tuple[str, bytes]] = []
        hooks = self._middleware.for_submit()
        if hooks is not None:
            ctx = prepared.submit_context(self.settings.queue)
            with hooks.submit(ctx):  # middleware may add headers (trace context)
                headers = list(ctx.headers)
        return EncodedTask(
            prepared.task,
            prepared.task_id,
            prepared.key,
            prepared.topic,
            prepared.value,
            prepared.status_value,
            tuple(headers),
            tuple((k, v) for k, v in prepared.status_headers if v is not None),
        )

    def status(self, task_id: str, timeout: float = 10.0) -> status.StatusView | None:
        return statusreads.latest(self.settings, task_id, timeout=timeout)

    def cancel(self, task_id: str) -> cancels.CancelResult:
        """Cancel a task (see :mod:`streamjobs.cancels`): unless its status says it is unknown
        or finished, a cancel request is written, confirmed, and the result's outcome is
        ``requested``; otherwise nothing is written and the outcome says why."""
        return cancels.request(self.settings, task_id, self._confirmed, timeout=self._timeout_s)

    def _confirmed(self, topic: str, key: bytes, value: bytes) -> None:
        """Write one record through this producer's client; SubmitError unless confirmed."""
        pending = Pending()
        self._writer.produce(topic, key, value, [], pending)
        self._writer.wait([pending])
        error = failure(pending, f"record to {topic}", self._timeout_s, None)
        if error is not None:
            raise error

    def flush(self, timeout: float | None = None) -> None:
        remaining = self._producer.flush(self._timeout_s if timeout is None else timeout)
        if remaining:
            raise SubmitError(f"{remaining} records not confirmed by Kafka before the timeout")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._writer.stop_pipelining(self._timeout_s + 5)
            self._producer.flush(self._timeout_s)
            self._client = None  # releases librdkafka's threads and connections now

    # -- internals ---------------------------------------------------------------------------

    @property
    def _producer(self) -> client.Producer:
        if self._client is None:
            raise StreamJobsError("producer is closed")
        return self._client

    def _announce(self, task_type: TaskType) -> None:
        """Publish the writer schema once per type, confirmed before its first task."""
        if task_type.fingerprint in self._announced:
            return
        with self._lock:
            if task_type.fingerprint in self._announced:
                return
            key, value = schema_record(task_type)
            pending = Pending()
            self._writer.produce(self._topics.schemas, key, value, [], pending)
            self._writer.wait([pending])
            error = failure(pending, f"schema of {task_type.name}", self._timeout_s, None)
            if error is not None:
                raise error
            self._announced.add(task_type.fingerprint)
