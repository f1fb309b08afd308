"""Dead letters for operators to read: list them and show one in full.

Owns reading ``<prefix>.<queue>.dlq`` into :class:`DeadLetterInfo` (each marked when the redrive
ledger, the compacted ``<prefix>.<queue>.dlq.redriven`` topic keyed ``"partition:offset"``, holds
it), the detail view of one dead letter (envelope fields, error, attempts, origin, payload
decoded through the schemas topic when its writer schema is there, else hex), the selection
filters (reason, task, time) and recovering a dead letter's original envelope and headers.

Does not decide what is dead (:mod:`streamjobs.retry`), write dead letters (the worker does) or
re-drive them (:mod:`streamjobs.ops.redrive`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

from streamjobs import client
from streamjobs.client import OffsetRange, read_range
from streamjobs.codec import decode_body
from streamjobs.deadletter import decode_dead_letter
from streamjobs.envelope import Envelope, decode_envelope
from streamjobs.errors import BadInput, ConfigError
from streamjobs.ops.replay import plan_ranges
from streamjobs.ops.rerun import to_ms
from streamjobs.schemastore import SchemaStore
from streamjobs.settings import Settings
from streamjobs.topics import queue_topics

UNDECODABLE = "undecodable_dead_letter"


def parse_ref(ref: str) -> tuple[int, int]:
    """``"partition:offset"`` as two integers; ConfigError otherwise."""
    partition, sep, offset = ref.strip().partition(":")
    try:
        if not sep:
            raise ValueError(ref)
        found = int(partition), int(offset)
    except ValueError:
        raise ConfigError(f"not a dead-letter reference {ref!r} (use PARTITION:OFFSET)") from None
    if min(found) < 0:
        raise ConfigError(f"not a dead-letter reference {ref!r} (negative)")
    return found


@dataclass(frozen=True, slots=True)
class DeadLetterInfo:
    """One record of the dead-letter topic, as a list shows it."""

    partition: int
    offset: int
    timestamp_ms: int
    reason: str
    task_id: str | None = None
    task: str | None = None
    error_type: str | None = None
    error: str | None = None
    attempts: int = 0
    generation: int = 0
    worker_id: str | None = None
    failed_at_ms: int | None = None
    origin_topic: str | None = None
    origin_partition: int | None = None
    origin_offset: int | None = None
    original_size: int = 0
    truncated: bool = False
    redriven: bool = False

    @property
    def ref(self) -> str:
        return f"{self.partition}:{self.offset}"

    def as_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, **asdict(self)}


@dataclass(frozen=True, slots=True)
class DeadLetterDetail:
    """One dead letter in full: what ``dlq show`` prints."""

    info: DeadLetterInfo
    envelope: Envelope | None
    envelope_error: str | None
    args: dict[str, Any] | None
    payload_hex: str | None
    payload_size: int
    headers: dict[str, str]

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.info.as_dict(),
            "envelope": None if self.envelope is None else _shown(self.envelope),
            "envelope_error": self.envelope_error,
            "args": self.args,
            "payload_hex": self.payload_hex,
            "payload_size": self.payload_size,
            "headers": self.headers,
        }


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead-letter record with its decoded value (None when even that is undecodable)."""

    record: client.Record
    value: dict[str, Any] | None
    info: DeadLetterInfo


def _info(record: client.Record, ledger: set[str]) -> DeadLetter:
    base = DeadLetterInfo(
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=record.timestamp_ms,
        reason=UNDECODABLE,
        redriven=f"{record.partition}:{record.offset}" in ledger,
    )
    try:
        value = decode_dead_letter(record.value or b"")
    except BadInput as exc:
        return DeadLetter(record, None, replace(base, error=str(exc)))
    return DeadLetter(record, value, replace(base, **{name: value[name] for name in _COPIED}))


_COPIED = (
    "reason",
    "task_id",
    "task",
    "error_type",
    "error",
    "attempts",
    "generation",
    "worker_id",
    "failed_at_ms",
    "origin_topic",
    "origin_partition",
    "origin_offset",
    "original_size",
    "truncated",
)


def read_ledger(settings: Settings) -> set[str]:
    """The ``"partition:offset"`` keys of every dead letter already re-driven."""
    topic = queue_topics(settings).redriven
    keys: set[str] = set()
    for record in read_range(client.KafkaClients(settings), topic, _whole(settings, topic)):
        if record.key is None:
            continue
        key = record.key.decode(errors="replace")
        if record.value is None:
            keys.discard(key)  # tombstoned by an operator: may be re-driven again
        else:
            keys.add(key)
    return keys


def _whole(settings: Settings, topic: str, since: datetime | None = None) -> list[OffsetRange]:
    if since is None:
        return plan_ranges(settings, topic, from_offset=0)
    return plan_ranges(settings, topic, from_time=since)


def dead_letters(
    settings: Settings,
    ranges: list[OffsetRange] | None = None,
    since: datetime | None = None,
) -> Iterator[DeadLetter]:
    topic = queue_topics(settings).dlq
    ledger = read_ledger(settings)
    with contextlib.closing(
        read_range(
            client.KafkaClients(settings),
            topic,
            ranges if ranges is not None else _whole(settings, topic, since),
        )
    ) as records:
        for record in records:
            yield _info(record, ledger)


def selected(
    info: DeadLetterInfo, reason: str | None, task: str | None, since_ms: int | None
) -> bool:
    if reason is not None and info.reason != reason:
        return False
    if task is not None and info.task != task:
        return False
    return since_ms is None or (info.failed_at_ms or info.timestamp_ms) >= since_ms


def list_dead_letters(
    settings: Settings,
    reason: str | None = None,
    task: str | None = None,
    since: datetime | None = None,
) -> list[DeadLetterInfo]:
    """Dead letters of the queue, oldest first per partition, filtered by reason, task, time."""
    since_ms = None if since is None else to_ms(since)
    return [
        found.info
        for found in dead_letters(settings, since=since)
        if selected(found.info, reason, task, since_ms)
    ]


def show(settings: Settings, ref: str) -> DeadLetterDetail:
    """Everything known about the dead letter at ``ref`` (``"partition:offset"``)."""
    partition, offset = parse_ref(ref)
    dlq = queue_topics(settings).dlq
    # clamped to what the partition holds: an offset past the end is an empty range, no wait
    one = plan_ranges(settings, dlq, partition=partition, from_offset=offset, to_offset=offset)
    found = list(dead_letters(settings, one))
    if not found:
        raise ConfigError(f"no dead letter at {ref} on {dlq}")
    dead = found[0]
    headers = {
        k: (v.decode(errors="replace") if v is not None else "")
        for k, v in original_headers(dead.value)
    }
    try:
        envelope = envelope_of(dead)
    except BadInput as exc:
        return DeadLetterDetail(dead.info, None, f"{exc.reason}: {exc}", None, None, 0, headers)
    payload = envelope.payload
    args = _decoded_args(settings, envelope)
    return DeadLetterDetail(dead.info, envelope, None, args, payload.hex(), len(payload), headers)


def _shown(envelope: Envelope) -> dict[str, Any]:
    """The envelope as ``dlq show`` prints it: the payload apart, the fingerprint in hex."""
    fields = envelope.as_dict()
    del fields["payload"]
    return {**fields, "payload_schema": envelope.payload_schema.hex()}


def _decoded_args(settings: Settings, envelope: Envelope) -> dict[str, Any] | None:
    """The task's arguments, decoded with its writer schema from the schemas topic, if there."""
    try:
        writer = SchemaStore(settings).writer(envelope.payload_schema, envelope.submitted_at_ms)
        args = decode_body(writer, envelope.payload, 0)
    except BadInput:
        return None
    return {k: (v.hex() if isinstance(v, bytes) else v) for k, v in args.items()}


def original_headers(value: dict[str, Any] | None) -> list[tuple[str, bytes | None]]:
    if value is None:
        return []
    return [(h["key"], h["value"]) for h in value["original_headers"]]


def envelope_of(dead: DeadLetter) -> Envelope:
    """The task envelope a dead letter keeps; BadInput when there is none to re-drive."""
    if dead.value is None:
        raise BadInput(dead.info.error or "undecodable dead letter", reason=UNDECODABLE)
    if dead.value["truncated"]:
        raise BadInput("original value truncated to fit the dead-letter topic", reason="truncated")
    if not dead.value["original_value"]:
        raise BadInput("the original record had no value", reason="empty_value")
    return decode_envelope(dead.value["original_value"])
