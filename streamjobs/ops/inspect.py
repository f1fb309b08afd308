"""Inspect a queue: lag, task states, throughput, tier backlog and dead letters, read from Kafka.

Owns the :class:`Report` of one queue at one moment and its two presentations: ``as_dict`` for
scripts (``--json``) and :func:`render`, rich tables for people. Every figure is read from the
cluster, nothing from a worker's memory: end offsets (high watermarks), the worker group's committed
offsets (asked without joining the group), the status topics (status and submitted, merged: counts
by state; tasks per second = ``succeeded`` statuses updated in the last minute), the head of each
retry/delay tier partition (tier records are ordered by due time, so the head is the oldest due) and
the dead-letter topic (count by reason, how many are re-driven). Tiers are the settings' and any
other tier topic of the queue on the cluster (:func:`streamjobs.topics.compare_tiers`): a tier left
behind by a change of ``STREAMJOBS_RETRY_TIERS`` shows with its backlog, marked as read by no worker
with these settings, and a tier of the settings with no topic is listed as missing. With an index
configured (``Settings.index_path``) the counts come from it, caught up first
(:mod:`streamjobs.index`).

Does not change anything, watch continuously, or serve metrics.
"""

from __future__ import annotations

import contextlib
import io
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from streamjobs import client, status, statusreads
from streamjobs.client import OffsetRange, read_range
from streamjobs.envelope import decode_envelope
from streamjobs.errors import BadInput
from streamjobs.ops.deadletters import DeadLetterInfo, list_dead_letters
from streamjobs.settings import Settings, format_duration, parse_duration
from streamjobs.topics import TIERS_CHANGED_HINT, TierDrift, compare_tiers, queue_topics

TierKind = Literal["retry", "delay"]
# records read past a tier partition's committed offset to find its head (markers leave gaps)
_HEAD_PROBE = 20


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """One partition of a task topic: where it ends, where the group is, what is left."""

    topic: str
    partition: int
    low: int
    end: int
    committed: int | None
    lag: int


@dataclass(frozen=True, slots=True)
class TierBacklog:
    """A retry or delay tier: records not yet committed and the earliest due time among them."""

    topic: str
    kind: TierKind
    delay: timedelta
    lag: int
    oldest_due_ms: int | None
    configured: bool = True  # False: on the cluster, not in the settings (no worker reads it)


@dataclass(frozen=True, slots=True)
class Report:
    """A queue at one moment. ``states`` counts the latest status of the queue's tasks."""

    queue: str
    group: str
    taken_at_ms: int
    partitions: list[PartitionLag]
    states: dict[str, int]
    succeeded_last_minute: int
    tiers: list[TierBacklog]
    dead_letters: dict[str, int]
    redriven: int
    missing_tiers: list[str] = field(default_factory=list)  # tiers of the settings, no topic

    @property
    def tasks_per_second(self) -> float:
        """Tasks that succeeded per second, averaged over the last minute."""
        return self.succeeded_last_minute / 60.0

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)

    def lag_of(self, topic: str) -> int:
        return sum(p.lag for p in self.partitions if p.topic == topic)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["tasks_per_second"] = round(self.tasks_per_second, 3)
        out["lag"] = self.lag
        for tier in out["tiers"]:
            tier["delay"] = format_duration(tier["delay"])
        return out


def inspect(settings: Settings, *, timeout: float = 30.0) -> Report:
    """Read the queue's figures from Kafka (a few reads; cost grows with the status and DLQ)."""
    taken = status.now_ms()
    found = backlog(settings)
    read = _indexed if settings.index_path else _read
    states, recent, dead_letters, redriven = read(settings, taken, timeout)
    return Report(
        queue=settings.queue,
        group=settings.group,
        taken_at_ms=taken,
        partitions=found.partitions,
        states=dict(sorted(states.items())),
        succeeded_last_minute=recent,
        tiers=found.tiers,
        dead_letters=dict(sorted(dead_letters.items())),
        redriven=redriven,
        missing_tiers=found.missing_tiers,
    )


@dataclass(frozen=True, slots=True)
class QueueBacklog:
    """The figures no index holds: lag per task-topic partition, tier backlogs with their
    oldest due time, and the settings' tiers that have no topic."""

    partitions: list[PartitionLag]
    tiers: list[TierBacklog]
    missing_tiers: list[str]


def backlog(settings: Settings) -> QueueBacklog:
    """A few metadata and head reads; no status or dead-letter scan."""
    existing = client.new_admin(settings).topic_partitions()
    drift = compare_tiers(settings, existing)
    present = [t for t in queue_topics(settings).task_topics if t in existing] + drift.extra
    partitions = lags(settings, present)
    tiers = _tiers(settings, _tier_topics(settings, drift), partitions)
    return QueueBacklog(partitions, tiers, drift.missing)


_Counts = tuple[dict[str, int], int, dict[str, int], int]


def _read(settings: Settings, taken: int, timeout: float) -> _Counts:
    """States, recent successes and dead letters from one pass over the status and DLQ."""
    views = [v for v in statusreads.snapshot(settings, timeout=timeout).values()]
    mine = [v for v in views if v.queue == settings.queue]
    recent = sum(
        1 for v in mine if v.state.value == "succeeded" and v.updated_at_ms >= taken - 60_000
    )
    letters = list_dead_letters(settings)
    reasons = dict(Counter(d.reason for d in letters))
    return (
        dict(Counter(v.state.value for v in mine)),
        recent,
        reasons,
        sum(d.redriven for d in letters),
    )


def _indexed(settings: Settings, taken: int, timeout: float) -> _Counts:
    """The same figures from the index (:mod:`streamjobs.index`), caught up first: only the
    records written since its last catch-up are read."""
    from streamjobs.index.follower import fresh_reader

    with fresh_reader(settings, timeout) as index:
        return (
            index.state_counts(settings.queue),
            index.succeeded_since(settings.queue, taken - 60_000),
            index.dead_letter_reasons(settings.queue),
            index.redriven_count(settings.queue),
        )


def lags(settings: Settings, topics: list[str]) -> list[PartitionLag]:
    consumer = client.new_reader(settings)
    try:
        marks = {
            (topic, p): consumer.watermarks(topic, p)
            for topic in topics
            for p in consumer.partition_ids(topic)
        }
    finally:
        consumer.close()
    committed = client.committed_offsets(settings, settings.group, marks)
    lags = []
    for (topic, p), (low, end) in marks.items():
        done = committed.get((topic, p), -1)
        # no commit yet: the group starts at the earliest record (auto.offset.reset=earliest)
        position = max(done, low) if done >= 0 else low
        lags.append(PartitionLag(topic, p, low, end, done if done >= 0 else None, end - position))
    return lags


def _tier_topics(
    settings: Settings, drift: TierDrift
) -> list[tuple[str, TierKind, timedelta, bool]]:
    """Each tier topic to report: the settings' (present on the cluster), then the extra ones."""
    names = queue_topics(settings)
    families: list[tuple[TierKind, dict[timedelta, str]]] = [
        ("retry", names.retry),
        ("delay", names.delay),
    ]
    tiers = [
        (topic, kind, delay, True)
        for kind, family in families
        for delay, topic in family.items()
        if topic not in drift.missing
    ]
    for topic in drift.extra:
        kind, _, spelled = topic[len(names.main) + 1 :].partition(".")
        tiers.append(
            (topic, "retry" if kind == "retry" else "delay", parse_duration(spelled), False)
        )
    return tiers


def _tiers(
    settings: Settings,
    topics: list[tuple[str, TierKind, timedelta, bool]],
    lags: list[PartitionLag],
) -> list[TierBacklog]:
    tiers = []
    for topic, kind, delay, configured in topics:
        pending = [p for p in lags if p.topic == topic and p.lag > 0]
        tiers.append(
            TierBacklog(
                topic=topic,
                kind=kind,
                delay=delay,
                lag=sum(p.lag for p in pending),
                oldest_due_ms=_oldest_due(settings, topic, delay, pending),
                configured=configured,
            )
        )
    return tiers


def _oldest_due(
    settings: Settings, topic: str, delay: timedelta, pending: list[PartitionLag]
) -> int | None:
    """The earliest due time among the head records of ``pending`` tier partitions."""
    ranges = [
        OffsetRange(p.partition, p.end - p.lag, min(p.end, p.end - p.lag + _HEAD_PROBE))
        for p in pending
    ]
    heads: dict[int, int] = {}
    with contextlib.closing(read_range(client.KafkaClients(settings), topic, ranges)) as records:
        for record in records:
            if record.partition in heads or not record.value:
                continue
            try:
                envelope = decode_envelope(record.value)
            except BadInput:
                continue  # the worker dead-letters it; it is due at once
            released = record.timestamp_ms + delay // timedelta(milliseconds=1)
            heads[record.partition] = envelope.not_before_ms or released
    return min(heads.values(), default=None)


# -- presentation ----------------------------------------------------------------------------


def _time(ms: int | None, now_ms: int) -> str:
    if ms is None:
        return "-"
    moment = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")
    seconds = (ms - now_ms) / 1000
    relative = f"in {seconds:.0f}s" if seconds >= 0 else f"{-seconds:.0f}s overdue"
    return f"{moment} ({relative})"


def _partition_table(report: Report) -> Table:
    table = Table(title=f"queue {report.queue} · group {report.group}", title_justify="left")
    for name in ("topic", "partition", "end offset", "committed", "lag"):
        table.add_column(name, justify="left" if name == "topic" else "right")
    main = report.partitions[0].topic if report.partitions else None
    # tier partitions that never held a record say nothing: hidden here, kept in as_dict()
    shown = [p for p in report.partitions if p.topic == main or p.end > 0]
    for p in shown:
        committed = "-" if p.committed is None else str(p.committed)
        table.add_row(p.topic, str(p.partition), str(p.end), committed, str(p.lag))
    table.add_row("total", "", "", "", str(report.lag), style="bold")
    if len(shown) < len(report.partitions):
        table.caption = f"{len(report.partitions) - len(shown)} empty tier partitions not shown"
    return table


def _state_table(report: Report) -> Table:
    table = Table(title="tasks by state", title_justify="left")
    table.add_column("state")
    table.add_column("tasks", justify="right")
    for state, count in report.states.items():
        table.add_row(state, str(count))
    return table


def _tier_table(report: Report) -> Table:
    table = Table(title="retry and delay tiers", title_justify="left")
    for name in ("tier", "topic", "backlog", "oldest due", "note"):
        table.add_column(name, justify="right" if name == "backlog" else "left")
    for tier in report.tiers:
        table.add_row(
            f"{tier.kind} {format_duration(tier.delay)}",
            tier.topic,
            str(tier.lag),
            _time(tier.oldest_due_ms, report.taken_at_ms),
            "" if tier.configured else "not in the settings: no worker with them reads it",
        )
    for topic in report.missing_tiers:
        table.add_row("", topic, "", "", "missing: run `streamjobs topics ensure`")
    if any(not t.configured for t in report.tiers) or report.missing_tiers:
        table.caption = TIERS_CHANGED_HINT
        table.caption_justify = "left"
    return table


def _dead_letter_table(report: Report) -> Table:
    table = Table(title="dead letters by reason", title_justify="left")
    table.add_column("reason")
    table.add_column("count", justify="right")
    for reason, count in report.dead_letters.items():
        table.add_row(reason, str(count))
    return table


def render(report: Report) -> RenderableType:
    """The report as rich tables: partitions, states and throughput, tiers, dead letters."""
    throughput = (
        f"{report.tasks_per_second:.2f} tasks/s over the last minute "
        f"({report.succeeded_last_minute} succeeded)"
    )
    return Group(
        _partition_table(report),
        _state_table(report),
        Text(throughput),
        _tier_table(report),
        _dead_letter_table(report),
        Text(f"{report.redriven} dead letters already re-driven"),
    )


def render_text(report: Report, width: int = 120) -> str:
    """The rendered tables as plain text (no colour codes), e.g. for logs and tests."""
    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None, force_terminal=False).print(render(report))
    return buffer.getvalue()


def render_dead_letters(letters: list[DeadLetterInfo]) -> Table:
    """Dead letters as a table: reference, reason, task, attempts, error, whether re-driven."""
    table = Table(title=f"{len(letters)} dead letters", title_justify="left")
    # short columns never wrap; the id and the error fold when the terminal is narrow
    for column in ("ref", "reason", "task"):
        table.add_column(column, no_wrap=True)
    table.add_column("task id", overflow="fold")
    table.add_column("tries", no_wrap=True, justify="right")
    table.add_column("redriven", no_wrap=True)
    table.add_column("error", overflow="fold")
    for d in letters:
        error = f"{d.error_type or ''}: {d.error or ''}"[:120]
        flag = "yes" if d.redriven else ""
        table.add_row(
            d.ref, d.reason, d.task or "-", d.task_id or "-", str(d.attempts), flag, error
        )
    return table
