"""Submitting tasks: ``Producer.submit`` and the ``TaskHandle`` it returns.

Owns validation, encoding and size checks before anything is produced, the write order that
keeps the status topic honest (the ``queued`` status is acknowledged before the task record is
produced, so a fast worker's ``succeeded`` can never be followed, and compacted away, by a late
``queued``), and delivery confirmation: a submit returns only once Kafka has the task (idempotent
producer, ``acks=all``) and raises SubmitError otherwise. Does not run tasks.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Literal

from streamjobs import client, status, tracing
from streamjobs.codec import builtin
from streamjobs.errors import ConfigError, PayloadTooLarge, StreamJobsError, SubmitError
from streamjobs.models import Task, TaskState
from streamjobs.retry import pick_tier
from streamjobs.schemastore import schema_record
from streamjobs.settings import Settings
from streamjobs.tasktypes import TaskType
from streamjobs.topics import queue_topics

_ENVELOPE = builtin("task_envelope")
RecordHeaders = Sequence[tuple[str, bytes | None]]
# bytes a record needs beyond key, value and headers (record batch framing, generous)
_RECORD_OVERHEAD = 512


@dataclass(slots=True)
class _Pending:
    """One record waiting for its delivery report."""

    error: Any = None
    partition: int = -1
    offset: int = -1
    done: bool = False


@dataclass(slots=True)
class _Prepared:
    task: str
    task_id: str
    key: str | None
    topic: str
    value: bytes
    status_value: bytes
    headers: list[tuple[str, bytes]]
    submitted_at_ms: int
    handle: TaskHandle | None = field(default=None)
    # a replay or redrive: (operation, headers of the original record) for a linked span
    replay_of: tuple[Literal["replay", "redrive"], RecordHeaders] | None = None


class TaskHandle:
    """A submitted task: its id, where it landed, and a way to wait for its outcome."""

    __slots__ = ("_settings", "offset", "partition", "submitted_at_ms", "task_id", "topic")

    def __init__(
        self,
        settings: Settings,
        task_id: str,
        topic: str,
        partition: int,
        offset: int,
        submitted_at_ms: int,
    ) -> None:
        self._settings = settings
        self.task_id = task_id
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.submitted_at_ms = submitted_at_ms

    def __repr__(self) -> str:
        return f"TaskHandle({self.task_id!r}, {self.topic}[{self.partition}]@{self.offset})"

    def status(self, timeout: float = 10.0) -> status.StatusView | None:
        """The latest status on the status topic (None if none was written yet)."""
        return status.latest(self._settings, self.task_id, timeout=timeout)

    def wait(self, timeout: float = 60.0) -> Any:
        """The handler's result; TaskFailed if dead-lettered, TaskTimeout if not done in time."""
        view = status.wait(self._settings, self.task_id, timeout, since_ms=self.submitted_at_ms)
        return status.raise_for_failure(view)


class Producer:
    """Submits tasks to a queue. Thread-safe; one per process is plenty. Use as a context manager.

    ``submit`` waits for Kafka to confirm each task; ``submit_many`` confirms a whole batch at once
    and is the fast path for bulk work.
    """

    def __init__(self, settings: Settings, *, timeout: timedelta = timedelta(seconds=30)) -> None:
        self.settings = settings
        self._topics = queue_topics(settings)
        self._timeout_s = timeout.total_seconds()
        self._client: client.Producer | None = client.new_producer(
            settings, **{"message.timeout.ms": int(self._timeout_s * 1000)}
        )
        self._types: dict[type[Task], TaskType] = {}
        self._announced: set[bytes] = set()
        self._lock = threading.Lock()
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
        """Append ``task`` to the queue; returns once Kafka confirmed it. Same key, same order."""
        not_before_ms = _due_ms(delay, eta)
        prepared = self._prepare(task, key, task_id, not_before_ms, max_attempts)
        self._write([prepared])
        assert prepared.handle is not None
        return prepared.handle

    def submit_many(
        self, tasks: Iterable[Task], *, keys: Iterable[str | None] | None = None
    ) -> list[TaskHandle]:
        """Submit a batch; all are validated before any is produced, confirmed together."""
        task_list = list(tasks)
        key_list = list(keys) if keys is not None else [None] * len(task_list)
        if len(key_list) != len(task_list):
            raise ConfigError("submit_many: keys and tasks differ in length")
        ids = _new_ids(len(task_list))  # one urandom call for the batch, not one per task
        prepared = [
            self._prepare(t, k, i, None, None)
            for t, k, i in zip(task_list, key_list, ids, strict=True)
        ]
        self._write(prepared)
        return [p.handle for p in prepared if p.handle is not None]

    def resubmit(
        self,
        envelope: dict[str, Any],
        *,
        note: str,
        origin: dict[str, Any] | None,
        headers: RecordHeaders | None = None,
        operation: Literal["replay", "redrive"] = "replay",
    ) -> TaskHandle:
        """Queue an already-encoded task again under its own ``task_id`` and key.

        For replays and dead-letter redrives: the caller chooses ``envelope["generation"]``
        (higher than any earlier one, so the new statuses outrank the old); the attempt count
        starts again at 1 and the task runs now. ``note`` (who, from where) lands on the
        ``queued`` status, ``origin`` (topic, partition, offset, timestamp_ms) on the envelope,
        and the record's PRODUCER span is linked to the trace in ``headers``. Same confirmed
        two-phase write as :meth:`submit`.
        """
        if self._closed:
            raise StreamJobsError("producer is closed")
        if envelope["queue"] != self.settings.queue:
            raise ConfigError(
                f"task {envelope['task_id']} belongs to queue {envelope['queue']!r}, "
                f"this producer to {self.settings.queue!r}"
            )
        submitted = status.now_ms()
        again = {
            **envelope,
            "attempt": 1,
            "not_before_ms": None,
            "submitted_at_ms": submitted,
            "origin": origin,
        }
        value = _ENVELOPE.encode(again)
        key = again["key"]
        size = len(value) + len(key or again["task_id"]) + _RECORD_OVERHEAD
        if size > self.settings.max_message_bytes:
            raise PayloadTooLarge(f"task {again['task_id']} encodes to {size} bytes")
        topic = self._topics.main
        prepared = _Prepared(
            task=again["task"],
            task_id=again["task_id"],
            key=key,
            topic=topic,
            value=value,
            status_value=status.encode_status(again, TaskState.QUEUED, topic=topic, note=note),
            headers=[],
            submitted_at_ms=submitted,
            replay_of=(operation, list(headers or [])),
        )
        self._write([prepared])
        assert prepared.handle is not None
        return prepared.handle

    def status(self, task_id: str, timeout: float = 10.0) -> status.StatusView | None:
        return status.latest(self.settings, task_id, timeout=timeout)

    def flush(self, timeout: float | None = None) -> None:
        remaining = self._producer.flush(self._timeout_s if timeout is None else timeout)
        if remaining:
            raise SubmitError(f"{remaining} records not confirmed by Kafka before the timeout")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._producer.flush(self._timeout_s)
            self._client = None  # releases librdkafka's threads and connections now

    # -- internals ---------------------------------------------------------------------------

    @property
    def _producer(self) -> client.Producer:
        if self._client is None:
            raise StreamJobsError("producer is closed")
        return self._client

    def _task_type(self, task: Task) -> TaskType:
        cls = type(task)
        found = self._types.get(cls)
        if found is None:
            if not isinstance(task, Task):
                raise ConfigError(f"submit() takes a streamjobs.Task, got {cls.__name__}")
            found = self._types.setdefault(cls, TaskType(cls, cls.task_name))
        return found

    def _prepare(
        self,
        task: Task,
        key: str | None,
        task_id: str | None,
        not_before_ms: int | None,
        max_attempts: int | None,
    ) -> _Prepared:
        if self._closed:
            raise StreamJobsError("producer is closed")
        task_type = self._task_type(task)
        task_id = task_id or _new_ids(1)[0]
        submitted = status.now_ms()
        topic, state = self._topics.main, TaskState.QUEUED
        if not_before_ms is not None and not_before_ms > submitted:
            remaining = timedelta(milliseconds=not_before_ms - submitted)
            topic = self._topics.delay[pick_tier(self.settings.delay_tiers, remaining)]
            state = TaskState.SCHEDULED
        envelope = {
            "task_id": task_id,
            "task": task_type.name,
            "queue": self.settings.queue,
            "key": key,
            "payload": task_type.encode(task),
            "payload_schema": task_type.fingerprint,
            "attempt": 1,
            "max_attempts": max_attempts,
            "generation": 0,
            "not_before_ms": not_before_ms if state is TaskState.SCHEDULED else None,
            "submitted_at_ms": submitted,
            "origin": None,
        }
        value = _ENVELOPE.encode(envelope)
        size = len(value) + len(key or task_id) + _RECORD_OVERHEAD
        if size > self.settings.max_message_bytes:
            raise PayloadTooLarge(
                f"task {task_type.name} encodes to {size} bytes, over max_message_bytes="
                f"{self.settings.max_message_bytes}"
            )
        self._announce(task_type)
        return _Prepared(
            task=task_type.name,
            task_id=task_id,
            key=key,
            topic=topic,
            value=value,
            status_value=status.encode_status(envelope, state, topic=topic),
            headers=[],
            submitted_at_ms=submitted,
        )

    def _announce(self, task_type: TaskType) -> None:
        """Publish the writer schema once per type, confirmed before its first task."""
        if task_type.fingerprint in self._announced:
            return
        with self._lock:
            if task_type.fingerprint in self._announced:
                return
            key, value = schema_record(task_type)
            pending = _Pending()
            self._produce(self._topics.schemas, key, value, [], pending)
            self._await([pending], "schema of " + task_type.name)
            self._announced.add(task_type.fingerprint)

    def _write(self, batch: Sequence[_Prepared]) -> None:
        statuses = [_Pending() for _ in batch]
        for item, pending in zip(batch, statuses, strict=True):
            self._produce(
                self._topics.status, item.task_id.encode(), item.status_value, [], pending
            )
        self._await(statuses, "queued status")
        records = [_Pending() for _ in batch]
        traced = tracing.active()  # once per batch: without a provider, spans are skipped
        for item, pending in zip(batch, records, strict=True):
            key = (item.key or item.task_id).encode()
            if not traced and item.replay_of is None:
                self._produce(item.topic, key, item.value, [], pending)
                continue
            with _span(item) as headers:
                self._produce(item.topic, key, item.value, headers, pending)
        try:
            self._await(records, "task")
        except SubmitError:
            # best effort: do not leave a "queued" status for a task Kafka may not have
            for item in batch:
                self._produce(self._topics.status, item.task_id.encode(), None, [], _Pending())
            self._producer.flush(5.0)
            raise
        for item, pending in zip(batch, records, strict=True):
            item.handle = TaskHandle(
                self.settings,
                item.task_id,
                item.topic,
                pending.partition,
                pending.offset,
                item.submitted_at_ms,
            )

    def _produce(
        self,
        topic: str,
        key: bytes,
        value: bytes | None,
        headers: Sequence[tuple[str, str | bytes | None]],
        pending: _Pending,
    ) -> None:
        def on_delivery(error: Any, message: Any) -> None:
            pending.error = error
            if error is None:
                pending.partition = message.partition()
                pending.offset = message.offset()
            pending.done = True

        while True:
            try:
                self._producer.produce(
                    topic, value, key, headers=list(headers) or None, on_delivery=on_delivery
                )
                return
            except BufferError:  # local queue full: serve deliveries, then try again
                self._producer.poll(0.05)
            except client.KafkaException as exc:
                raise client.delivery_error(exc.args[0]) from exc

    def _await(self, pendings: Sequence[_Pending], what: str) -> None:
        deadline = time.monotonic() + self._timeout_s + 5
        for pending in pendings:
            while not pending.done:
                if time.monotonic() > deadline:
                    raise SubmitError(f"{what} not confirmed within {self._timeout_s}s")
                self._producer.poll(0.01)
            if pending.error is not None:
                raise client.delivery_error(pending.error)


def _new_ids(count: int) -> list[str]:
    """Random 128-bit task ids as 32 hex digits (like ``uuid4().hex``), from one urandom call."""
    raw = os.urandom(16 * count).hex()
    return [raw[i : i + 32] for i in range(0, 32 * count, 32)]


def _span(item: _Prepared) -> AbstractContextManager[list[tuple[str, bytes]]]:
    """The PRODUCER span of a task record: a new trace, or one linked to a replayed record."""
    if item.replay_of is None:
        return tracing.submit_span(item.task, item.task_id, item.topic, item.key)
    operation, original = item.replay_of
    return tracing.replay_span(
        original,
        operation=operation,
        task=item.task,
        task_id=item.task_id,
        topic=item.topic,
        key=item.key,
    )


def _due_ms(delay: timedelta | None, eta: datetime | None) -> int | None:
    if delay is not None and eta is not None:
        raise ConfigError("give delay or eta, not both")
    if delay is not None:
        return status.now_ms() + int(delay.total_seconds() * 1000)
    if eta is not None:
        if eta.tzinfo is None:
            raise ConfigError("eta must be timezone-aware (e.g. datetime.now(UTC))")
        return int(eta.astimezone(UTC).timestamp() * 1000)
    return None
