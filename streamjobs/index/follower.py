"""Following Kafka topics into the index: read from the applied offsets, map, apply, repeat.

Owns the list of followed topics (:func:`feeds`: the status and submitted topics, the dead letters
and redrive ledger of each queue of the settings (``queue``, or every one of ``queues``), the
workers' heartbeats, the schedules and the cancel requests; one :class:`Feed` each, a topic name and
a mapping function of :mod:`streamjobs.index.rows`: following one more topic is one more line there)
and :class:`Follower`, which brings the index up to the topics' current end
(:meth:`Follower.catch_up`) and keeps it there (:meth:`Follower.run`). Each batch of changes is
applied with the offsets it came from in one transaction, so a restart resumes after the last
applied record and never re-reads it; a deleted file is rebuilt from the beginning of each topic
(Kafka is the source of truth).

Reads Kafka only through :mod:`streamjobs.client`. Does not decide what a record means (rows)
or how it is stored (store); a topic that does not exist yet (a queue never ensured) is skipped
until it does.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import overload

from streamjobs import client
from streamjobs.errors import ConfigError, KafkaUnavailable, TopicError
from streamjobs.index.queries import IndexReader
from streamjobs.index.rows import (
    Change,
    Mapper,
    cancel_changes,
    dead_letter_changes,
    redriven_changes,
    schedule_changes,
    status_changes,
    submitted_changes,
    worker_changes,
)
from streamjobs.index.store import Applied, IndexStore
from streamjobs.settings import Settings
from streamjobs.topics import queue_topics

_log = logging.getLogger(__name__)
#: Records applied per SQLite transaction: measured best of 1,000-20,000 (a larger one folds
#: a few more of a task's records into one upsert, but its lookups and writes leave the cache).
BATCH = 5000


@dataclass(frozen=True, slots=True)
class Feed:
    """One followed topic and what its records mean to the index."""

    topic: str
    changes: Mapper


def feeds(settings: Settings) -> list[Feed]:
    """The topics the index follows for ``settings``' prefix and queues: topic -> mapping.
    The status, submitted, workers and schedules topics are the prefix's (every queue's); each
    served queue adds its dead letters and redrive ledger."""
    names = queue_topics(settings)
    found = [Feed(names.status, status_changes), Feed(names.submitted, submitted_changes)]
    for queue, _ in settings.served_queues:
        letters = queue_topics(settings.for_queue(queue))
        found.append(Feed(letters.dlq, dead_letter_changes(queue)))
        found.append(Feed(letters.redriven, redriven_changes(queue)))
    found += [Feed(names.workers, worker_changes), Feed(names.schedules, schedule_changes)]
    return [*found, Feed(names.cancels, cancel_changes)]


def index_path(settings: Settings) -> Path:
    """The configured index file; ConfigError when there is none."""
    if settings.index_path is None:
        raise ConfigError("no index configured (set STREAMJOBS_INDEX_PATH)")
    return Path(settings.index_path)


@dataclass(slots=True)
class CatchUp:
    """What one catch-up did: records applied per topic, and the index's lag before it."""

    applied: dict[str, int] = field(default_factory=dict)
    behind: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.applied.values())


class Follower:
    """Brings one index file up to the ends of its topics."""

    def __init__(self, settings: Settings, store: IndexStore | None = None) -> None:
        self.settings = settings
        self.clients = client.KafkaClients(settings)
        self.store = store if store is not None else IndexStore(index_path(settings))
        self.feeds = feeds(settings)
        self._stop = threading.Event()

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def catch_up(self, timeout: float = 30.0) -> CatchUp:
        """Apply every record up to each topic's current end; return what was applied."""
        done = CatchUp()
        plans = self.plan(timeout)
        for feed in self.feeds:
            ranges = plans[feed.topic]
            if ranges is None:
                continue  # not created yet: nothing to index
            done.behind[feed.topic] = sum(r.size for r in ranges)
            done.applied[feed.topic] = self._read(feed, ranges, timeout)
        return done

    def plan(self, timeout: float = 30.0) -> dict[str, list[client.OffsetRange] | None]:
        """Per followed topic, what is left to apply (None: the topic does not exist)."""
        # one reader asks every topic's partitions and ends: a follower catching up every
        # second would otherwise open a client per topic and per question
        reader = self.clients.reader()
        try:
            return {feed.topic: self._ranges(reader, feed, timeout) for feed in self.feeds}
        finally:
            reader.close()

    def _ranges(
        self, reader: client.KafkaConsumer, feed: Feed, timeout: float
    ) -> list[client.OffsetRange] | None:
        """From the next offset not applied (or the first still kept) to the current end, per
        partition; None when the topic does not exist."""
        try:
            partitions = reader.partition_ids(feed.topic, timeout)
        except TopicError:
            return None
        applied = self.store.offsets(feed.topic)
        ranges = []
        for partition in partitions:
            low, high = reader.watermarks_when_ready(feed.topic, partition, timeout)
            start = applied.get(partition)
            begin = low if start is None else max(start, low)
            ranges.append(client.OffsetRange(partition, begin, high))
        return ranges

    def _read(self, feed: Feed, ranges: list[client.OffsetRange], timeout: float) -> int:
        applied = 0
        batches = client.read_batches(
            self.clients, feed.topic, ranges, count=BATCH, idle_timeout=timeout
        )
        with contextlib.closing(batches):
            for batch in _batches(feed, batches):
                applied += self.store.apply(batch)
        # compaction and transaction markers leave gaps: what was read reaches the range end
        ends = [Applied(feed.topic, r.partition, r.end, r.end, ()) for r in ranges if r.size]
        self.store.apply(ends)
        return applied

    def run(self, interval: float = 1.0) -> None:
        """Catch up every ``interval`` seconds until :meth:`stop`; Kafka outages are logged
        and retried, never fatal (the dashboard keeps serving what it has)."""
        while not self._stop.is_set():
            try:
                self.catch_up()
            except KafkaUnavailable as exc:
                _log.warning("index: %s", exc)
            self._stop.wait(interval)

    def stop(self) -> None:
        self._stop.set()


def fresh_reader(settings: Settings, timeout: float = 30.0) -> IndexReader:
    """A reader of the configured index once it has caught up with the topics' current end:
    what it answers is as fresh as reading Kafka, at the cost of the records not yet applied."""
    with Follower(settings) as follower:
        follower.catch_up(timeout)
    return IndexReader(index_path(settings))


def _batches(feed: Feed, batches: Iterator[list[client.BareRecord]]) -> Iterator[list[Applied]]:
    """The records of ``feed`` mapped to changes, grouped per partition, ``BATCH`` (or a few
    more: whole reads) at a time."""
    parts: dict[int, _Mapped] = {}
    count = 0
    changes = feed.changes
    for records in batches:
        for record in records:
            part = parts.get(record.partition)
            if part is None:
                part = parts[record.partition] = _Mapped()
            part.offsets.append(record.offset)
            part.changes.append(changes(record))
        count += len(records)
        if count >= BATCH:
            yield _applied(feed.topic, parts)
            parts, count = {}, 0
    if parts:
        yield _applied(feed.topic, parts)


def _applied(
    topic: str, parts: Mapping[int, Sequence[tuple[int, Sequence[Change]]]]
) -> list[Applied]:
    return [
        Applied(topic, partition, rows[0][0], rows[-1][0] + 1, rows)
        for partition, rows in parts.items()
    ]


class _Mapped(Sequence[tuple[int, Sequence[Change]]]):
    """One partition's records of a batch as (offset, changes) pairs, kept as two lists: a
    tuple per record would be one more object for the garbage collector to track (and count
    towards its next collection) for the batch's whole life."""

    __slots__ = ("changes", "offsets")

    def __init__(self) -> None:
        self.offsets: list[int] = []
        self.changes: list[Sequence[Change]] = []

    def __len__(self) -> int:
        return len(self.offsets)

    def __iter__(self) -> Iterator[tuple[int, Sequence[Change]]]:
        return zip(self.offsets, self.changes, strict=True)

    @overload
    def __getitem__(self, index: int) -> tuple[int, Sequence[Change]]: ...
    @overload
    def __getitem__(self, index: slice) -> list[tuple[int, Sequence[Change]]]: ...
    def __getitem__(
        self, index: int | slice
    ) -> tuple[int, Sequence[Change]] | list[tuple[int, Sequence[Change]]]:
        if isinstance(index, slice):
            return list(zip(self.offsets[index], self.changes[index], strict=True))
        return (self.offsets[index], self.changes[index])
