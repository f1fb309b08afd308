"""A small in-memory stand-in for :mod:`streamjobs.client`, for unit tests without a broker.

:class:`FakeKafka` is the "cluster": it hands out fake consumers and producers through the
:class:`~streamjobs.client.protocols.Clients` interface (pass it as ``clients=``) and keeps what a
test asserts on: every record produced, every acknowledgement, every commit, in one ``events``
log. Acknowledgements of a held topic wait until the test releases it (``hold``/``release``),
and a topic can be made to fail its deliveries, so a test controls when Kafka "has" an outcome.

Only what the worker needs is modelled: no partitioning, no fetching from logs (readers see
empty topics), rebalances only when a test asks for one.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from streamjobs.client import (
    OFFSET_INVALID,
    BareRecord,
    Delivery,
    GroupMetadata,
    Record,
    TopicPartition,
)
from streamjobs.client.protocols import OnCommit, OnDelivery, OnPartitions, ProduceHeaders
from streamjobs.envelope import Envelope, encode_envelope
from streamjobs.errors import KafkaUnavailable
from streamjobs.models import Task
from streamjobs.tasktypes import TaskType


@dataclass(frozen=True)
class Sent:
    """A record a fake producer was given."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, Any]] = field(default_factory=list)


class FakeKafka:
    """The shared state of the fake clients; satisfies ``streamjobs.client.protocols.Clients``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, Any]] = []  # ("produce"|"ack"|"nack"|"commit"|..., what)
        self.changed = threading.Condition(self.lock)
        self.held: set[str] = set()  # deliveries to these topics are not reported yet
        self.failing_topics: set[str] = set()  # deliveries to these fail
        self.committed: dict[tuple[str, int], int] = {}
        self.metadata: dict[tuple[str, int], str] = {}  # committed with each offset
        self.refuse: dict[tuple[str, int], str] = {}  # the next commit of these is refused
        self.consumer: FakeConsumer | None = None
        self.producers: list[FakeProducer] = []

    def log(self, kind: str, what: Any) -> None:
        with self.lock:
            self.events.append((kind, what))
            self.changed.notify_all()

    def hold(self, *topics: str) -> None:
        with self.lock:
            self.held.update(topics)

    def release(self) -> None:
        with self.lock:
            self.held.clear()
            self.changed.notify_all()

    def kinds(self, kind: str) -> list[Any]:
        with self.lock:
            return [what for k, what in self.events if k == kind]

    def produced(self, topic: str | None = None) -> list[Sent]:
        return [s for s in self.kinds("produce") if topic is None or s.topic == topic]

    def commits(self) -> list[TopicPartition]:
        return [p for batch in self.kinds("commit") for p in batch]

    # -- streamjobs.client.protocols.Clients ---------------------------------------------------

    def worker_consumer(self, on_commit: OnCommit) -> FakeConsumer:
        self.consumer = FakeConsumer(self, on_commit)
        return self.consumer

    def reader(self) -> FakeConsumer:
        return FakeConsumer(self, None)

    def group_reader(self) -> FakeConsumer:
        return FakeConsumer(self, None)

    def producer(self, **overrides: Any) -> FakeProducer:
        producer = FakeProducer(self)
        self.producers.append(producer)
        return producer

    def transactional_producer(self, transactional_id: str) -> FakeTransactionalProducer:
        producer = FakeTransactionalProducer(self, transactional_id)
        self.producers.append(producer)
        return producer


class FakeConsumer:
    """Records and rebalances are queued by the test and handed out by ``consume``, on the
    calling (poll) thread, like librdkafka does."""

    def __init__(self, kafka: FakeKafka, on_commit: OnCommit | None) -> None:
        self.kafka = kafka
        self.on_commit = on_commit
        self.callbacks: dict[str, OnPartitions] = {}
        self._events: deque[Callable[[], None]] = deque()
        self._records: deque[Record] = deque()
        self._ready = threading.Condition()
        self.paused: set[tuple[str, int]] = set()
        self.seeks: list[TopicPartition] = []
        self.polls = 0
        self.closed = False
        self.fail_commits = False
        self.fail_committed = False  # committed offsets unreadable (their coordinator is down)

    # test side: what the group and the topics do

    def rebalance(self, kind: str, *partitions: tuple[str, int]) -> None:
        """Queue an ``assign``, ``revoke`` or ``lost`` of ``partitions`` for the next consume."""
        positions = [TopicPartition(t, p) for t, p in partitions]
        with self._ready:
            self._events.append(lambda: self.callbacks[kind](positions))
            self._ready.notify()

    def deliver(self, *records: Record) -> None:
        with self._ready:
            self._records.extend(records)
            self._ready.notify()

    # streamjobs.client.protocols.Consumer

    def subscribe(
        self,
        topics: Sequence[str],
        *,
        on_assign: OnPartitions,
        on_revoke: OnPartitions,
        on_lost: OnPartitions,
    ) -> None:
        self.callbacks = {"assign": on_assign, "revoke": on_revoke, "lost": on_lost}

    def consume(self, count: int, timeout: float) -> list[Record]:
        with self._ready:
            self.polls += 1
            if not self._events and not self._deliverable():
                self._ready.wait(timeout)
            events = list(self._events)
            self._events.clear()
        for event in events:
            event()
        with self._ready:
            taken = self._deliverable()[:count]
            for record in taken:
                self._records.remove(record)
        return taken

    def consume_bare(self, count: int, timeout: float) -> list[BareRecord]:
        return [
            BareRecord(r.partition, r.offset, r.timestamp_ms, r.key, r.value)
            for r in self.consume(count, timeout)
        ]

    def _deliverable(self) -> list[Record]:
        return [r for r in self._records if (r.topic, r.partition) not in self.paused]

    def commit(
        self, offsets: Sequence[TopicPartition], *, asynchronous: bool
    ) -> list[TopicPartition]:
        if self.fail_commits:
            raise KafkaUnavailable("commit failed: _TRANSPORT: fake")
        self.kafka.log("commit", list(offsets))
        with self.kafka.lock:
            refused = [
                replace(p, error=self.kafka.refuse.pop(p.key))
                for p in offsets
                if p.key in self.kafka.refuse
            ]
            taken = [p for p in offsets if p.key not in {r.key for r in refused}]
            self.kafka.committed.update({p.key: p.offset for p in taken})
            self.kafka.metadata.update({p.key: p.metadata for p in taken})
        if asynchronous and self.on_commit is not None:
            on_commit = self.on_commit
            reported = [*taken, *refused]
            with self._ready:
                self._events.append(lambda: on_commit(None, reported))
        return [] if asynchronous else refused

    def committed(
        self, partitions: Sequence[TopicPartition], timeout: float
    ) -> list[TopicPartition]:
        if self.fail_committed:
            raise KafkaUnavailable("Kafka request failed: _TIMED_OUT: fake")
        with self.kafka.lock:
            found, metadata = self.kafka.committed, self.kafka.metadata
            return [
                TopicPartition(
                    p.topic,
                    p.partition,
                    found.get(p.key, OFFSET_INVALID),
                    metadata.get(p.key, ""),
                )
                for p in partitions
            ]

    def group_metadata(self) -> GroupMetadata:
        return GroupMetadata("fake-generation")

    def assign(self, positions: Sequence[TopicPartition]) -> None:
        pass

    def pause(self, partitions: Sequence[TopicPartition]) -> None:
        self.paused.update(p.key for p in partitions)

    def resume(self, partitions: Sequence[TopicPartition]) -> None:
        self.paused.difference_update(p.key for p in partitions)

    def seek(self, position: TopicPartition) -> None:
        self.seeks.append(position)

    def positions(self, partitions: Sequence[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(p.topic, p.partition, 0) for p in partitions]

    def watermarks_when_ready(self, topic: str, partition: int, timeout: float) -> tuple[int, int]:
        return (0, 0)  # every topic a reader looks at is empty

    def cached_end(self, topic: str, partition: int) -> int | None:
        return None  # no fetch is ever made

    def partition_ids(self, topic: str, timeout: float = 10.0) -> list[int]:
        return []  # unknown here: the worker falls back to its settings

    def close(self) -> None:
        self.closed = True


class FakeProducer:
    """Takes every record; reports deliveries from ``poll``/``flush`` unless their topic is held."""

    def __init__(self, kafka: FakeKafka) -> None:
        self.kafka = kafka
        self._lock = threading.Lock()
        self._unacked: list[tuple[Sent, OnDelivery | None]] = []
        self.full_for = 0  # the next this many produce calls find the local queue full

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        *,
        headers: ProduceHeaders | None = None,
        on_delivery: OnDelivery | None = None,
    ) -> bool:
        return self._queue(Sent(topic, key, value, list(headers or [])), on_delivery) is not None

    def _queue(self, sent: Sent, on_delivery: OnDelivery | None) -> Sent | None:
        with self._lock:
            if self.full_for > 0:
                self.full_for -= 1
                return None
            self._unacked.append((sent, on_delivery))
        self.kafka.log("produce", sent)
        return sent

    def poll(self, timeout: float) -> int:
        batch = self._take()
        if not batch and timeout > 0:
            with self.kafka.changed:
                self.kafka.changed.wait(timeout)
            batch = self._take()
        for offset, (sent, on_delivery) in enumerate(batch):
            failed = sent.topic in self.kafka.failing_topics
            self.kafka.log("nack" if failed else "ack", sent)
            if on_delivery is not None:
                error = "_MSG_TIMED_OUT: fake delivery failure" if failed else None
                on_delivery(Delivery(error, 0, offset))
        return len(batch)

    def flush(self, timeout: float) -> int:
        self.poll(0)
        with self._lock:
            return len(self._unacked)

    def _take(self) -> list[tuple[Sent, OnDelivery | None]]:
        """The records whose delivery can be reported now (in order, up to the first held)."""
        with self.kafka.lock:
            held = set(self.kafka.held)
        with self._lock:
            batch = []
            while self._unacked and self._unacked[0][0].topic not in held:
                batch.append(self._unacked.pop(0))
            return batch

    @property
    def unacked(self) -> int:
        with self._lock:
            return len(self._unacked)


class FakeTransactionalProducer(FakeProducer):
    """Records each committed transaction; ``fail_next`` makes the next commit fail as an
    ``"abortable"`` or a ``"fatal"`` (fenced) error; ``fail_renew`` makes a renewal time out."""

    def __init__(self, kafka: FakeKafka, transactional_id: str) -> None:
        super().__init__(kafka)
        self.transactional_id = transactional_id
        self.fail_next: str | None = None
        self.renewed = 0
        self.aborted = 0
        self.fail_renew = False
        self._fatal = False
        self._open: list[Sent] | None = None
        self._offsets: list[TopicPartition] = []

    def _queue(self, sent: Sent, on_delivery: OnDelivery | None) -> Sent | None:
        queued = super()._queue(sent, on_delivery)
        if queued is not None and self._open is not None:
            self._open.append(queued)
        return queued

    def begin(self) -> None:
        self._open = []

    def send_offsets(
        self, offsets: Sequence[TopicPartition], group: GroupMetadata, timeout: float = 30.0
    ) -> None:
        self._offsets = list(offsets)

    def commit(self, timeout: float = 30.0) -> None:
        failure, self.fail_next = self.fail_next, None
        if failure is not None:
            self._fatal = failure == "fatal"
            raise KafkaUnavailable(f"transaction failed: fake {failure} error")
        self.kafka.log("transaction", (self._open, self._offsets))
        self.kafka.log("commit", self._offsets)
        with self.kafka.lock:
            self.kafka.committed.update({p.key: p.offset for p in self._offsets})
        self._open = None

    def abort(self, timeout: float = 30.0) -> bool:
        if self._fatal:
            return False
        self.aborted += 1
        self._open = None
        return True

    def renew(self) -> None:
        self.renewed += 1
        if self.fail_renew:
            raise KafkaUnavailable("transaction failed: _TIMED_OUT: fake")
        self._fatal = False
        self._open = None


def task_record(
    task: Task,
    *,
    topic: str,
    offset: int,
    queue: str = "default",
    partition: int = 0,
    task_id: str | None = None,
    key: str | None = None,
) -> Record:
    """The record a streamjobs producer would have written for ``task``."""
    task_type = TaskType(type(task), type(task).task_name)
    task_id = task_id or f"task-{offset}"
    envelope = Envelope(
        task_id=task_id,
        task=task_type.name,
        queue=queue,
        payload=task_type.encode(task),
        payload_schema=task_type.fingerprint,
        submitted_at_ms=1_700_000_000_000,
        key=key,
    )
    return Record(
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp_ms=1_700_000_000_000,
        key=(key or task_id).encode(),
        value=encode_envelope(envelope),
        headers=[],
    )
