"""Task status records: their layout, building and decoding them, and which record wins.

Owns the status record layout (see ``schemas/task_status.avsc``) and its ``streamjobs-submission``
header (a digest of what was submitted, carried by every status record of a task so that a
submit reusing a task id can tell a retried submit from a clash), the ``StatusView`` users see,
:func:`newer` (the highest version of a task's records on one topic wins, a tombstone removes
it) and :func:`merged`: the rule by which readers combine the status topic with the submitted
topic (a status-topic record always wins; an id with only a submitted record answers
``queued``). Status records are always keyed by ``task_id``: a compacted topic rejects unkeyed
records. Does not read Kafka (:mod:`streamjobs.statusreads` does) or decide state transitions
(the worker does).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from streamjobs import client
from streamjobs.codec import (
    MAGIC,
    NOT_NULL,
    NULL,
    builtin,
    optional_int,
    optional_long,
    optional_string,
    write_int,
    write_long,
    write_string,
)
from streamjobs.envelope import Envelope
from streamjobs.errors import (
    DecodeError,
    EncodeError,
    TaskCancelled,
    TaskFailed,
)
from streamjobs.flatread import FlatReader
from streamjobs.models import TaskState, status_version

_CODEC = builtin("task_status")


#: Record header on status records: :func:`submission_digest` of the task they describe.
SUBMISSION_HEADER = "streamjobs-submission"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def submission_digest(envelope: Envelope) -> bytes:
    """What identifies a submission's arguments: task type, key, payload schema and payload
    bytes (128-bit BLAKE2b, hex). Attempts, generations and due times do not change it."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (
        envelope.task.encode(),
        (envelope.key or "").encode(),
        envelope.payload_schema,
        envelope.payload,
    ):
        digest.update(len(part).to_bytes(8, "big"))  # length-prefixed: no two splits collide
        digest.update(part)
    return digest.hexdigest().encode()


def submission_headers(envelope: Envelope) -> list[tuple[str, bytes | None]]:
    """The headers every status record of the task in ``envelope`` carries."""
    return [(SUBMISSION_HEADER, submission_digest(envelope))]


def _submission_of(headers: Any) -> str | None:
    for name, value in headers or ():
        if name == SUBMISSION_HEADER and value is not None:
            return bytes(value).decode("ascii", "replace")
    return None


@dataclass(frozen=True, slots=True)
class StatusView:
    """The latest known state of one task, decoded from the status topic."""

    task_id: str
    task: str
    queue: str
    state: TaskState
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
    note: str | None = None
    #: the ``streamjobs-submission`` header of the record (None when it carried none)
    submission: str | None = None

    @property
    def result(self) -> Any:
        """The handler's return value (decoded from JSON), or None."""
        return None if self.result_json is None else json.loads(self.result_json)

    def as_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["state"] = self.state.value
        out["result"] = self.result
        del out["result_json"]
        return out


# Status records are written three times per task (queued, running, outcome), so they are
# encoded straight to bytes in the schema's field order; the import-time check below and the
# unit tests (same bytes as fastavro) keep this in step with task_status.avsc.
_FIELDS = (
    "task_id", "task", "queue", "state", "version", "attempt", "generation", "updated_at_ms",
    "key", "result", "error_type", "error", "reason", "topic", "partition", "offset",
    "worker_id", "trace_id", "not_before_ms", "submitted_at_ms", "note",
)  # fmt: skip
if tuple(f["name"] for f in _CODEC.schema["fields"]) != _FIELDS:
    raise ImportError("task_status.avsc and status._FIELDS disagree on the field order")
#: The optional columns a caller may fill (``key``, ``not_before_ms`` and ``submitted_at_ms``
#: default to the envelope's).
STATUS_FIELDS = frozenset(_FIELDS[8:])
_HEADER = MAGIC + _CODEC.fingerprint
_STATE = {state: write_string(state.value) for state in TaskState}


@lru_cache(maxsize=4096)
def _version(generation: int, attempt: int, state: TaskState) -> bytes:
    return write_long(status_version(generation, attempt, state))


class _Clock:
    """``updated_at_ms`` encoded, reused within a millisecond (many statuses share one)."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = (0, b"")

    def now(self) -> bytes:
        ms = now_ms()
        last = self._last  # one read: another thread may replace it meanwhile
        if last[0] != ms:
            last = self._last = (ms, write_long(ms))
        return last[1]


_CLOCK = _Clock()


def encode_status(envelope: Envelope, state: TaskState, **fields: Any) -> bytes:
    """A status record for the task in ``envelope``; ``fields`` fill the optional columns."""
    unknown = fields.keys() - STATUS_FIELDS
    if unknown:
        raise TypeError(f"not an optional status column: {sorted(unknown)}")
    get = fields.get
    try:
        return b"".join(
            (
                _HEADER,
                write_string(envelope.task_id),
                write_string(envelope.task),
                write_string(envelope.queue),
                _STATE[state],
                _version(envelope.generation, envelope.attempt, state),
                write_int(envelope.attempt),
                write_int(envelope.generation),
                _CLOCK.now(),
                optional_string(get("key", envelope.key)),
                optional_string(get("result")),
                optional_string(get("error_type")),
                optional_string(get("error")),
                optional_string(get("reason")),
                optional_string(get("topic")),
                optional_int(get("partition")),
                optional_long(get("offset")),
                optional_string(get("worker_id")),
                optional_string(get("trace_id")),
                optional_long(get("not_before_ms", envelope.not_before_ms)),
                optional_long(get("submitted_at_ms", envelope.submitted_at_ms)),
                optional_string(get("note")),
            )
        )
    except (TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise EncodeError(f"cannot encode TaskStatus: {exc}") from exc


class AttemptStatuses:
    """The ``running`` and ``succeeded`` records of one run of a task.

    Both carry the same task, key, position and worker: those columns are encoded once per run,
    and each record adds only its state, version, time and result. Byte-identical to
    :func:`encode_status` given the same columns (a unit test holds the two together).
    """

    __slots__ = (
        "_after_time",
        "_attempt",
        "_before_state",
        "_generation",
        "_numbers",
        "_tail",
        "headers",
    )

    def __init__(self, envelope: Envelope, where: dict[str, Any]) -> None:
        """``where``: the run's topic, partition, offset, worker_id and trace_id columns."""
        try:
            self._generation = envelope.generation
            self._attempt = envelope.attempt
            self._before_state = b"".join(
                (
                    _HEADER,
                    write_string(envelope.task_id),
                    write_string(envelope.task),
                    write_string(envelope.queue),
                )
            )
            self._after_time = optional_string(envelope.key)
            self._tail = b"".join(
                (
                    NULL * 3,  # error_type, error, reason: a running or succeeded task has none
                    optional_string(where["topic"]),
                    optional_int(where["partition"]),
                    optional_long(where["offset"]),
                    optional_string(where["worker_id"]),
                    optional_string(where["trace_id"]),
                    optional_long(envelope.not_before_ms),
                    optional_long(envelope.submitted_at_ms),
                    NULL,  # note
                )
            )
            self._numbers = write_int(self._attempt) + write_int(self._generation)
            self.headers = submission_headers(envelope)
        except (TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise EncodeError(f"cannot encode TaskStatus: {exc}") from exc

    def encode(self, state: TaskState, result: str | None = None) -> bytes:
        return b"".join(
            (
                self._before_state,
                _STATE[state],
                _version(self._generation, self._attempt, state),
                self._numbers,
                _CLOCK.now(),
                self._after_time,
                NULL if result is None else NOT_NULL + write_string(result),
                self._tail,
            )
        )


class SubmittedStatuses:
    """The ``queued`` (or ``scheduled``) record of new tasks of one type, queue and topic.

    ``submit`` writes one per task: everything but the id, time, key and due times is the same
    for all of them, so it is encoded once. Byte-identical to :func:`encode_status` of a new
    task (attempt 1, generation 0) with ``topic`` (a unit test holds the two together); any
    other envelope is encoded by it.
    """

    __slots__ = ("_after_id", "_middle", "_state", "_topic")

    def __init__(self, task: str, queue: str, state: TaskState, topic: str) -> None:
        self._state, self._topic = state, topic
        self._after_id = b"".join(
            (
                write_string(task),
                write_string(queue),
                _STATE[state],
                _version(0, 1, state),
                write_int(1),  # attempt
                write_int(0),  # generation
            )
        )
        # result, error_type, error, reason; topic; partition, offset, worker_id, trace_id
        self._middle = NULL * 4 + optional_string(topic) + NULL * 4

    def encode(self, envelope: Envelope) -> bytes:
        if envelope.attempt != 1 or envelope.generation != 0:
            return encode_status(envelope, self._state, topic=self._topic)
        try:
            return b"".join(
                (
                    _HEADER,
                    write_string(envelope.task_id),
                    self._after_id,
                    _CLOCK.now(),
                    optional_string(envelope.key),
                    self._middle,
                    optional_long(envelope.not_before_ms),
                    optional_long(envelope.submitted_at_ms),
                    NULL,  # note
                )
            )
        except (TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise EncodeError(f"cannot encode TaskStatus: {exc}") from exc


# Indexes and dashboards decode every status record ever written: a straight-line reader of the
# schema's fields is ~3x fastavro's generic one. Anything it does not read cleanly goes to
# fastavro for the precise error; a unit test holds both readers to the same answers.
# StatusView's fields are the schema's, in its order, so the values go straight to its
# constructor.
_READER = FlatReader(_CODEC.schema, _HEADER)
_STATES = {state.value: state for state in TaskState}


def status_values(value: bytes) -> list[Any]:
    """A status record's values in StatusView's field order, ``state`` as its wire string:
    for readers of every record (the index) that need no StatusView. DecodeError when
    ``value`` is not a status record."""
    fast = _READER.read(value)
    if fast is not None and fast[3] in _STATES:
        return fast
    record = _CODEC.decode(value)  # raises the precise DecodeError
    if record["state"] not in _STATES:
        raise DecodeError(f"unknown state {record['state']!r}")
    return [record[name] for name in _FIELDS]


def decode_status(value: bytes, headers: Any = None) -> StatusView:
    """A status record's value (and, if given, its headers) as a StatusView."""
    values = status_values(value)
    values[3] = _STATES[values[3]]
    values.append(_submission_of(headers))  # StatusView's last field, after the schema's
    return StatusView(*values)


def status_partition(partitions: int, task_id: str) -> int:
    """The status partition of ``task_id``: every writer uses the murmur2 partitioner."""
    return client.murmur2_partition(task_id.encode(), partitions)


def merged(status: StatusView | None, submitted: StatusView | None) -> StatusView | None:
    """What a task id answers, given its latest record on the status topic and on the submitted
    topic (None: none, or tombstoned). A status-topic record always wins, whatever arrived
    first: the submitted record only says ``queued`` (or ``scheduled``) until a worker, a replay
    or a redrive has written a status. So a submitted record landing late, after the worker's
    ``succeeded``, can never regress the task (see :mod:`streamjobs.confirmed`)."""
    return status if status is not None else submitted


def raise_for_failure(view: StatusView) -> Any:
    """The result of a succeeded task; TaskFailed for a dead-lettered one, TaskCancelled (a
    TaskFailed) for a cancelled one."""
    if view.state is TaskState.SUCCEEDED:
        return view.result
    if view.state is TaskState.CANCELLED:
        raise TaskCancelled(view.task_id, error_type=view.error_type, error=view.error)
    raise TaskFailed(view.task_id, reason=view.reason, error_type=view.error_type, error=view.error)


def newer(best: StatusView | None, record: client.Record) -> StatusView | None:
    """A task's view on one topic after one more of its records: the highest version wins (a
    zombie's late write of an older attempt never hides a newer outcome), a tombstone removes
    it, an undecodable record changes nothing."""
    if record.value is None:  # tombstone: the result expired, or the submit was withdrawn
        return None
    try:
        view = decode_status(record.value, record.headers)
    except DecodeError:
        return best
    return view if best is None or view.version >= best.version else best
