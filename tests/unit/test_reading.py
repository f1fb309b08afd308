"""Catch-up reads (:mod:`streamjobs.client.reading`) against a small in-memory log: what they
yield, where they stop, and that their reader is closed. No broker."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from streamjobs.client import BareRecord, OffsetRange, Record, TopicPartition
from streamjobs.client.reading import read_batches, read_range

TOPIC = "t.status"


class LogReader:
    """A reader of one topic's partitions, each a list of offsets (gaps allowed, like compaction
    leaves them); each consume hands out up to ``count`` records, a partition at a time, and may
    run past a range's end as a real fetch does."""

    def __init__(self, log: dict[int, list[int]]) -> None:
        self.log = log
        self.next: dict[int, int] = {}
        self.closed = False
        self.counts: list[int] = []

    def assign(self, positions: Sequence[TopicPartition]) -> None:
        self.next = {p.partition: p.offset for p in positions}

    def _take(self, count: int) -> list[tuple[int, int]]:
        self.counts.append(count)
        taken: list[tuple[int, int]] = []
        for partition, start in self.next.items():
            left = [o for o in self.log[partition] if o >= start]
            offsets = left[: count - len(taken)]
            taken += [(partition, o) for o in offsets]
            if offsets:
                self.next[partition] = offsets[-1] + 1
            if offsets == left:  # all it holds: a real position moves past the markers too
                self.next[partition] = max(start, self.log[partition][-1] + 1)
        return taken

    def consume(self, count: int, timeout: float) -> list[Record]:
        return [
            Record(TOPIC, p, o, 1000 + o, f"k{o}".encode(), f"v{o}".encode(), [("h", b"x")])
            for p, o in self._take(count)
        ]

    def consume_bare(self, count: int, timeout: float) -> list[BareRecord]:
        return [
            BareRecord(p, o, 1000 + o, f"k{o}".encode(), f"v{o}".encode())
            for p, o in self._take(count)
        ]

    def positions(self, partitions: Sequence[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(TOPIC, p.partition, self.next[p.partition]) for p in partitions]

    def close(self) -> None:
        self.closed = True


class LogClients:
    def __init__(self, log: dict[int, list[int]]) -> None:
        self.readers: list[LogReader] = []
        self.log = log

    def reader(self) -> Any:
        self.readers.append(LogReader(self.log))
        return self.readers[-1]


LOG = {0: [0, 1, 2, 5, 6, 9, 10, 11], 1: list(range(20))}
RANGES = [OffsetRange(0, 1, 10), OffsetRange(1, 15, 18)]


def test_batches_hold_only_the_records_within_the_ranges_each_partition_in_offset_order() -> None:
    clients = LogClients(LOG)
    batches = list(read_batches(clients, TOPIC, RANGES, count=3))  # type: ignore[arg-type]
    assert all(isinstance(r, BareRecord) for batch in batches for r in batch)
    got = [(r.partition, r.offset) for batch in batches for r in batch]
    assert [o for p, o in got if p == 0] == [1, 2, 5, 6, 9]  # 10 and 11 run past the end
    assert [o for p, o in got if p == 1] == [15, 16, 17]
    assert all(len(batch) <= 3 for batch in batches)
    assert set(clients.readers[0].counts) == {3}
    assert clients.readers[0].closed


def test_batches_carry_what_a_record_carries_but_its_topic_and_headers() -> None:
    bare = [r for b in read_batches(LogClients(LOG), TOPIC, RANGES) for r in b]  # type: ignore[arg-type]
    full = list(read_range(LogClients(LOG), TOPIC, RANGES))  # type: ignore[arg-type]
    assert bare == [BareRecord(r.partition, r.offset, r.timestamp_ms, r.key, r.value) for r in full]


def test_empty_ranges_open_no_reader() -> None:
    clients = LogClients(LOG)
    assert list(read_batches(clients, TOPIC, [OffsetRange(0, 4, 4)])) == []  # type: ignore[arg-type]
    assert clients.readers == []


def test_closing_the_batches_early_closes_the_reader() -> None:
    clients = LogClients(LOG)
    with contextlib.closing(read_batches(clients, TOPIC, RANGES, count=2)) as batches:  # type: ignore[arg-type]
        next(batches)
    assert clients.readers[0].closed
