"""The worker's partitions: what it knows about each one it owns, and when they are paused.

Owns per-partition state (offset tracker, revoked/lost flags, started tasks, the suspect window
of crash-loop quarantine, a held tier head) and flow control. A partition is paused for one or
more reasons (:class:`~streamjobs.worker.pauses.Pause`) and resumed only when the last of them
is gone; this module decides these:

- ``HOLD``: a tier partition whose head is not due yet, until it is;
- ``BACKPRESSURE``: every partition, while the executor stays full;
- ``PARKING``: the main-topic partitions only, while ``key_ordered`` holds too many parked
  tasks (:class:`ParkingLimit`). Tier partitions keep flowing: their outcomes are what release
  parked tasks, so pausing them would deadlock;
- ``RATE``: a partition whose next task is over a rate limit while the worker already holds as
  many such tasks as it may (:mod:`streamjobs.worker.ratelimit`), until the hold has emptied
  to half.

(``PRIORITY`` is :mod:`streamjobs.worker.priorities`'s.)

Partitions are paused rather than the poll thread put to sleep, so the group never sees a silent
member. Pausing makes librdkafka drop what it prefetched, so resuming seeks back to the first
record not yet taken. Does not consume, commit or run tasks (:mod:`streamjobs.worker.loop`), nor
decide which tasks park (:mod:`streamjobs.worker.keyorder`).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from streamjobs import client, status
from streamjobs.errors import KafkaUnavailable
from streamjobs.settings import Settings
from streamjobs.worker.offsets import OffsetTracker
from streamjobs.worker.pauses import Pause
from streamjobs.worker.pauses import pause as _pause
from streamjobs.worker.pauses import unpause as _unpause

TopicKey = tuple[str, int]
_log = logging.getLogger(__name__)
# the executor may stay full this long before partitions are paused (a pause costs a refetch)
_PAUSE_AFTER_S = 1.0


class Partition:
    """The worker's view of one assigned partition."""

    __slots__ = (
        "committed_at",
        "held_until_ms",
        "key",
        "lock",
        "lost",
        "next_offset",
        "pauses",
        "revoked",
        "running",
        "suspect",
        "tracker",
    )

    def __init__(self, key: TopicKey) -> None:
        self.key = key
        self.tracker = OffsetTracker()
        self.lock = threading.Lock()
        self.running = 0
        self.revoked = False  # no new task starts; started ones still settle and commit
        self.lost = False  # given up without a handover: outcomes no longer count
        # the first record not taken yet: where a resume seeks to
        self.next_offset: int | None = None
        self.held_until_ms: int | None = None
        self.pauses: set[Pause] = set()  # empty while the partition is consumed
        self.suspect = range(0)  # offsets a dead previous owner may have been running
        self.committed_at = time.time()  # of the last commit handed to Kafka (or the assign)

    def alive(self) -> bool:
        return not self.lost

    def finished_before(self, offset: int) -> bool:
        """Whether a previous owner already finished the task at ``offset`` (per its commit's
        metadata): then it counts as done here, and is not run again."""
        if not self.tracker.take_inherited(offset):
            return False
        self.next_offset = offset + 1
        return True

    def completer(self, offset: int) -> Completion:
        """The ``done`` of an outcome: completes ``offset`` unless the partition was given up."""
        return Completion(self, offset)


class Completion:
    """An outcome's ``done``: completes its offset unless the partition was given up. One
    small object, where a closure would be four (its cells), on every task's path."""

    __slots__ = ("offset", "part")

    def __init__(self, part: Partition, offset: int) -> None:
        self.part = part
        self.offset = offset

    def __call__(self) -> bool:
        part = self.part
        if part.lost:
            return False
        part.tracker.completed(self.offset)
        return True


@dataclass(frozen=True, slots=True)
class PartitionProgress:
    """What a worker knows of one assigned partition's progress, for metrics and heartbeats.

    ``lag`` is the records after the committed offset (the partition's end as of the last
    fetch minus the committed offset), None until both are known; ``committed_at`` is the Unix
    time of the last commit this worker made (or of the assignment).
    """

    topic: str
    partition: int
    committed: int | None
    end: int | None
    committed_at: float

    @property
    def lag(self) -> int | None:
        if self.end is None:
            return None
        return max(0, self.end - (self.committed or 0))


class ParkingLimit:
    """Whether parked tasks should stop main-topic intake. Pure: no Kafka, no clock.

    Engages when ``parked`` reaches ``limit`` and lets go only once it has fallen to half of it,
    so a retry that releases a few tasks does not flap the pause (each pause and resume makes
    librdkafka drop and re-fetch what it had prefetched).
    """

    __slots__ = ("engaged", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.engaged = False

    def update(self, parked: int) -> bool:
        """Decide for the current ``parked`` count; returns whether intake is to be paused."""
        if self.engaged:
            self.engaged = parked > self.limit // 2
        else:
            self.engaged = parked >= self.limit
        return self.engaged


class Assigned(dict[TopicKey, Partition]):
    """The partitions this worker owns now, by (topic, partition), with their flow control."""

    def __init__(self, settings: Settings, main_topic: str) -> None:
        super().__init__()
        self._limit = settings.max_in_flight
        self._main = main_topic
        self.backpressure = False
        self.parking = ParkingLimit(settings.max_parked)
        self._full_since: float | None = None

    def progress(self, consumer: client.Consumer) -> tuple[PartitionProgress, ...]:
        """Each partition's committed offset, end and last commit time (poll thread)."""
        return tuple(
            PartitionProgress(
                topic=topic,
                partition=partition,
                committed=part.tracker.committed,
                end=consumer.cached_end(topic, partition),
                committed_at=part.committed_at,
            )
            for (topic, partition), part in list(self.items())
        )

    def hold(self, consumer: client.Consumer, part: Partition, offset: int, until_ms: int) -> None:
        """Pause a tier partition whose head is not due: the thread keeps polling the rest."""
        part.held_until_ms = until_ms
        part.next_offset = offset  # the head is not taken: read it again when due
        _pause(consumer, part, Pause.HOLD)

    def resume_due(self, consumer: client.Consumer) -> None:
        now = status.now_ms()
        for part in list(self.values()):
            if part.held_until_ms is not None and part.held_until_ms <= now:
                part.held_until_ms = None
                _unpause(consumer, part, Pause.HOLD)

    def rate_pause(self, consumer: client.Consumer, part: Partition, offset: int) -> None:
        """Pause ``part`` at ``offset`` (not taken): its task is over a rate limit and the
        worker holds as many waiting tasks as it may."""
        part.next_offset = offset
        _pause(consumer, part, Pause.RATE)

    def rate_resume(self, consumer: client.Consumer) -> None:
        """Resume the partitions paused by :meth:`rate_pause`: there is room to hold again."""
        for part in list(self.values()):
            if Pause.RATE in part.pauses:
                _unpause(consumer, part, Pause.RATE)

    def refuse(self, consumer: client.Consumer, part: Partition, offset: int) -> bool:
        """Whether the record at ``offset`` of ``part`` must not be taken now.

        A paused partition's records are read again after its resume. A partition assigned
        after a pause of all (or all main) partitions began, and heard of only now, joins the
        pause here, to resume at ``offset``.
        """
        if part.pauses:
            if part.next_offset is None:  # nothing taken yet: the resume must come back here
                part.next_offset = offset
            return True
        if not self.backpressure and not self.parking.engaged:
            return False
        missed = self._global_pauses(part)
        if not missed:
            return False
        part.next_offset = offset
        for reason in missed:
            _pause(consumer, part, reason)
        return True

    def _global_pauses(self, part: Partition) -> list[Pause]:
        reasons = [Pause.BACKPRESSURE] if self.backpressure else []
        if self.parking.engaged and part.key[0] == self._main:
            reasons.append(Pause.PARKING)
        return reasons

    def apply_backpressure(self, consumer: client.Consumer, in_flight: int) -> None:
        """Pause every partition while the executor stays full; the loop keeps polling.

        Long tasks must not stop the poll loop (the group would evict us after
        ``max.poll.interval.ms``), so after a short grace the partitions are paused and
        ``consume`` keeps being called; it returns nothing until they are resumed.
        """
        now = time.monotonic()
        if in_flight < self._limit:
            self._full_since = None
        elif self._full_since is None:
            self._full_since = now
        full_long = self._full_since is not None and now - self._full_since > _PAUSE_AFTER_S
        if not self.backpressure and full_long:
            self.backpressure = True
            for part in self.values():
                _pause(consumer, part, Pause.BACKPRESSURE)
        elif self.backpressure and in_flight <= self._limit // 2:
            self.backpressure = False
            for part in self.values():
                _unpause(consumer, part, Pause.BACKPRESSURE)

    def limit_parking(self, consumer: client.Consumer, parked: int) -> None:
        """``key_ordered``: pause the main-topic partitions while ``parked`` is at the limit,
        resume them once it has fallen to half. Tier partitions are never paused for this."""
        engaged = self.parking.engaged
        if self.parking.update(parked) == engaged:
            return
        for part in self.values():
            if part.key[0] != self._main:
                continue
            if self.parking.engaged:
                _pause(consumer, part, Pause.PARKING)
            else:
                _unpause(consumer, part, Pause.PARKING)

    def drop_pauses(self, consumer: client.Consumer, parts: list[Partition]) -> None:
        """Partitions being given up leave unpaused. librdkafka (2.16) keeps an application
        pause across unassign and a later assign, while our view of a partition assigned
        again starts unpaused: it would never be consumed."""
        paused = [client.TopicPartition(*p.key) for p in parts if p.pauses]
        for part in parts:
            part.pauses.clear()
        if paused:
            try:
                consumer.resume(paused)
            except KafkaUnavailable as exc:  # no longer assigned: nothing left to clear
                _log.debug("resuming released partitions: %s", exc)

    def lift(self, consumer: client.Consumer, parts: list[Partition]) -> None:
        """Resume ``parts`` without seeking (they are re-read from a seek of their own) and
        end the pauses of all partitions; those still called for are decided afresh."""
        consumer.resume([client.TopicPartition(*p.key) for p in parts if p.pauses])
        self.backpressure = False
        self.parking.engaged = False
