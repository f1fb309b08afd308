"""Reading partitions up to their current end, and a group's committed offsets.

Owns the catch-up reads every small compacted topic needs (the schemas, the crash ledger, the
status snapshot, replay and dead-letter scans): the ranges from a start to each partition's
current end, and the records within them (one by one as :class:`Record`, or in lists of
:class:`BareRecord` for the index, which reads every record of its topics). Built on the
:class:`~streamjobs.client.protocols.Clients` protocol only, so it runs against a fake too.
Does not decode records.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar

from streamjobs.client.clients import KafkaClients
from streamjobs.client.protocols import Clients, Consumer
from streamjobs.client.records import BareRecord, OffsetRange, Record, TopicPartition
from streamjobs.errors import KafkaUnavailable

if TYPE_CHECKING:
    from streamjobs.settings import Settings


def read_range(
    clients: Clients,
    topic: str,
    ranges: Sequence[OffsetRange],
    *,
    idle_timeout: float = 30.0,
) -> Generator[Record, None, None]:
    """The records of ``topic`` within ``ranges``, partition by partition in offset order.

    Stops when every partition's fetch position reaches its range end (compaction and
    transaction markers leave offset gaps, so the last offset seen proves nothing). Raises
    KafkaUnavailable when nothing arrives for ``idle_timeout`` seconds. The reader is closed
    when the iterator is exhausted or closed: use ``contextlib.closing`` when stopping early.
    """
    batches = _read(clients, topic, ranges, idle_timeout, lambda c: c.consume(500, 0.2))
    with contextlib.closing(batches):
        for batch in batches:
            yield from batch


def read_batches(
    clients: Clients,
    topic: str,
    ranges: Sequence[OffsetRange],
    *,
    count: int = 5000,
    idle_timeout: float = 30.0,
) -> Generator[list[BareRecord], None, None]:
    """The records of ``topic`` within ``ranges`` as lists of up to ``count``
    :class:`BareRecord` (each partition's in offset order): :func:`read_range` for a reader of
    every record of a topic (the index), a Record's construction and a generator step per
    record saved. Stops, fails and closes as :func:`read_range` does."""
    return _read(clients, topic, ranges, idle_timeout, lambda c: c.consume_bare(count, 0.2))


_PAST = 1 << 63  # above every offset: a partition no longer wanted keeps nothing


class _Placed(Protocol):
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...


_R = TypeVar("_R", bound=_Placed)


def _read(
    clients: Clients,
    topic: str,
    ranges: Sequence[OffsetRange],
    idle_timeout: float,
    consume: Callable[[Consumer], list[_R]],
) -> Generator[list[_R], None, None]:
    """The batches of ``consume`` on a reader assigned to ``ranges``, cut to them (a fetch
    may run past a range end), until every partition's fetch position reaches its end."""
    todo = {r.partition: r for r in ranges if r.size > 0}
    if not todo:
        return
    consumer = clients.reader()
    try:
        consumer.assign([TopicPartition(topic, p, r.start) for p, r in todo.items()])
        deadline = time.monotonic() + idle_timeout
        while todo:
            records = consume(consumer)
            # inline, no call per record: this runs for every record the index reads
            starts = {p: r.start for p, r in todo.items()}
            ends = {p: r.end for p, r in todo.items()}
            wanted = [
                r
                for r in records
                if starts.get(r.partition, _PAST) <= r.offset < ends.get(r.partition, -1)
            ]
            if wanted:
                yield wanted
            for position in consumer.positions([TopicPartition(topic, p) for p in todo]):
                if position.offset >= todo[position.partition].end:
                    del todo[position.partition]
            if records:
                deadline = time.monotonic() + idle_timeout
            elif todo and time.monotonic() > deadline:
                raise KafkaUnavailable(f"no records from {topic} for {idle_timeout}s: {todo}")
    finally:
        consumer.close()


def ranges_to_end(
    clients: Clients, topic: str, starts: Mapping[int, int | None], timeout: float = 10.0
) -> list[OffsetRange]:
    """For each partition, the range from ``starts[p]`` (None or negative: its first offset,
    clamped to what it still holds) to its current end: what a reader must see to be caught up."""
    consumer = clients.reader()
    try:
        ranges = []
        for partition, start in starts.items():
            low, high = consumer.watermarks_when_ready(topic, partition, timeout)
            begin = low if start is None or start < 0 else max(start, low)
            ranges.append(OffsetRange(partition, begin, high))
        return ranges
    finally:
        consumer.close()


def committed_offsets(
    settings: Settings, group: str, partitions: Iterable[tuple[str, int]], timeout: float = 10.0
) -> dict[tuple[str, int], int]:
    """``group``'s committed offset (the next to read) per partition; -1 where none is.

    Asks the group coordinator without joining the group: the consumer never subscribes, so a
    running worker group is not rebalanced.
    """
    wanted = [TopicPartition(t, p) for t, p in partitions]
    if not wanted:
        return {}
    consumer = KafkaClients(settings).consumer(group)
    try:
        found = consumer.committed(wanted, timeout=timeout)
    finally:
        consumer.close()
    return {item.key: item.offset if item.offset >= 0 else -1 for item in found}
