"""Key-ordered retries: later tasks of a key wait while an earlier one is in a retry tier.

Owns the per-worker gate of the ``key_ordered`` ordering mode. For each (partition, key) it
counts the key's tasks sitting in retry tiers; a main-topic task of a key with a non-zero count
is parked instead of run, and released, in offset order, when the count falls back to zero.
Parked tasks are never committed, so they are durable: after a crash or a rebalance the new
owner reads them again. Other keys keep flowing.

This only works because every worker owns the *same partition numbers* of the main and tier
topics (KIP-848's ``range`` assignor with equal partition counts, which ``topics ensure``
guarantees): a key's retries are always on the worker that holds its later tasks. The
``classic`` group protocol gives no such guarantee, so ``key_ordered`` requires ``consumer``.
:class:`KeyOrder` maps a worker's records to the gate (which topic's tasks park, which outcomes
block or release a key). Does not run tasks, decide retries, or pause partitions when too many
tasks are parked (:mod:`streamjobs.worker.partitions`).
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Sequence

from streamjobs import client
from streamjobs.settings import Settings
from streamjobs.topics import QueueTopics

Slot = tuple[int, bytes]  # partition number, record key
Release = Callable[[], None]


class KeyGate:
    """Retry counts and parked tasks per (partition, key). Thread-safe."""

    def __init__(self) -> None:
        self._retrying: Counter[Slot] = Counter()
        self._parked: defaultdict[Slot, deque[Release]] = defaultdict(deque)
        self._count = 0  # parked tasks in all slots
        self._lock = threading.Lock()

    def park_if_blocked(self, slot: Slot, release: Release) -> bool:
        """Park ``release`` (run it later) when the key has a task in retry; True if parked."""
        with self._lock:
            if self._retrying[slot] <= 0:
                return False
            self._parked[slot].append(release)
            self._count += 1
            return True

    def retry_scheduled(self, slot: Slot) -> None:
        """A main-topic task of the key moved to a retry tier."""
        with self._lock:
            self._retrying[slot] += 1

    def retry_finished(self, slot: Slot) -> list[Release]:
        """A retry-tier task of the key ended (succeeded or dead-lettered): the tasks to run
        again, in order, when it was the key's last one in retry."""
        with self._lock:
            self._retrying[slot] -= 1
            if self._retrying[slot] > 0:
                return []
            del self._retrying[slot]
            released = list(self._parked.pop(slot, ()))
            self._count -= len(released)
            return released

    def adopt(self, partition: int, keys: Iterable[bytes]) -> None:
        """Count tier records found unprocessed on a newly assigned partition."""
        with self._lock:
            for key in keys:
                self._retrying[(partition, key)] += 1

    def adopt_pending(
        self,
        clients: client.Clients,
        consumer: client.Consumer,
        retry_topics: Iterable[str],
        partitions: list[int],
    ) -> None:
        """Count the retries waiting on newly assigned partitions' tiers, per key, before any
        main-topic task of theirs can start (reads from the group's committed offsets)."""
        tiers = [client.TopicPartition(t, p) for t in retry_topics for p in partitions]
        if not tiers:
            return
        starts = consumer.committed(tiers, timeout=30.0)
        for partition, keys in pending_keys(clients, starts).items():
            self.adopt(partition, keys)

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions given up: their parked tasks are uncommitted and will be read again."""
        numbers = set(partitions)
        with self._lock:
            for slot in [s for s in self._retrying if s[0] in numbers]:
                del self._retrying[slot]
            for slot in [s for s in self._parked if s[0] in numbers]:
                self._count -= len(self._parked.pop(slot))

    def parked(self) -> int:
        """Tasks parked now, over all keys."""
        with self._lock:
            return self._count


class KeyOrder:
    """``key_ordered`` for one worker's queue: its records mapped to the :class:`KeyGate`.

    A main-topic task parks while its key has a task in a retry tier; a main-topic task moving
    to a retry tier blocks its key; a retry-tier task reaching its final outcome (succeeded or
    dead-lettered) unblocks it and releases the key's parked tasks. Thread-safe.
    """

    def __init__(
        self, settings: Settings, topics: QueueTopics, clients: client.Clients | None = None
    ) -> None:
        self.gate = KeyGate()
        self._clients = clients or client.KafkaClients(settings)
        self._main = topics.main
        self._retry_topics = frozenset(topics.retry.values())

    def park(self, record: client.Record, release: Release) -> bool:
        """Park a main-topic task behind its key's retry (run ``release`` later); True if so."""
        return record.topic == self._main and self.gate.park_if_blocked(_slot(record), release)

    def retry_scheduled(self, record: client.Record) -> None:
        """``record`` moves to a retry tier: when from the main topic, its key waits for it."""
        if record.topic == self._main:
            self.gate.retry_scheduled(_slot(record))

    def retry_ended(self, record: client.Record) -> list[Release]:
        """``record`` reached its final outcome: when it was a retry, the tasks it releases."""
        if record.topic not in self._retry_topics:
            return []
        return self.gate.retry_finished(_slot(record))

    def adopt_pending(self, consumer: client.Consumer, keys: Iterable[tuple[str, int]]) -> None:
        """Newly assigned partitions: count the retries waiting on their tiers."""
        mains = [p for t, p in keys if t == self._main]
        self.gate.adopt_pending(self._clients, consumer, self._retry_topics, mains)

    def forget(self, keys: Iterable[tuple[str, int]]) -> None:
        """Partitions given up: drop their keys' counts and parked tasks."""
        self.gate.forget(p for t, p in keys if t == self._main)

    def parked(self) -> int:
        return self.gate.parked()


def _slot(record: client.Record) -> Slot:
    return (record.partition, record.key or b"")


def pending_keys(
    clients: client.Clients, starts: Sequence[client.TopicPartition], timeout: float = 30.0
) -> dict[int, list[bytes]]:
    """Keys of the records between each tier partition's committed offset and its end, by
    partition number: the retries a new owner inherits."""
    found: dict[int, list[bytes]] = defaultdict(list)
    by_topic: dict[str, dict[int, int | None]] = defaultdict(dict)
    for start in starts:
        by_topic[start.topic][start.partition] = start.offset
    for topic, offsets in by_topic.items():
        ranges = client.ranges_to_end(clients, topic, offsets, timeout)
        for record in client.read_range(clients, topic, ranges, idle_timeout=timeout):
            found[record.partition].append(record.key or b"")
    return found
