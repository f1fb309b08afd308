"""Replay: run the tasks of a topic range again, under their own ids, keys and linked traces.

Owns turning an offset or time range into per-partition offset ranges (``offsets_for_times``,
clamped to the high watermark), reading those ranges (:func:`read_range`, also used by dead-letter
and inspection code), and the replay policy: a task whose status is ``succeeded`` is skipped
unless forced, each task id is replayed at most once per run, and a replayed task gets the next
generation so its new statuses outrank every old one. Undecodable records are reported as
failed, never fatal. Re-submission itself is :meth:`streamjobs.producer.Producer.resubmit`.

Does not replay dead letters (:mod:`streamjobs.redrive` does, with a ledger), decode task
payloads, or read topics that do not belong to the queue: a replayed task always goes back to
its queue's main topic and runs now (a pending delay is not kept).
"""

from __future__ import annotations

import contextlib
import getpass
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from streamjobs import client, status
from streamjobs.client import OffsetRange, read_range
from streamjobs.codec import builtin
from streamjobs.errors import BadInput, ConfigError, SubmitError
from streamjobs.models import TaskState
from streamjobs.producer import Producer
from streamjobs.settings import Settings
from streamjobs.status import StatusView
from streamjobs.topics import queue_topics

ENVELOPE = builtin("task_envelope")
Outcome = Literal["replayed", "would_replay", "skipped", "failed"]
Progress = Callable[[int, int], None]


def default_actor() -> str:
    """``user@host`` of the operator, for the notes replays and redrives leave on statuses."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER: a bare container
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def to_ms(moment: datetime) -> int:
    """Unix milliseconds of a timezone-aware datetime (naive ones are refused: ambiguous)."""
    if moment.tzinfo is None:
        raise ConfigError(f"{moment.isoformat()} has no timezone (add one, e.g. +00:00 or Z)")
    return int(moment.astimezone(UTC).timestamp() * 1000)


# -- reading ranges --------------------------------------------------------------------------


def plan_ranges(
    settings: Settings,
    topic: str,
    *,
    partition: int | None = None,
    from_offset: int | None = None,
    from_time: datetime | None = None,
    to_offset: int | None = None,
    to_time: datetime | None = None,
) -> list[OffsetRange]:
    """Per-partition ranges for a replay: from an offset or a time, up to an offset (inclusive),
    a time (exclusive) or the current end. Offsets are clamped to what the partition holds."""
    if (from_offset is None) == (from_time is None):
        raise ConfigError("give exactly one start: from_offset or from_time (--from-offset/-time)")
    if to_offset is not None and to_time is not None:
        raise ConfigError("give at most one end: to_offset or to_time (--to-offset/-time)")
    consumer = client.new_reader(settings)
    try:
        partitions = client.partition_ids(consumer, topic)
        if partition is not None:
            if partition not in partitions:
                raise ConfigError(f"{topic} has no partition {partition} (it has {partitions})")
            partitions = [partition]
        marks = {p: client.watermarks(consumer, topic, p) for p in partitions}
        starts = _bounds(consumer, topic, marks, from_offset, from_time)
        ends = _bounds(
            consumer, topic, marks, None if to_offset is None else to_offset + 1, to_time
        )
    finally:
        consumer.close()
    return [OffsetRange(p, starts[p], max(starts[p], ends[p])) for p in partitions]


def _bounds(
    consumer: client.Consumer,
    topic: str,
    marks: dict[int, tuple[int, int]],
    offset: int | None,
    moment: datetime | None,
) -> dict[int, int]:
    """An offset per partition from ``offset`` or ``moment`` (else the high watermark)."""
    if moment is not None:
        found = client.offsets_for_times(consumer, topic, dict.fromkeys(marks, to_ms(moment)))
        # -1: no record at or after that time, i.e. the range bound is the current end
        return {p: high if found[p] < 0 else found[p] for p, (_low, high) in marks.items()}
    if offset is not None:
        return {p: min(max(offset, low), high) for p, (low, high) in marks.items()}
    return {p: high for p, (_low, high) in marks.items()}


# -- replay ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplayItem:
    """What happened to one selected record."""

    topic: str
    partition: int
    offset: int
    outcome: Outcome
    task_id: str | None = None
    task: str | None = None
    reason: str | None = None
    generation: int | None = None
    new_partition: int | None = None
    new_offset: int | None = None


@dataclass(slots=True)
class ReplaySummary:
    """The outcome of a replay; in a dry run ``replayed`` counts what would be replayed."""

    items: list[ReplayItem] = field(default_factory=list)
    dry_run: bool = False

    def _count(self, *outcomes: Outcome) -> int:
        return sum(1 for item in self.items if item.outcome in outcomes)

    @property
    def replayed(self) -> int:
        return self._count("replayed", "would_replay")

    @property
    def skipped(self) -> int:
        return self._count("skipped")

    @property
    def failed(self) -> int:
        return self._count("failed")

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "replayed": self.replayed,
            "skipped": self.skipped,
            "failed": self.failed,
            "items": [asdict(item) for item in self.items],
        }


class _Replayer:
    """Decides and performs the replay of one record at a time."""

    def __init__(
        self,
        settings: Settings,
        producer: Producer | None,
        *,
        task: str | None,
        force: bool,
        actor: str,
    ) -> None:
        self.settings = settings
        self.producer = producer
        self.task = task
        self.force = force
        self.actor = actor
        self.statuses: dict[str, StatusView] = status.snapshot(settings)
        self.done: set[str] = set()

    def consider(self, record: client.Record) -> ReplayItem | None:
        """The item for ``record``, or None when the task filter does not select it."""
        item = ReplayItem(record.topic, record.partition, record.offset, "failed")
        try:
            envelope = _decode(record.value)
        except BadInput as exc:
            return replace(item, reason=f"{exc.reason}: {exc}")
        if self.task is not None and envelope["task"] != self.task:
            return None
        item = replace(item, task_id=envelope["task_id"], task=envelope["task"])
        skip = self._skip_reason(envelope)
        if skip is not None:
            return replace(item, outcome="skipped", reason=skip)
        self.done.add(envelope["task_id"])
        current = self.statuses.get(envelope["task_id"])
        generation = max(envelope["generation"], current.generation if current else 0) + 1
        item = replace(item, generation=generation)
        if self.producer is None:
            return replace(item, outcome="would_replay")
        try:
            handle = self.producer.resubmit(
                {**envelope, "generation": generation},
                note=f"replayed from {record.topic}[{record.partition}]@{record.offset} "
                f"by {self.actor}",
                origin={
                    "topic": record.topic,
                    "partition": record.partition,
                    "offset": record.offset,
                    "timestamp_ms": record.timestamp_ms,
                },
                headers=record.headers,
                operation="replay",
            )
        except (SubmitError, BadInput) as exc:
            return replace(item, reason=f"not re-submitted: {exc}")
        return replace(
            item, outcome="replayed", new_partition=handle.partition, new_offset=handle.offset
        )

    def _skip_reason(self, envelope: dict[str, Any]) -> str | None:
        task_id = envelope["task_id"]
        if envelope["queue"] != self.settings.queue:
            return f"belongs to queue {envelope['queue']!r}"
        if task_id in self.done:
            return "already replayed in this run"
        current = self.statuses.get(task_id)
        if not self.force and current is not None and current.state is TaskState.SUCCEEDED:
            return f"succeeded (generation {current.generation}); use force to run it again"
        return None


def _decode(value: bytes | None) -> dict[str, Any]:
    if not value:
        raise BadInput("empty value or tombstone", reason="empty_value")
    return ENVELOPE.decode(value)


def replay(
    settings: Settings,
    *,
    topic: str,
    partition: int | None = None,
    from_offset: int | None = None,
    from_time: datetime | None = None,
    to_offset: int | None = None,
    to_time: datetime | None = None,
    task: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    progress: Progress | None = None,
    actor: str | None = None,
) -> ReplaySummary:
    """Re-submit the tasks found on ``topic`` in the given range to their queue.

    ``topic`` must be a task topic of ``settings.queue`` (main, retry or delay tier). The range
    ends at ``to_offset`` (inclusive), before ``to_time``, or at the end the topic had when the
    replay started (so tasks it re-submits to the main topic are never replayed again).
    ``progress(done, total)`` is called per record read; ``total`` counts offsets, an upper
    bound. A dry run reads everything and writes nothing.
    """
    if topic not in queue_topics(settings).task_topics:
        raise ConfigError(
            f"{topic} is not a task topic of queue {settings.queue!r} "
            f"(its topics: {', '.join(queue_topics(settings).task_topics)}); use --queue"
        )
    ranges = plan_ranges(
        settings,
        topic,
        partition=partition,
        from_offset=from_offset,
        from_time=from_time,
        to_offset=to_offset,
        to_time=to_time,
    )
    total = sum(r.size for r in ranges)
    summary = ReplaySummary(dry_run=dry_run)
    with contextlib.ExitStack() as stack:
        producer = None if dry_run else stack.enter_context(Producer(settings))
        replayer = _Replayer(
            settings, producer, task=task, force=force, actor=actor or default_actor()
        )
        records = stack.enter_context(contextlib.closing(read_range(settings, topic, ranges)))
        for done, record in enumerate(records, start=1):
            item = replayer.consider(record)
            if item is not None:
                summary.items.append(item)
            if progress is not None:
                progress(done, total)
    return summary
