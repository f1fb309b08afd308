"""What the dashboard reads beyond the index: live Kafka figures, a task's arguments, traces.

Owns :class:`Backlog` (lag per partition and tier backlogs of each queue of the settings, from
:func:`streamjobs.ops.inspect.backlog`, refreshed by a background thread so no page waits; the
committed offsets are those of the group the settings' worker joins: ``STREAMJOBS_GROUP_ID`` or
``<prefix>.<first queue>.workers``, as ``consume`` with the same queues),
:func:`task_arguments` (the envelope a status points at, read from its topic/partition/offset,
its arguments decoded with the writer schema from the schemas topic) and :func:`trace_of` (a
task's trace from Jaeger, with the earlier runs' traces it links to).

Does not read statuses, dead letters, heartbeats or schedules (the index does) or render
anything.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from streamjobs import client
from streamjobs.codec import decode_body
from streamjobs.envelope import decode_envelope
from streamjobs.errors import BadInput, StreamJobsError
from streamjobs.ops.inspect import PartitionLag, TierBacklog, backlog
from streamjobs.ops.traceview import fetch_with_links
from streamjobs.schemastore import SchemaStore
from streamjobs.settings import Settings
from streamjobs.status import StatusView, now_ms

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class QueueFigures:
    """One queue's lag per task-topic partition (main and tiers) and its tier backlogs."""

    queue: str
    partitions: list[PartitionLag]
    tiers: list[TierBacklog]

    @property
    def lag(self) -> int:
        """Records of the queue's main topic after the group's committed offsets."""
        return sum(p.lag for p in self.partitions if not _is_tier(p.topic, self.tiers))

    @property
    def tier_backlog(self) -> int:
        return sum(t.lag for t in self.tiers)


def _is_tier(topic: str, tiers: list[TierBacklog]) -> bool:
    return any(t.topic == topic for t in tiers)


@dataclass(slots=True)
class BacklogFigures:
    """Each queue's figures as of ``taken_at_ms`` (0: not read yet), or the error met."""

    taken_at_ms: int = 0
    queues: list[QueueFigures] = field(default_factory=list)
    error: str | None = None

    @property
    def partitions(self) -> list[PartitionLag]:
        return [p for q in self.queues for p in q.partitions]

    @property
    def tiers(self) -> list[TierBacklog]:
        return [t for q in self.queues for t in q.tiers]

    def of(self, queue: str) -> QueueFigures | None:
        return next((q for q in self.queues if q.queue == queue), None)


class Backlog:
    """Re-reads each queue's lag and tier backlogs every ``interval`` seconds in a thread."""

    def __init__(self, settings: Settings, interval: float = 5.0) -> None:
        self.settings = settings
        self.interval = interval
        self.latest = BacklogFigures()
        self._stop = threading.Event()

    def refresh(self) -> None:
        found, problems = [], []
        for queue, _ in self.settings.served_queues:
            try:
                read = backlog(self.settings.for_queue(queue))
            except StreamJobsError as exc:
                _log.warning("dashboard backlog of %s: %s", queue, exc)
                problems.append(f"{queue}: {exc}")
                kept = self.latest.of(queue)  # the last figures read, rather than none
                if kept is not None:
                    found.append(kept)
                continue
            found.append(QueueFigures(queue, read.partitions, read.tiers))
        taken = now_ms() if not problems else self.latest.taken_at_ms
        self.latest = BacklogFigures(taken, found, "; ".join(problems) or None)

    def run(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()


@dataclass(frozen=True, slots=True)
class Arguments:
    """A task's arguments, or why they cannot be shown."""

    values: dict[str, Any] | None
    problem: str | None
    where: str | None


def task_arguments(settings: Settings, history: Sequence[StatusView]) -> Arguments:
    """The arguments of the envelope at the newest position the history names."""
    placed = [
        (v.topic, v.partition, v.offset)
        for v in history
        if v.topic and v.partition is not None and v.offset is not None
    ]
    if not placed:
        return Arguments(None, "no status names the record's position yet", None)
    topic, partition, offset = placed[-1]
    where = f"{topic}[{partition}]@{offset}"
    one = [client.OffsetRange(partition, offset, offset + 1)]
    try:
        records = client.read_range(client.KafkaClients(settings), topic, one, idle_timeout=5)
        with contextlib.closing(records) as rs:
            record = next(iter(rs), None)
        if record is None or record.value is None:
            return Arguments(None, "the record is gone (retention or compaction)", where)
        envelope = decode_envelope(record.value)
        writer = SchemaStore(settings).writer(envelope.payload_schema, envelope.submitted_at_ms)
        args = decode_body(writer, envelope.payload, 0)
    except BadInput as exc:
        return Arguments(None, f"cannot decode: {exc}", where)
    except StreamJobsError as exc:
        return Arguments(None, str(exc), where)
    shown = {k: (v.hex() if isinstance(v, bytes) else v) for k, v in args.items()}
    return Arguments(shown, None, where)


def trace_of(settings: Settings, trace_id: str) -> tuple[list[dict[str, Any]], str | None]:
    """(traces, None) from Jaeger: the task's trace and those it links to (a redriven or
    replayed task's earlier runs), earliest first; or ([], why not)."""
    try:
        traces = fetch_with_links(settings.jaeger_query_url, trace_id, limit=5, timeout=3.0)
    except StreamJobsError as exc:
        return [], str(exc)
    if not traces:
        return [], f"trace {trace_id} not found in Jaeger at {settings.jaeger_query_url}"
    return traces, None
