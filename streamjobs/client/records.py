"""The Kafka nouns the rest of streamjobs sees: records, partitions, delivery reports, ranges.

Owns the frozen types that cross the client boundary in place of confluent-kafka's objects
(whose every field is optional), and the special offsets. Does not talk to Kafka.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

# librdkafka's logical offsets (the same numbers, so they pass through unchanged)
OFFSET_BEGINNING = -2
OFFSET_END = -1
OFFSET_INVALID = -1001

Headers = list[tuple[str, bytes | None]]


@dataclass(frozen=True, slots=True)
class Position:
    """Where a record sits: its coordinates, and the time Kafka stamped on it there."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class Record:
    """A consumed Kafka record, in our types."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: Headers

    @property
    def position(self) -> Position:
        return Position(self.topic, self.partition, self.offset, self.timestamp_ms)


class BareRecord(NamedTuple):
    """A consumed record's coordinates and bytes, without its topic (the reader knows it) or
    headers: what a reader of every record of a topic (the index) needs, built for a fraction
    of a :class:`Record`'s cost (a tuple, no header list)."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class TopicPartition:
    """A partition of a topic, and an offset in it: a commit, a seek, a fetch position (ours,
    frozen, in place of confluent-kafka's mutable class of the same name).

    ``offset`` is the *next* record to read; it may be one of the logical offsets above.
    ``metadata`` is the string a commit carries with it (and ``committed`` returns);
    ``error`` is set on a partition Kafka refused to commit (``NAME: description``).
    """

    topic: str
    partition: int
    offset: int = OFFSET_INVALID
    metadata: str = ""
    error: str | None = None

    @property
    def key(self) -> tuple[str, int]:
        return (self.topic, self.partition)


@dataclass(frozen=True, slots=True)
class Delivery:
    """A producer's delivery report: where the record landed, or why it did not."""

    error: str | None  # "NAME: description" when Kafka did not take the record
    partition: int = -1
    offset: int = -1


@dataclass(frozen=True, slots=True)
class GroupMetadata:
    """A consumer's group membership, opaque: handed to a transaction's offset commit."""

    handle: Any


@dataclass(frozen=True, slots=True)
class OffsetRange:
    """Offsets ``start`` (inclusive) to ``end`` (exclusive) of one partition."""

    partition: int
    start: int
    end: int

    @property
    def size(self) -> int:
        return max(0, self.end - self.start)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    config: Mapping[str, str]
