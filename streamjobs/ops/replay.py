"""Replay: run the tasks of a topic range again, under their own ids, keys and linked traces.

Owns turning an offset or time range into per-partition offset ranges (``offsets_for_times``,
clamped to the high watermark; read through :func:`streamjobs.client.read_range`), and the
replay policy: a task whose status is ``succeeded`` is skipped
unless forced, each task id is replayed at most once per run, and a replayed task gets the next
generation so its new statuses outrank every old one. Undecodable records are reported as
failed, never fatal. Re-submissions are written in chunks
(:class:`~streamjobs.ops.rerun.Chunks`), each in one confirmed write
(:meth:`streamjobs.producer.Producer.resubmit_many`).

Does not replay dead letters (:mod:`streamjobs.ops.deadletters` does, with a ledger), decode task
payloads, or read topics that do not belong to the queue: a replayed task always goes back to
its queue's main topic and runs now (a pending delay is not kept).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from streamjobs import client, statusreads
from streamjobs.client import OffsetRange, read_range
from streamjobs.envelope import Envelope, decode_envelope
from streamjobs.errors import BadInput, ConfigError, SubmitError
from streamjobs.models import TaskState
from streamjobs.ops.rerun import CHUNK_SIZE, Chunks, Progress, Summary, default_actor, to_ms
from streamjobs.producer import Producer, Resubmission
from streamjobs.settings import Settings
from streamjobs.status import StatusView
from streamjobs.taskhandle import TaskHandle
from streamjobs.topics import queue_topics

Outcome = Literal["replayed", "would_replay", "skipped", "failed"]
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
        partitions = consumer.partition_ids(topic)
        if partition is not None:
            if partition not in partitions:
                raise ConfigError(f"{topic} has no partition {partition} (it has {partitions})")
            partitions = [partition]
        marks = {p: consumer.watermarks(topic, p) for p in partitions}
        starts = _bounds(consumer, topic, marks, from_offset, from_time)
        ends = _bounds(
            consumer, topic, marks, None if to_offset is None else to_offset + 1, to_time
        )
    finally:
        consumer.close()
    return [OffsetRange(p, starts[p], max(starts[p], ends[p])) for p in partitions]


def _bounds(
    consumer: client.KafkaConsumer,
    topic: str,
    marks: dict[int, tuple[int, int]],
    offset: int | None,
    moment: datetime | None,
) -> dict[int, int]:
    """An offset per partition from ``offset`` or ``moment`` (else the high watermark)."""
    if moment is not None:
        found = consumer.offsets_for_times(topic, dict.fromkeys(marks, to_ms(moment)))
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


class ReplaySummary(Summary[ReplayItem]):
    """The outcome of a replay; in a dry run ``replayed`` counts what would be replayed."""

    done_outcomes = ("replayed", "would_replay")
    done_name = "replayed"

    @property
    def replayed(self) -> int:
        return self.done


class _Replayer:
    """Decides the replay of one record at a time; the re-submissions are written in chunks."""

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
        self.statuses: dict[str, StatusView] = statusreads.snapshot(settings)
        self.done: set[str] = set()

    def consider(self, record: client.Record) -> tuple[ReplayItem, Resubmission | None] | None:
        """The item for ``record`` (final unless a resubmission to write comes with it), or
        None when the task filter does not select it."""
        where = (record.topic, record.partition, record.offset)
        try:
            envelope = _decode(record.value)
        except BadInput as exc:
            return ReplayItem(*where, "failed", reason=f"{exc.reason}: {exc}"), None
        if self.task is not None and envelope.task != self.task:
            return None
        ids = (envelope.task_id, envelope.task)
        skip = self._skip_reason(envelope)
        if skip is not None:
            return ReplayItem(*where, "skipped", *ids, reason=skip), None
        self.done.add(envelope.task_id)
        current = self.statuses.get(envelope.task_id)
        generation = max(envelope.generation, current.generation if current else 0) + 1
        if self.producer is None:
            return ReplayItem(*where, "would_replay", *ids, generation=generation), None
        # failed until its chunk is written (or at once, when it cannot be prepared)
        item = ReplayItem(*where, "failed", *ids, generation=generation)
        try:
            prepared = self.producer.prepare_resubmit(
                replace(envelope, generation=generation),
                note=f"replayed from {record.topic}[{record.partition}]@{record.offset} "
                f"by {self.actor}",
                origin=record.position,
                headers=record.headers,
                operation="replay",
            )
        except (SubmitError, BadInput) as exc:
            return replace(item, reason=f"not re-submitted: {exc}"), None
        return item, prepared

    def write(self, chunk: list[tuple[ReplayItem, Resubmission]]) -> list[ReplayItem]:
        """One confirmed write for the chunk; a record Kafka did not confirm fails alone."""
        assert self.producer is not None
        results = self.producer.resubmit_many([prepared for _, prepared in chunk])
        return [_settled(item, result) for (item, _), result in zip(chunk, results, strict=True)]

    def _skip_reason(self, envelope: Envelope) -> str | None:
        task_id = envelope.task_id
        if envelope.queue != self.settings.queue:
            return f"belongs to queue {envelope.queue!r}"
        if task_id in self.done:
            return "already replayed in this run"
        current = self.statuses.get(task_id)
        if not self.force and current is not None and current.state is TaskState.SUCCEEDED:
            return f"succeeded (generation {current.generation}); use --force to run it again"
        return None


def _settled(item: ReplayItem, result: TaskHandle | SubmitError) -> ReplayItem:
    if isinstance(result, SubmitError):
        return replace(item, reason=f"not re-submitted: {result}")
    return replace(
        item, outcome="replayed", new_partition=result.partition, new_offset=result.offset
    )


def _decode(value: bytes | None) -> Envelope:
    if not value:
        raise BadInput("empty value or tombstone", reason="empty_value")
    return decode_envelope(value)


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
    chunk_size: int = CHUNK_SIZE,
) -> ReplaySummary:
    """Re-submit the tasks found on ``topic`` in the given range to their queue.

    ``topic`` must be a task topic of ``settings.queue`` (main, retry or delay tier). The range
    ends at ``to_offset`` (inclusive), before ``to_time``, or at the end the topic had when the
    replay started (so tasks it re-submits to the main topic are never replayed again).
    ``progress(done, total)`` is called per record read; ``total`` counts offsets, an upper
    bound. Re-submissions are written ``chunk_size`` at a time, in the order read, each chunk
    confirmed before the next is produced; a record whose chunk Kafka did not confirm is
    reported failed. A dry run reads everything and writes nothing.
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
    with contextlib.ExitStack() as stack:
        producer = None if dry_run else stack.enter_context(Producer(settings))
        replayer = _Replayer(
            settings, producer, task=task, force=force, actor=actor or default_actor()
        )
        chunks = Chunks(chunk_size, replayer.write)
        reader = read_range(client.KafkaClients(settings), topic, ranges)
        records = stack.enter_context(contextlib.closing(reader))
        for done, record in enumerate(records, start=1):
            decided = replayer.consider(record)
            if decided is not None:
                chunks.add(*decided)
            if progress is not None:
                progress(done, total)
        chunks.flush()
    return ReplaySummary(chunks.items, dry_run=dry_run)
