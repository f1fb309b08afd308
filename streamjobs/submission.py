"""The records of one submit: a task validated, encoded and size-checked before any is written.

Owns turning a task into the :class:`~streamjobs.confirmed.PreparedTask` a submit writes: the
task type (a :class:`~streamjobs.models.Task` subclass, its writer schema derived once), the id
(random unless the caller gives one), the due time of ``delay``/``eta`` and so the topic and
state (the main topic and ``queued``, or the delay tier that fits and ``scheduled``), the
envelope and its size check against ``max_message_bytes`` (PayloadTooLarge), and the ``queued``
(or ``scheduled``) record, encoded by one prebuilt encoder per task type, topic and state. Also
prepares a task queued again under its own id (replay, redrive): attempt 1, due now, its
``queued`` status for the status topic. Pure CPU work: reads and writes nothing. Does not publish
writer schemas, read the status of a caller's own id or write anything
(:mod:`streamjobs.producer`, :mod:`streamjobs.confirmed`).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from streamjobs import client, status
from streamjobs.confirmed import PreparedTask, RecordHeaders
from streamjobs.envelope import Envelope, encode_envelope
from streamjobs.errors import ConfigError, PayloadTooLarge
from streamjobs.models import Task, TaskState
from streamjobs.retry import pick_tier
from streamjobs.settings import Settings
from streamjobs.status import SubmittedStatuses
from streamjobs.taskids import new_id
from streamjobs.tasktypes import TaskType
from streamjobs.topics import QueueTopics

# bytes a record needs beyond key, value and headers (record batch framing, generous)
_RECORD_OVERHEAD = 512


class Preparer:
    """Prepares the tasks of one Producer (its queue's topics); thread-safe."""

    def __init__(self, settings: Settings, topics: QueueTopics) -> None:
        self.settings = settings
        self._topics = topics
        self._types: dict[type[Task], TaskType] = {}
        self._statuses: dict[tuple[str, str, TaskState], SubmittedStatuses] = {}

    def task_type(self, task: Task) -> TaskType:
        cls = type(task)
        found = self._types.get(cls)
        if found is None:
            if not isinstance(task, Task):
                raise ConfigError(f"submit() takes a streamjobs.Task, got {cls.__name__}")
            found = self._types.setdefault(cls, TaskType(cls, cls.task_name))
        return found

    def prepare(
        self,
        task_type: TaskType,
        task: Task,
        key: str | None,
        task_id: str | None,
        not_before_ms: int | None,
        max_attempts: int | None,
    ) -> PreparedTask:
        """A new ``task`` of ``task_type`` (:meth:`task_type`), due at ``not_before_ms``
        (None: now)."""
        task_id = task_id or new_id()
        submitted = status.now_ms()
        topic, state, remaining = self._topics.main, TaskState.QUEUED, None
        if not_before_ms is not None and not_before_ms > submitted:
            remaining = timedelta(milliseconds=not_before_ms - submitted)
            topic = self._topics.delay[pick_tier(self.settings.delay_tiers, remaining)]
            state = TaskState.SCHEDULED
        envelope = Envelope(
            task_id=task_id,
            task=task_type.name,
            queue=self.settings.queue,
            key=key,
            payload=task_type.encode(task),
            payload_schema=task_type.fingerprint,
            max_attempts=max_attempts,
            not_before_ms=not_before_ms if state is TaskState.SCHEDULED else None,
            submitted_at_ms=submitted,
        )
        value = self.encoded(envelope, task_type.name)
        return PreparedTask(
            task=task_type.name,
            task_id=task_id,
            key=key,
            topic=topic,
            value=value,
            status_value=self._submitted_status(task_type, topic, state).encode(envelope),
            submitted_at_ms=submitted,
            delay=remaining,
            status_headers=status.submission_headers(envelope),
        )

    def resubmitted(
        self,
        envelope: Envelope,
        *,
        note: str,
        origin: client.Position | None,
        headers: RecordHeaders | None,
        operation: Literal["replay", "redrive"],
    ) -> PreparedTask:
        """``envelope`` queued again (see :meth:`streamjobs.producer.Producer.resubmit`)."""
        submitted = status.now_ms()
        again = replace(
            envelope, attempt=1, not_before_ms=None, submitted_at_ms=submitted, origin=origin
        )
        value = self.encoded(again, again.task_id)
        topic = self._topics.main
        return PreparedTask(
            task=again.task,
            task_id=again.task_id,
            key=again.key,
            topic=topic,
            value=value,
            status_value=status.encode_status(again, TaskState.QUEUED, topic=topic, note=note),
            submitted_at_ms=submitted,
            status_headers=status.submission_headers(again),
            replay_of=(operation, list(headers or [])),
        )

    def _submitted_status(
        self, task_type: TaskType, topic: str, state: TaskState
    ) -> SubmittedStatuses:
        """The prebuilt encoder of a new task's queued (or scheduled) record."""
        shape = (task_type.name, topic, state)
        found = self._statuses.get(shape)
        if found is None:
            found = SubmittedStatuses(task_type.name, self.settings.queue, state, topic)
            self._statuses[shape] = found  # two threads may both build it: the same bytes
        return found

    def encoded(self, envelope: Envelope, what: str) -> bytes:
        """The envelope's bytes; PayloadTooLarge (naming task ``what``) if the record would
        not fit."""
        value = encode_envelope(envelope)
        size = len(value) + len(envelope.record_key) + _RECORD_OVERHEAD
        if size > self.settings.max_message_bytes:
            raise PayloadTooLarge(
                f"task {what} encodes to {size} bytes, over max_message_bytes="
                f"{self.settings.max_message_bytes}"
            )
        return value


def due_ms(delay: timedelta | None, eta: datetime | None) -> int | None:
    """The due time of ``delay`` or ``eta`` (not both), in epoch milliseconds; None: now."""
    if delay is not None and eta is not None:
        raise ConfigError("give delay or eta, not both")
    if delay is not None:
        return status.now_ms() + int(delay.total_seconds() * 1000)
    if eta is not None:
        if eta.tzinfo is None:
            raise ConfigError("eta must be timezone-aware (e.g. datetime.now(UTC))")
        return int(eta.astimezone(UTC).timestamp() * 1000)
    return None
