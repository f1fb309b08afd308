"""Crash-loop quarantine: counting the starts of tasks that may have killed a worker.

A task that kills its worker process (``os._exit``, the OOM killer, a segfault in a C extension)
is redelivered to the next worker, which dies too: a crash loop that stalls its partition for
the whole group. This module owns a small compacted ledger topic (``<prefix>.<queue>.starts``)
keyed by ``topic:partition:offset`` that counts how often such a task was started, and the
decision to quarantine it (dead-letter with reason ``crash_loop``) after ``crash_limit`` starts.

Recording every start would add two writes to every task, so only *suspect* records are counted.
Each owner marks a partition ``active`` in the ledger when it gets it and ``released`` after its
last commit when it gives it up; a new owner that finds ``active`` knows the previous one died
without handing over, and treats the records it may have been running as suspect: from the
committed offset up to twice ``max_in_flight`` beyond it, or up to the owner's *lease* when that is
further. Behind a task that holds the commit (a long one, or one parked by ``key_ordered``) later
tasks keep completing and the owner dispatches far past the committed offset, so before it takes a
record at or past its lease it writes a new one, acknowledged, twice ``max_in_flight`` further
(one write per that many records). The first crash is therefore not counted: a poison task runs at
most ``crash_limit + 1`` times, and ordinary rebalances cost nothing.
Does not run tasks or write dead letters (the worker does).
"""

from __future__ import annotations

import logging
import threading

from streamjobs import client
from streamjobs.errors import KafkaUnavailable
from streamjobs.settings import Settings

_SYNC_TIMEOUT_S = 10.0
_log = logging.getLogger(__name__)


def ledger_key(topic: str, partition: int, offset: int) -> bytes:
    return f"{topic}:{partition}:{offset}".encode()


def owner_key(topic: str, partition: int) -> bytes:
    return f"owner:{topic}:{partition}".encode()


def lease_key(topic: str, partition: int) -> bytes:
    return f"lease:{topic}:{partition}".encode()


_ACTIVE = b"active"
_RELEASED = b"released"


class StartLedger:
    """Start counts of suspect records, read once per assignment, written before each start."""

    def __init__(
        self, settings: Settings, topic: str, clients: client.Clients | None = None
    ) -> None:
        self._clients = clients or client.KafkaClients(settings)
        self._topic = topic
        self._counts: dict[bytes, int] = {}
        self._owners: dict[bytes, bytes] = {}
        self._leases: dict[bytes, int] = {}  # as read from the ledger
        self._held: dict[tuple[str, int], int] = {}  # this owner's leases: dispatch below them
        self.window = 2 * settings.max_in_flight
        self._lock = threading.Lock()
        self._producer = self._clients.producer(**{"linger.ms": 0})

    def load(self) -> None:
        """Read the whole (compacted, one-partition) ledger: called when partitions arrive."""
        counts: dict[bytes, int] = {}
        owners: dict[bytes, bytes] = {}
        leases: dict[bytes, int] = {}
        ranges = client.ranges_to_end(self._clients, self._topic, {0: None}, _SYNC_TIMEOUT_S)
        reader = client.read_range(self._clients, self._topic, ranges, idle_timeout=_SYNC_TIMEOUT_S)
        for record in reader:
            _apply(counts, owners, leases, record)
        with self._lock:
            self._counts = counts
            self._owners = owners
            self._leases = leases

    def suspects(
        self, consumer: client.Consumer, partitions: list[client.TopicPartition]
    ) -> dict[tuple[str, int], range]:
        """Offsets whose starts must be counted, for partitions whose last owner died: from
        the committed offset to twice ``max_in_flight`` beyond, or to its lease if further
        (what it may have been running). Reads the ledger afresh."""
        self.load()
        crashed = [p for p in partitions if self.crashed_owner(p.topic, p.partition)]
        if not crashed:
            return {}
        found = {}
        for position in consumer.committed(crashed, timeout=30.0):
            start = max(0, position.offset)
            lease = self._leases.get(lease_key(position.topic, position.partition), 0)
            found[(position.topic, position.partition)] = range(
                start, max(start + self.window, lease)
            )
        _log.warning("%d partitions lost their owner abruptly: counting task starts", len(found))
        return found

    def crashed_owner(self, topic: str, partition: int) -> bool:
        """True when the partition's last owner took it and never released it (it died)."""
        return self._owners.get(owner_key(topic, partition)) == _ACTIVE

    def cover(self, partition: tuple[str, int], offset: int) -> None:
        """Before the record at ``offset`` of ``partition`` is taken: unless this owner's lease
        already covers it, write a new lease twice ``max_in_flight`` past it and wait for the
        acknowledgement, so a new owner after a crash suspects every record this one took."""
        if offset < self._held.get(partition, 0):
            return
        until = offset + self.window
        self._held[partition] = until  # once per lease even when the write below fails
        self._send(lease_key(*partition), str(until).encode())
        if self._producer.flush(_SYNC_TIMEOUT_S):
            raise KafkaUnavailable("could not record a dispatch lease in the crash ledger")

    def mark(self, partitions: list[tuple[str, int]], *, active: bool) -> None:
        """Record that this worker took (``active``) or cleanly released these partitions."""
        value = _ACTIVE if active else _RELEASED
        for topic, partition in partitions:
            self._held.pop((topic, partition), None)  # another owner may have leased since
            self._owners[owner_key(topic, partition)] = value
            self._send(owner_key(topic, partition), value)
        if partitions and self._producer.flush(_SYNC_TIMEOUT_S):
            raise KafkaUnavailable("could not record partition ownership in the crash ledger")

    def begin(self, topic: str, partition: int, offset: int) -> int:
        """Count one more start of this record, durably, before it runs; returns the count."""
        key = ledger_key(topic, partition, offset)
        with self._lock:
            starts = self._counts.get(key, 0) + 1
            self._counts[key] = starts
        self._send(key, str(starts).encode())
        # flushed before the handler runs: a crash during it must find this count
        if self._producer.flush(_SYNC_TIMEOUT_S):
            raise KafkaUnavailable("could not record a task start in the crash ledger")
        return starts

    def end(self, topic: str, partition: int, offset: int) -> None:
        """The record's outcome is durable: forget it (a tombstone, compacted away)."""
        key = ledger_key(topic, partition, offset)
        with self._lock:
            self._counts.pop(key, None)
        self._send(key, None)
        self._producer.poll(0)

    def close(self) -> None:
        self._producer.flush(_SYNC_TIMEOUT_S)

    def _send(self, key: bytes, value: bytes | None) -> None:
        if not self._producer.produce(self._topic, value, key):
            raise KafkaUnavailable("the crash ledger's producer queue is full")


def _apply(
    counts: dict[bytes, int],
    owners: dict[bytes, bytes],
    leases: dict[bytes, int],
    record: client.Record,
) -> None:
    if record.key is None:
        return
    if record.key.startswith(b"owner:"):
        if record.value is not None:
            owners[record.key] = record.value
        return
    if record.key.startswith(b"lease:"):
        if record.value is not None and record.value.isdigit():  # garbage never blocks a task
            leases[record.key] = int(record.value)
        return
    if record.value is None:
        counts.pop(record.key, None)
        return
    try:
        counts[record.key] = max(1, min(int(record.value), 1_000_000))
    except ValueError:
        return  # garbage in the ledger never blocks a task
