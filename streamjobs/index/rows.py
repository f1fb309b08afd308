"""What one Kafka record means to the index: pure mappings from a record to row changes.

Owns the typed changes the store applies (:class:`StatusRow`, :class:`TaskGone`,
:class:`DeadLetterRow`, :class:`Redriven`) and one mapping function per followed topic
(:func:`status_changes`, :func:`dead_letter_changes`, :func:`redriven_changes`). A new topic
(workers' heartbeats, schedules) is one more change type and one more small function here: the
follower and the store do not change shape.

Does not touch SQLite (:mod:`streamjobs.index.store`) or Kafka
(:mod:`streamjobs.index.follower`). A record that does not decode maps to no change: the index
shows what the topic says, and the worker has already dead-lettered poison.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from streamjobs.client import Record
from streamjobs.deadletter import decode_dead_letter
from streamjobs.errors import BadInput, DecodeError
from streamjobs.status import decode_status, status_values


class StatusRow(NamedTuple):
    """One status record (the columns of :class:`~streamjobs.status.StatusView`, ``state`` as
    its wire string) and where it was read: a history row, and the task's latest if its version
    is the highest seen (the rule of :mod:`streamjobs.status`). A tuple, because the index
    writes every status record ever produced: it goes to SQLite as it is."""

    task_id: str
    task: str
    queue: str
    state: str
    version: int
    attempt: int
    generation: int
    updated_at_ms: int
    key: str | None
    result_json: str | None
    error_type: str | None
    error: str | None
    reason: str | None
    topic: str | None
    partition: int | None
    offset: int | None
    worker_id: str | None
    trace_id: str | None
    not_before_ms: int | None
    submitted_at_ms: int | None
    note: str | None
    src_partition: int
    src_offset: int


@dataclass(frozen=True, slots=True)
class TaskGone:
    """A status tombstone (``streamjobs purge``): the task and its history leave the index."""

    task_id: str


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    """One dead letter of the queue, as lists and filters need it."""

    queue: str
    partition: int
    offset: int
    timestamp_ms: int
    reason: str
    task_id: str | None
    task: str | None
    error_type: str | None
    error: str | None
    attempts: int
    generation: int
    worker_id: str | None
    failed_at_ms: int
    origin_topic: str | None
    origin_partition: int | None
    origin_offset: int | None


@dataclass(frozen=True, slots=True)
class Redriven:
    """A redrive ledger entry: dead letter ``partition:offset`` of ``queue`` was re-driven
    (``done``), or its entry was tombstoned so it may be re-driven again."""

    queue: str
    partition: int
    offset: int
    done: bool
    note: str | None


Change = StatusRow | TaskGone | DeadLetterRow | Redriven
Mapper = Callable[[Record], list[Change]]
UNDECODABLE = "undecodable_dead_letter"


def status_changes(record: Record) -> list[Change]:
    """``<prefix>.status``: a status row, or the removal of a tombstoned task."""
    if record.key is None:
        return []
    if record.value is None:
        return [TaskGone(record.key.decode(errors="replace"))]
    try:
        values = status_values(record.value)
    except (DecodeError, BadInput):
        return []
    values += (record.partition, record.offset)
    return [StatusRow._make(values)]


def dead_letter_changes(queue: str) -> Mapper:
    """``<prefix>.<queue>.dlq``: one row per dead letter (undecodable ones too, by reason)."""

    def changes(record: Record) -> list[Change]:
        try:
            value = decode_dead_letter(record.value or b"")
        except BadInput as exc:
            return [_undecodable(queue, record, str(exc))]
        return [
            DeadLetterRow(
                queue=queue,
                partition=record.partition,
                offset=record.offset,
                timestamp_ms=record.timestamp_ms,
                reason=value["reason"],
                task_id=value["task_id"],
                task=value["task"],
                error_type=value["error_type"],
                error=value["error"],
                attempts=value["attempts"],
                generation=value["generation"],
                worker_id=value["worker_id"],
                failed_at_ms=value["failed_at_ms"],
                origin_topic=value["origin_topic"],
                origin_partition=value["origin_partition"],
                origin_offset=value["origin_offset"],
            )
        ]

    return changes


def _undecodable(queue: str, record: Record, error: str) -> DeadLetterRow:
    return DeadLetterRow(
        queue=queue,
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=record.timestamp_ms,
        reason=UNDECODABLE,
        task_id=None,
        task=None,
        error_type=None,
        error=error,
        attempts=0,
        generation=0,
        worker_id=None,
        failed_at_ms=record.timestamp_ms,
        origin_topic=None,
        origin_partition=None,
        origin_offset=None,
    )


def redriven_changes(queue: str) -> Mapper:
    """``<prefix>.<queue>.dlq.redriven``: keyed ``"partition:offset"``; its value is the
    ``queued`` status the redrive wrote, whose note says who re-drove it and when."""

    def changes(record: Record) -> list[Change]:
        if record.key is None:
            return []
        partition, sep, offset = record.key.decode(errors="replace").partition(":")
        if not sep or not partition.isdigit() or not offset.isdigit():
            return []
        note = None
        if record.value is not None:
            try:
                note = decode_status(record.value).note
            except (DecodeError, BadInput):
                note = None
        return [Redriven(queue, int(partition), int(offset), record.value is not None, note)]

    return changes
