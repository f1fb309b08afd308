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
Does not run tasks or decide retries.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Sequence

from streamjobs import client
from streamjobs.settings import Settings

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
        settings: Settings,
        consumer: client.Consumer,
        retry_topics: Iterable[str],
        partitions: list[int],
    ) -> None:
        """Count the retries waiting on newly assigned partitions' tiers, per key, before any
        main-topic task of theirs can start (reads from the group's committed offsets)."""
        tiers = [client.tp(t, p) for t in retry_topics for p in partitions]
        if not tiers:
            return
        starts = consumer.committed(tiers, timeout=30.0)
        for partition, keys in pending_keys(settings, starts).items():
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


def pending_keys(
    settings: Settings, starts: Sequence[client.TopicPartition], timeout: float = 30.0
) -> dict[int, list[bytes]]:
    """Keys of the records between each tier partition's committed offset and its end, by
    partition number: the retries a new owner inherits."""
    found: dict[int, list[bytes]] = defaultdict(list)
    by_topic: dict[str, dict[int, int | None]] = defaultdict(dict)
    for start in starts:
        by_topic[start.topic][start.partition] = start.offset
    for topic, offsets in by_topic.items():
        ranges = client.ranges_to_end(settings, topic, offsets, timeout)
        for record in client.read_range(settings, topic, ranges, idle_timeout=timeout):
            found[record.partition].append(record.key or b"")
    return found
