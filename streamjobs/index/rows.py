"""What one Kafka record means to the index: pure mappings from a record to row changes.

Owns the typed changes the store applies (:class:`StatusSeen`, :class:`TaskGone`,
:class:`SubmittedGone`, :class:`DeadLetterRow`, :class:`Redriven`, :class:`WorkerRow`,
:class:`WorkerGone`, :class:`ScheduleRecord`, :class:`CancelRow`) and one mapping function per
followed topic (:func:`status_changes`, :func:`submitted_changes`, :func:`dead_letter_changes`,
:func:`redriven_changes`, :func:`worker_changes`, :func:`schedule_changes`,
:func:`cancel_changes`). A new topic is one more change type and one more small function here,
one line in the follower's feeds and one writer in the store.

A status record is read only as far as its head (ids, state, version, times: what decides
whether it is a task's latest, and what the outcome charts count); the rest is decoded by
:meth:`StatusSeen.row` for the records that become a task's latest row, and the record's
bytes are kept as its history entry. The index writes every status record ever produced, most
of which are superseded within the same batch (queued, running, outcome within milliseconds).

Does not touch SQLite (:mod:`streamjobs.index.store`) or Kafka
(:mod:`streamjobs.index.follower`). A record that does not decode maps to no change: the index
shows what the topic says, and the worker has already dead-lettered poison.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from streamjobs.cancels import decode_cancel
from streamjobs.client import BareRecord
from streamjobs.codec import MAGIC, builtin
from streamjobs.deadletter import decode_dead_letter
from streamjobs.errors import BadInput, DecodeError
from streamjobs.flatread import FlatReader
from streamjobs.metrics.heartbeat import decode_report
from streamjobs.models import TaskState
from streamjobs.scheduler.state import parse_key
from streamjobs.status import decode_status, status_values

_STATUS = builtin("task_status")
#: task_id, task, queue, state, version, attempt, generation, updated_at_ms
_HEAD_FIELDS = 8
_HEAD = FlatReader(_STATUS.schema, MAGIC + _STATUS.fingerprint, fields=_HEAD_FIELDS)
_STATES = frozenset(state.value for state in TaskState)


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


class StatusSeen(NamedTuple):
    """A status record as the index first reads it: its head, its bytes and where it was read.
    Every one becomes a history entry; the highest version of a task becomes its latest row
    through :meth:`row`."""

    task_id: str
    task: str
    queue: str
    state: str
    version: int
    attempt: int
    generation: int
    updated_at_ms: int
    value: bytes
    src_partition: int
    src_offset: int

    def row(self) -> StatusRow | None:
        """The whole record as a row; None if its body does not decode (its head did)."""
        try:
            values = status_values(self.value)
        except (DecodeError, BadInput):
            return None
        values[4] = self.version  # as seen: a submitted record's is SUBMITTED_VERSION
        values += (self.src_partition, self.src_offset)
        return StatusRow._make(values)


_seen = StatusSeen._make
_ENTRY = struct.Struct(">iqI")  # partition, offset, length of the value that follows


def pack_history(seen: Sequence[StatusSeen]) -> bytes:
    """Status records of one task as one history entry (a batch holds most of a task's life:
    one row instead of one per record)."""
    return b"".join(map(history_part, seen))


def history_part(seen: StatusSeen) -> bytes:
    """One status record's part of a history entry: entries are their records' parts joined."""
    return _ENTRY.pack(seen.src_partition, seen.src_offset, len(seen.value)) + seen.value


def unpack_history(entry: bytes) -> list[tuple[int, int, bytes]]:
    """(partition, offset, value) of each record in a history entry; ValueError if cut."""
    found, pos = [], 0
    while pos < len(entry):
        if pos + _ENTRY.size > len(entry):
            raise ValueError("history entry cut short")
        partition, offset, size = _ENTRY.unpack_from(entry, pos)
        pos += _ENTRY.size + size
        if pos > len(entry):
            raise ValueError("history entry cut short")
        found.append((partition, offset, entry[pos - size : pos]))
    return found


def status_head(value: bytes) -> list[Any]:
    """The first fields of a status record (another writer schema: through the full decoder);
    DecodeError when it is not a status record."""
    head = _HEAD.read(value)
    if head is not None and head[3] in _STATES:
        return head
    return status_values(value)[:_HEAD_FIELDS]


@dataclass(frozen=True, slots=True)
class TaskGone:
    """A status tombstone (``streamjobs purge``): the task and its history leave the index."""

    task_id: str


@dataclass(frozen=True, slots=True)
class SubmittedGone:
    """A submitted-topic tombstone (a withdrawn or purged submit): the task leaves the index
    unless a status record has replaced its submitted row."""

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


@dataclass(frozen=True, slots=True)
class WorkerRow:
    """A worker's latest heartbeat (``<prefix>.workers``, keyed by worker id): the fields the
    index filters on, and the report's bytes (decoded for the page that shows it)."""

    worker_id: str
    queue: str
    host: str
    reported_at_ms: int
    interval_ms: int
    report: bytes


@dataclass(frozen=True, slots=True)
class WorkerGone:
    """A heartbeat tombstone: the worker stopped gracefully and leaves the list."""

    worker_id: str


@dataclass(frozen=True, slots=True)
class CancelRow:
    """The latest cancel request of a task on ``<prefix>.cancels`` (``requested_at_ms`` None:
    tombstoned or expired). A request is only an intent: the task's state stays what its
    workers wrote, the index only answers that a cancel is pending."""

    task_id: str
    generation: int = 0
    requested_at_ms: int | None = None
    requested_by: str | None = None


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """The latest record of one key of ``<prefix>.schedules`` (``value`` None: tombstoned).
    The index keeps the records as they are; :class:`~streamjobs.scheduler.book.Book` folds
    them into schedules when a page asks, so the meaning lives in one place."""

    key: bytes
    queue: str
    name: str
    kind: str
    value: bytes | None


Change = (
    StatusSeen
    | TaskGone
    | SubmittedGone
    | DeadLetterRow
    | Redriven
    | WorkerRow
    | WorkerGone
    | ScheduleRecord
    | CancelRow
)
Mapper = Callable[[BareRecord], Sequence[Change]]
UNDECODABLE = "undecodable_dead_letter"


def status_changes(record: BareRecord) -> Sequence[Change]:
    """``<prefix>.status``: a status row, or the removal of a tombstoned task."""
    if record.key is None:
        return []
    value = record.value
    if value is None:
        return [TaskGone(record.key.decode(errors="replace"))]
    head = _HEAD.read(value)  # status_head, inlined: this runs for every status record
    if head is None or head[3] not in _STATES:
        try:
            head = status_head(value)
        except (DecodeError, BadInput):
            return []
    head.append(value)
    head.append(record.partition)
    head.append(record.offset)
    # a tuple of a tuple of atoms: the garbage collector stops tracking it at its first pass,
    # so a batch's thousands of changes do not trigger full collections (lists stay tracked)
    return (_seen(head),)


#: The version of a row from the submitted topic: below every status record's, so a status row
#: replaces it and is never replaced by it, whichever topic the index applies first.
SUBMITTED_VERSION = -1


def submitted_changes(record: BareRecord) -> Sequence[Change]:
    """``<prefix>.submitted``: a new task's ``queued`` (or ``scheduled``) record, ranked below
    any status (:data:`SUBMITTED_VERSION`), or its withdrawal."""
    if record.key is None:
        return []
    if record.value is None:
        return [SubmittedGone(record.key.decode(errors="replace"))]
    seen = [c for c in status_changes(record) if isinstance(c, StatusSeen)]
    return tuple(c._replace(version=SUBMITTED_VERSION) for c in seen)


def dead_letter_changes(queue: str) -> Mapper:
    """``<prefix>.<queue>.dlq``: one row per dead letter (undecodable ones too, by reason)."""

    def changes(record: BareRecord) -> list[Change]:
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


def _undecodable(queue: str, record: BareRecord, error: str) -> DeadLetterRow:
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

    def changes(record: BareRecord) -> list[Change]:
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


def worker_changes(record: BareRecord) -> list[Change]:
    """``<prefix>.workers``: a worker's latest report, or its graceful leaving (a tombstone)."""
    if record.key is None:
        return []
    if record.value is None:
        return [WorkerGone(record.key.decode(errors="replace"))]
    try:
        report = decode_report(record.value)
    except (DecodeError, BadInput, TypeError):
        return []
    return [
        WorkerRow(
            report.worker_id,
            report.queue,
            report.host,
            report.reported_at_ms,
            report.interval_ms,
            record.value,
        )
    ]


def schedule_changes(record: BareRecord) -> list[Change]:
    """``<prefix>.schedules``: the record of a key this version knows, as it is (a tombstone
    too: it deletes the key's record); unknown keys map to nothing, as the scheduler ignores
    them."""
    parsed = parse_key(record.key)
    if parsed is None or record.key is None:
        return []
    return [ScheduleRecord(record.key, parsed.queue, parsed.name, parsed.kind, record.value)]


def cancel_changes(record: BareRecord) -> list[Change]:
    """``<prefix>.cancels``: a task's latest cancel request, or its tombstone."""
    if record.key is None:
        return []
    task_id = record.key.decode(errors="replace")
    if record.value is None:
        return [CancelRow(task_id)]
    try:
        request = decode_cancel(record.value)
    except (DecodeError, BadInput, TypeError):
        return []
    return [
        CancelRow(
            request.task_id, request.generation, request.requested_at_ms, request.requested_by
        )
    ]
