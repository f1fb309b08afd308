"""Dead letters for operators: list, show and re-drive them, each record at most once.

Owns reading ``<prefix>.<queue>.dlq`` into :class:`DeadLetterInfo`, the detail view of one dead
letter (envelope fields, error, attempts, origin, payload decoded through the schemas topic when
its writer schema is there, else hex), and re-driving: the original envelope goes back to the
queue with its own ``task_id`` and key, attempt 1, the next generation and a note saying who
re-drove it from where and when.

"Never twice" is a durable ledger, the compacted ``<prefix>.<queue>.dlq.redriven`` topic keyed
``"partition:offset"``. A dead letter's key is written there, acknowledged, *before* its task is
re-submitted, so a crash in between loses a redrive (the operator sees it failed and can
tombstone the key) instead of running the task twice. Redrives go in chunks (``chunk_size``):
a chunk's entries are acknowledged before any of its tasks is produced, so such a crash can
lose up to a chunk. A ledger value is the ``queued`` status record the redrive wrote (task id,
generation, note), so the ledger needs no schema of its own.
Dead letters already in the ledger, without a decodable envelope (poison bytes, truncated
values) or superseded by a newer generation of their task are skipped with a reason.

Does not decide what is dead (:mod:`streamjobs.retry`), write dead letters (the worker does)
or guard against two operators re-driving the same record at the same instant.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from streamjobs import client, status
from streamjobs.client import OffsetRange, read_range
from streamjobs.codec import decode_body
from streamjobs.deadletter import decode_dead_letter
from streamjobs.envelope import Envelope, decode_envelope
from streamjobs.errors import BadInput, ConfigError, StreamJobsError, SubmitError
from streamjobs.models import TaskState
from streamjobs.ops.replay import CHUNK_SIZE, Chunks, Progress, default_actor, plan_ranges, to_ms
from streamjobs.producer import Producer, Resubmission
from streamjobs.schemastore import SchemaStore
from streamjobs.settings import Settings
from streamjobs.status import StatusView
from streamjobs.taskhandle import TaskHandle
from streamjobs.topics import queue_topics

Outcome = Literal["redriven", "would_redrive", "skipped", "failed"]
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
class _DeadLetter:
    """A dead-letter record with its decoded value (None when even that is undecodable)."""

    record: client.Record
    value: dict[str, Any] | None
    info: DeadLetterInfo


def _info(record: client.Record, ledger: set[str]) -> _DeadLetter:
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
        return _DeadLetter(record, None, replace(base, error=str(exc)))
    return _DeadLetter(record, value, replace(base, **{name: value[name] for name in _COPIED}))


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


def _dead_letters(
    settings: Settings,
    ranges: list[OffsetRange] | None = None,
    since: datetime | None = None,
) -> Iterator[_DeadLetter]:
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


def _selected(
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
        for found in _dead_letters(settings, since=since)
        if _selected(found.info, reason, task, since_ms)
    ]


def show(settings: Settings, ref: str) -> DeadLetterDetail:
    """Everything known about the dead letter at ``ref`` (``"partition:offset"``)."""
    partition, offset = parse_ref(ref)
    dlq = queue_topics(settings).dlq
    # clamped to what the partition holds: an offset past the end is an empty range, no wait
    one = plan_ranges(settings, dlq, partition=partition, from_offset=offset, to_offset=offset)
    found = list(_dead_letters(settings, one))
    if not found:
        raise ConfigError(f"no dead letter at {ref} on {dlq}")
    dead = found[0]
    headers = {
        k: (v.decode(errors="replace") if v is not None else "")
        for k, v in _original_headers(dead.value)
    }
    try:
        envelope = _envelope_of(dead)
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


def _original_headers(value: dict[str, Any] | None) -> list[tuple[str, bytes | None]]:
    if value is None:
        return []
    return [(h["key"], h["value"]) for h in value["original_headers"]]


def _envelope_of(dead: _DeadLetter) -> Envelope:
    """The task envelope a dead letter keeps; BadInput when there is none to re-drive."""
    if dead.value is None:
        raise BadInput(dead.info.error or "undecodable dead letter", reason=UNDECODABLE)
    if dead.value["truncated"]:
        raise BadInput("original value truncated to fit the dead-letter topic", reason="truncated")
    if not dead.value["original_value"]:
        raise BadInput("the original record had no value", reason="empty_value")
    return decode_envelope(dead.value["original_value"])


# -- redrive ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RedriveItem:
    """What happened to one selected dead letter."""

    ref: str
    outcome: Outcome
    task_id: str | None = None
    task: str | None = None
    reason: str | None = None
    generation: int | None = None
    new_partition: int | None = None
    new_offset: int | None = None


@dataclass(slots=True)
class RedriveSummary:
    """The outcome of a redrive; in a dry run ``redriven`` counts what would be re-driven."""

    items: list[RedriveItem] = field(default_factory=list)
    dry_run: bool = False

    def _count(self, *outcomes: Outcome) -> int:
        return sum(1 for item in self.items if item.outcome in outcomes)

    @property
    def redriven(self) -> int:
        return self._count("redriven", "would_redrive")

    @property
    def skipped(self) -> int:
        return self._count("skipped")

    @property
    def failed(self) -> int:
        return self._count("failed")

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "redriven": self.redriven,
            "skipped": self.skipped,
            "failed": self.failed,
            "items": [asdict(item) for item in self.items],
        }


class _Redriver:
    """Decides the redrive of one dead letter at a time; the re-submissions are written in
    chunks, each chunk's ledger entries acknowledged before its tasks are produced."""

    def __init__(self, settings: Settings, producer: Producer | None, actor: str) -> None:
        self.settings = settings
        self.producer = producer
        self.actor = actor
        self.topics = queue_topics(settings)
        self.statuses: dict[str, StatusView] = status.snapshot(settings)
        self.done: set[str] = set()
        self.ledger = client.new_producer(settings) if producer is not None else None

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.flush(10.0)

    def consider(self, dead: _DeadLetter) -> tuple[RedriveItem, Resubmission | None]:
        """The item for ``dead`` (final unless a resubmission to write comes with it)."""
        ref = dead.info.ref
        if dead.info.redriven:
            return RedriveItem(
                ref, "skipped", dead.info.task_id, dead.info.task, "already redriven"
            ), None
        try:
            envelope = _envelope_of(dead)
        except BadInput as exc:
            reason = f"cannot be redriven, no decodable envelope ({exc.reason}): {exc}"
            return RedriveItem(ref, "skipped", dead.info.task_id, dead.info.task, reason), None
        ids = (envelope.task_id, envelope.task)
        skip = self._skip_reason(envelope)
        if skip is not None:
            return RedriveItem(ref, "skipped", *ids, reason=skip), None
        self.done.add(envelope.task_id)
        current = self.statuses.get(envelope.task_id)
        known = [envelope.generation, dead.info.generation, current.generation if current else 0]
        again = replace(envelope, generation=max(known) + 1)
        item = RedriveItem(ref, "would_redrive", *ids, generation=again.generation)
        if self.producer is None:
            return item, None
        try:
            return replace(item, outcome="redriven"), self._prepare(dead, again)
        except StreamJobsError as exc:
            return RedriveItem(ref, "failed", *ids, reason=f"not re-submitted: {exc}"), None

    def _skip_reason(self, envelope: Envelope) -> str | None:
        task_id = envelope.task_id
        if envelope.queue != self.settings.queue:
            return f"belongs to queue {envelope.queue!r}"
        if task_id in self.done:
            return "task already redriven in this run"
        current = self.statuses.get(task_id)
        if current is not None and current.state is TaskState.SUCCEEDED:
            return f"task has succeeded since (generation {current.generation})"
        if current is not None and current.generation > envelope.generation:
            return f"superseded: task is at generation {current.generation} ({current.state})"
        return None

    def _prepare(self, dead: _DeadLetter, again: Envelope) -> Resubmission:
        assert self.producer is not None
        record = dead.record
        when = datetime.now(UTC).isoformat(timespec="seconds")
        note = f"redriven from dlq[{record.partition}]@{record.offset} by {self.actor} at {when}"
        return self.producer.prepare_resubmit(
            again,
            note=note,
            origin=record.position,
            headers=_original_headers(dead.value),
            operation="redrive",
        )

    def write(self, chunk: list[tuple[RedriveItem, Resubmission]]) -> list[RedriveItem]:
        """The chunk's ledger entries, acknowledged, then its tasks in one confirmed write."""
        assert self.producer is not None
        assert self.ledger is not None
        # the ledger first: a crash after this line loses redrives, it never runs one twice
        entries = [(item.ref.encode(), prepared.queued_status) for item, prepared in chunk]
        client.produce_confirmed(self.ledger, self.topics.redriven, entries)
        results = self.producer.resubmit_many([prepared for _, prepared in chunk])
        final = [_settled(item, result) for (item, _), result in zip(chunk, results, strict=True)]
        unconfirmed = [(i.ref.encode(), None) for i in final if i.outcome == "failed"]
        if unconfirmed:
            # best effort: take those entries back so the dead letters can be re-driven later
            with contextlib.suppress(StreamJobsError):
                client.produce_confirmed(self.ledger, self.topics.redriven, unconfirmed)
        return final


def _settled(item: RedriveItem, result: TaskHandle | SubmitError) -> RedriveItem:
    if isinstance(result, SubmitError):
        return replace(
            item, outcome="failed", generation=None, reason=f"not re-submitted: {result}"
        )
    return replace(item, new_partition=result.partition, new_offset=result.offset)


def redrive(
    settings: Settings,
    *,
    reason: str | None = None,
    task: str | None = None,
    since: datetime | None = None,
    refs: list[str] | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
    actor: str | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> RedriveSummary:
    """Re-submit the selected dead letters' tasks; each dead letter is re-driven at most once.

    Selection: ``refs`` (``"partition:offset"``) if given, else every dead letter matching
    ``reason``, ``task`` and ``since``. ``progress(done, total)`` is called per selected letter.
    Re-submissions are written ``chunk_size`` at a time, in dead-letter order: a chunk's ledger
    entries are acknowledged before its tasks are produced, and the next chunk waits for both.
    """
    wanted = None if refs is None else {"{}:{}".format(*parse_ref(r)) for r in refs}
    since_ms = None if since is None else to_ms(since)
    chosen = [
        dead
        for dead in _dead_letters(settings, since=since)
        if (wanted is None or dead.info.ref in wanted)
        and _selected(dead.info, reason, task, since_ms)
    ]
    summary = RedriveSummary(dry_run=dry_run)
    with contextlib.ExitStack() as stack:
        producer = None if dry_run else stack.enter_context(Producer(settings))
        redriver = _Redriver(settings, producer, actor or default_actor())
        stack.callback(redriver.close)
        chunks = Chunks(chunk_size, redriver.write)
        for done, dead in enumerate(chosen, start=1):
            chunks.add(*redriver.consider(dead))
            if progress is not None:
                progress(done, len(chosen))
        chunks.flush()
    summary.items = chunks.items
    missing = sorted((wanted or set()) - {dead.info.ref for dead in chosen})
    summary.items += [
        RedriveItem(ref, "skipped", reason="no such dead letter (or filtered out)")
        for ref in missing
    ]
    return summary
