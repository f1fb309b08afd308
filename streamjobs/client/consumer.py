"""The consumer: confluent-kafka's ``Consumer`` behind our methods, types and errors.

Owns :class:`KafkaConsumer`: group membership with rebalance and commit callbacks in our types,
batch consumption into :class:`~streamjobs.client.records.Record` (or the cheaper
:class:`~streamjobs.client.records.BareRecord`, for readers of whole topics), commits,
pause/resume/seek, and the positional reads (partition ids, watermarks, offsets for times,
committed offsets) of readers. Raises only :mod:`streamjobs.errors`. Does not decide what to
commit or when to pause (the worker does) nor choose its configuration
(:mod:`streamjobs.client.config`).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message
from confluent_kafka import TopicPartition as KafkaTopicPartition

from streamjobs.client.config import Config
from streamjobs.client.failures import code_of, describe, is_retriable, unavailable
from streamjobs.client.logs import callbacks
from streamjobs.client.protocols import OnCommit, OnPartitions
from streamjobs.client.reach import Reach, contacted
from streamjobs.client.records import BareRecord, GroupMetadata, Record, TopicPartition
from streamjobs.errors import KafkaUnavailable, TopicError

_log = logging.getLogger(__name__)

_NOT_READY = (
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
)


class KafkaConsumer:
    """One librdkafka consumer. Not thread-safe: one thread (the poll thread) calls it."""

    def __init__(
        self, config: Config, on_commit: OnCommit | None = None, reach: Reach | None = None
    ) -> None:
        self._reach = reach or Reach.of(config)
        extra: dict[str, Any] = {}
        if on_commit is not None:

            def committed(error: Any, partitions: list[KafkaTopicPartition]) -> None:
                on_commit(None if error is None else describe(error), _positions(partitions))

            extra["on_commit"] = committed
        self._consumer = Consumer({**callbacks("consumer", self._reach), **config, **extra})

    # -- group membership ------------------------------------------------------------------

    def subscribe(
        self,
        topics: Sequence[str],
        *,
        on_assign: OnPartitions,
        on_revoke: OnPartitions,
        on_lost: OnPartitions,
    ) -> None:
        """Join the group for ``topics``; librdkafka calls the callbacks from :meth:`consume`,
        on the calling thread, with the partitions gained, revoked or lost (incrementally)."""
        self._consumer.subscribe(
            list(topics),
            on_assign=lambda _c, partitions: on_assign(_positions(partitions)),
            on_revoke=lambda _c, partitions: on_revoke(_positions(partitions)),
            on_lost=lambda _c, partitions: on_lost(_positions(partitions)),
        )

    def group_metadata(self) -> GroupMetadata:
        """This member's group generation, for a transaction's offsets (KIP-447 fencing)."""
        return GroupMetadata(self._consumer.consumer_group_metadata())

    def commit(
        self, offsets: Sequence[TopicPartition], *, asynchronous: bool
    ) -> list[TopicPartition]:
        """Commit ``offsets`` (each the next offset to read, with its metadata). Synchronous:
        returns the partitions Kafka refused, each with its ``error`` (refusing single
        partitions raises nothing), and raises KafkaUnavailable when the request fails.
        Asynchronous: returns [] (``on_commit`` reports the outcome)."""
        wanted = _partitions(offsets)
        try:
            if asynchronous:
                self._consumer.commit(offsets=wanted, asynchronous=True)
                return []
            done: Any = self._consumer.commit(offsets=wanted, asynchronous=False)
        except KafkaException as exc:
            raise unavailable(exc, "commit failed") from exc
        return [p for p in _positions(done or []) if p.error is not None]

    def committed(
        self, partitions: Sequence[TopicPartition], timeout: float
    ) -> list[TopicPartition]:
        """The group's committed offset per partition (OFFSET_INVALID where none is)."""
        try:
            found = self._consumer.committed(_partitions(partitions), timeout=self._bound(timeout))
        except KafkaException as exc:
            raise self._reach.error(exc, self._consumer) from exc
        return _positions(found)

    # -- consuming -------------------------------------------------------------------------

    def consume(self, count: int, timeout: float) -> list[Record]:
        """Up to ``count`` records. Raises KafkaUnavailable on a fatal error; logs the others."""
        return [_record(message) for message in self._messages(count, timeout)]

    def consume_bare(self, count: int, timeout: float) -> list[BareRecord]:
        """Up to ``count`` records as :class:`BareRecord` (no topic, no headers), for readers
        of whole topics: a Record's construction and header list cost more than a small
        record's decoding. Errors as :meth:`consume`."""
        return [
            _bare((m.partition(), m.offset(), m.timestamp()[1], m.key(), m.value()))
            for m in self._messages(count, timeout)
        ]

    def _messages(self, count: int, timeout: float) -> list[Message]:
        # librdkafka's batch consume waits for a *full* batch or the timeout: an idle worker
        # would sit on a fresh task for the whole timeout. Block for the first record only,
        # then take what is already buffered without waiting.
        messages = self._consumer.consume(1, timeout=timeout)
        if messages and count > 1:
            messages += self._consumer.consume(count - 1, timeout=0)
        if any(map(Message.error, messages)):  # no Python frame per message: error events are rare
            messages = [m for m in messages if not _failed(m)]
        return messages

    def assign(self, positions: Sequence[TopicPartition]) -> None:
        """Read ``positions`` by assignment, outside any group's rebalances."""
        self._consumer.assign(_partitions(positions))

    def pause(self, partitions: Sequence[TopicPartition]) -> None:
        try:
            self._consumer.pause(_partitions(partitions))
        except KafkaException as exc:
            raise unavailable(exc, "pause failed") from exc

    def resume(self, partitions: Sequence[TopicPartition]) -> None:
        """Resume; KafkaUnavailable when a partition is no longer assigned."""
        try:
            self._consumer.resume(_partitions(partitions))
        except KafkaException as exc:
            raise unavailable(exc, "resume failed") from exc

    def seek(self, position: TopicPartition) -> None:
        try:
            self._consumer.seek(_partition(position))
        except KafkaException as exc:
            raise unavailable(exc, "seek failed") from exc

    def positions(self, partitions: Sequence[TopicPartition]) -> list[TopicPartition]:
        """The fetch position (next offset to be returned) of each assigned partition."""
        try:
            return _positions(self._consumer.position(_partitions(partitions)))
        except KafkaException as exc:
            raise unavailable(exc) from exc

    def close(self) -> None:
        """Leave the group at once (instead of after the session timeout) and free the client."""
        self._consumer.close()

    # -- reading by position: replay, dead letters, inspection, status -----------------------

    def partition_ids(self, topic: str, timeout: float = 10.0) -> list[int]:
        """The partition numbers of ``topic``; TopicError when the cluster does not have it."""
        try:
            metadata: Any = self._consumer.list_topics(topic, timeout=self._bound(timeout))
        except KafkaException as exc:
            raise self._reach.error(exc, self._consumer) from exc
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            raise TopicError(f"topic {topic} does not exist (run `streamjobs topics ensure`)")
        return sorted(found.partitions)

    def watermarks(self, topic: str, partition: int, timeout: float = 10.0) -> tuple[int, int]:
        """(low, high): the first offset still kept and the offset the next record will get."""
        try:
            low, high = self._consumer.get_watermark_offsets(
                KafkaTopicPartition(topic, partition), timeout=self._bound(timeout)
            )
        except KafkaException as exc:
            raise self._reach.error(exc, self._consumer) from exc
        return int(low), int(high)

    def cached_end(self, topic: str, partition: int) -> int | None:
        """The end offset of an assigned partition as of the last fetch from it, without asking
        the broker (None before the first fetch): cheap enough to read every second."""
        try:
            _, high = self._consumer.get_watermark_offsets(
                KafkaTopicPartition(topic, partition), cached=True
            )
        except KafkaException:
            return None
        return int(high) if high >= 0 else None

    def watermarks_when_ready(self, topic: str, partition: int, timeout: float) -> tuple[int, int]:
        """(low, high) offsets, retrying the transient errors of a just-created topic (no leader
        elected yet) until ``timeout``; raises KafkaUnavailable after that."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                low, high = self._consumer.get_watermark_offsets(
                    KafkaTopicPartition(topic, partition), timeout=self._bound(timeout)
                )
                return int(low), int(high)
            except KafkaException as exc:
                ready = is_retriable(exc) or code_of(exc) in _NOT_READY
                if not ready or time.monotonic() > deadline or not contacted(self._consumer):
                    raise self._reach.error(exc, self._consumer) from exc
                time.sleep(0.1)  # leader election has no event to wait on

    def offsets_for_times(
        self, topic: str, times_ms: Mapping[int, int], timeout: float = 10.0
    ) -> dict[int, int]:
        """Per partition, the first offset whose timestamp is at or after the given Unix ms.

        A partition with no such record maps to ``OFFSET_END`` (-1): callers clamp it to the
        high watermark.
        """
        wanted = [KafkaTopicPartition(topic, p, t) for p, t in times_ms.items()]
        if not wanted:
            return {}
        try:
            found = self._consumer.offsets_for_times(wanted, timeout=self._bound(timeout))
        except KafkaException as exc:
            raise self._reach.error(exc, self._consumer) from exc
        for item in found:
            if item.error is not None:
                raise KafkaUnavailable(f"offsets_for_times {topic}[{item.partition}]: {item.error}")
        return {int(item.partition): int(item.offset) for item in found}

    def _bound(self, timeout: float) -> float:
        return self._reach.bound(timeout, self._consumer)


def _failed(message: Message) -> bool:
    """Whether ``message`` is an error event: raises KafkaUnavailable if it is fatal, logs it
    otherwise."""
    error = message.error()
    if error is None:
        return False
    if error.fatal():
        raise KafkaUnavailable(f"consumer failed: {describe(error)}")
    _log.warning("consumer: %s", error.str())
    return True


# a tuple subclass built without its Python-level __new__ (one frame less per record)
_bare: Callable[[tuple[Any, ...]], BareRecord] = functools.partial(tuple.__new__, BareRecord)


def _record(message: Message) -> Record:
    raw = message.headers() or []
    headers = raw.items() if isinstance(raw, dict) else raw
    return Record(
        topic=str(message.topic()),
        partition=int(message.partition() or 0),
        offset=int(message.offset() or 0),
        timestamp_ms=int(message.timestamp()[1]),
        key=_as_bytes(message.key()),
        value=_as_bytes(message.value()),
        headers=[(k, _as_bytes(v)) for k, v in headers],
    )


def _as_bytes(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def _partition(position: TopicPartition) -> KafkaTopicPartition:
    if position.metadata:
        return KafkaTopicPartition(
            position.topic, position.partition, position.offset, metadata=position.metadata
        )
    return KafkaTopicPartition(position.topic, position.partition, position.offset)


def _partitions(positions: Iterable[TopicPartition]) -> list[KafkaTopicPartition]:
    return [_partition(p) for p in positions]


def _positions(partitions: Iterable[KafkaTopicPartition]) -> list[TopicPartition]:
    return [
        TopicPartition(
            str(p.topic),
            int(p.partition),
            int(p.offset),
            p.metadata or "",
            None if p.error is None else describe(p.error),
        )
        for p in partitions
    ]
