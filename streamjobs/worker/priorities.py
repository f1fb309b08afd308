"""Queue priorities: which of a worker's queues to hold back, so the others are served first.

Kafka has no priorities, so a worker serving several queues (``queues``, highest first) pauses
the partitions of the queues it holds back and resumes them later: never a sleep, and the group
sees a live member throughout. A queue's tier topics are its own: a retry keeps its queue's rank.

- ``strict``: a queue is held back while any higher queue has work *ready*;
- ``weighted``: each queue is served in proportion to its weight while they all have work ready.
  Every task taken adds ``1/weight`` to its queue's *virtual time*; a queue more than ``slack``
  tasks ahead of the queue furthest behind is held back until that one catches up. A queue with
  nothing ready banks at most ``slack`` tasks of credit: its virtual time is lifted towards the
  others', so an idle spell never lets it starve them afterwards, and no queue with a weight
  above 0 is ever starved.
  Weight 0: served only while no weighted queue has work ready.

*Ready* is what the worker knows without asking the broker: the tasks taken but not started yet,
those taken just now, and the records between each partition's next offset to take and its end
as of the last fetch (tier partitions whose head is not due do not count, nor those nothing was
taken from yet). :class:`Priorities` decides (pure: no
Kafka, no clock, unit-tested); :class:`QueueGate` measures and pauses (poll thread). The executor
also starts waiting tasks of higher queues first under ``strict``
(:mod:`streamjobs.worker.executor`), so a task taken just before a pause never jumps the line.
Does not consume records or run tasks (:mod:`streamjobs.worker.loop`,
:mod:`streamjobs.worker.intake`).
"""

from __future__ import annotations

import logging
import operator
import time
from collections.abc import Callable, Sequence

from streamjobs import client
from streamjobs.errors import KafkaUnavailable
from streamjobs.settings import QueueOrder, Settings
from streamjobs.topics import ServedTopics
from streamjobs.worker.partitions import Assigned, Partition
from streamjobs.worker.pauses import Pause, pause, unpause

_log = logging.getLogger(__name__)
# tasks a weighted queue may run ahead of its share before it is held back: fewer means closer
# shares, more means fewer pause/resume round trips (each makes librdkafka re-fetch)
_SLACK = 8
# how often the poll thread decides again, from what it knows at no cost
_EVERY_S = 0.025
# how often it reads partition ends, for queues that show no other sign of work
_MEASURE_S = 0.1


class Priorities:
    """Which queues (by rank, 0 the highest) to hold back. Pure: no Kafka, no clock."""

    def __init__(self, weights: Sequence[int], order: QueueOrder, slack: int = _SLACK) -> None:
        self.weights = tuple(weights)
        self.order = order
        self.slack = slack
        self.vtime = [0.0] * len(self.weights)  # weighted: tasks taken / weight
        self.held: set[int] = set()
        self._competing: tuple[int, ...] = ()  # weighted queues with work, at the last decision

    def decide(self, ready: Sequence[int]) -> frozenset[int]:
        """The queues to hold back, given each queue's count of ready tasks."""
        self._competing = tuple(r for r, n in enumerate(ready) if n > 0 and self.weights[r] > 0)
        if self.order == "strict":
            first = next((rank for rank, n in enumerate(ready) if n > 0), len(ready))
            self.held = set(range(first + 1, len(ready)))
            return frozenset(self.held)
        floor = self._floor()
        if floor is not None:  # an idle queue banks no more than slack tasks of credit
            for rank, n in enumerate(ready):
                weight = self.weights[rank]
                if n == 0 and weight > 0:
                    self.vtime[rank] = max(self.vtime[rank], floor - self.slack / weight)
        self.held = {r for r in range(len(ready)) if self._behind_others(r, r in self.held)}
        return frozenset(self.held)

    def took(self, rank: int) -> bool:
        """One task of queue ``rank`` was taken; True if the queue is to be held back now."""
        if self.order == "strict":
            return False
        weight = self.weights[rank]
        if weight > 0:
            self.vtime[rank] += 1.0 / weight
        if rank not in self.held and self._behind_others(rank, False):
            self.held.add(rank)
            return True
        return False

    def _floor(self) -> float | None:
        """The virtual time of the weighted queue furthest behind among those with work."""
        return min((self.vtime[r] for r in self._competing), default=None)

    def _behind_others(self, rank: int, held: bool) -> bool:
        """Whether queue ``rank`` should wait for other queues that have work ready (asked
        for every task taken: the common case, no other queue with work, returns at once)."""
        others = [r for r in self._competing if r != rank]
        if not others:
            return False
        if self.weights[rank] == 0:
            return True
        floor = min(self.vtime[r] for r in others)
        ahead = (self.vtime[rank] - floor) * self.weights[rank]  # in tasks of this queue
        return ahead > 0 if held else ahead > self.slack


class _Starts:
    """Where the group starts on partitions this worker has taken nothing from yet: their
    committed offset, else (no commit: ``auto.offset.reset=earliest``) their first offset. Asked
    once per assignment (a round trip on the poll thread), only for partitions holding records."""

    def __init__(self) -> None:
        self._found: dict[tuple[str, int], tuple[Partition, int]] = {}
        self._retry_at = 0.0

    def get(self, part: Partition) -> int | None:
        found = self._found.get(part.key)
        return found[1] if found is not None and found[0] is part else None  # same assignment

    def learn(self, consumer: client.Consumer, parts: list[Partition]) -> None:
        if time.monotonic() < self._retry_at:
            return
        try:
            positions = consumer.committed([client.TopicPartition(*p.key) for p in parts], 10.0)
            for part, position in zip(parts, positions, strict=True):
                offset = position.offset
                if offset < 0:
                    offset, _ = consumer.watermarks_when_ready(*part.key, timeout=10.0)
                self._found[part.key] = (part, offset)
        except KafkaUnavailable as exc:  # unknown for now: those queues count as idle a while
            _log.warning("cannot tell where %d partitions start: %s", len(parts), exc)
            self._retry_at = time.monotonic() + 1.0


class QueueGate:
    """Measures each served queue's ready work and pauses the queues held back (poll thread)."""

    def __init__(
        self,
        settings: Settings,
        topics: ServedTopics,
        parts: Assigned,
        waiting: Callable[[], Sequence[int]],
    ) -> None:
        """``waiting``: tasks taken but not started, per queue rank (the executor's count)."""
        weights = [weight for _, weight in settings.served_queues]
        self.policy = Priorities(weights, settings.effective_queue_order)
        self._topics = topics
        self._parts = parts
        self._waiting = waiting
        self._starts = _Starts()
        self._due = self._measure_due = 0.0
        self._taken = [0] * len(weights)  # tasks taken per queue since the last decision
        self._taken_before = [0] * len(weights)
        self._measured = [0] * len(weights)  # backlog per queue at the last measure
        # the last decision applied, and to which partitions: the same decision over the same
        # partitions pauses and resumes nothing, so it is not walked again (180 partitions for
        # three queues' main and tier topics: ~80 us every turn of the decision)
        self._applied: frozenset[int] | None = None
        self._applied_to: list[Partition] = []

    def took(self, consumer: client.Consumer, part: Partition) -> None:
        """A task of ``part`` was taken: hold its queue back at once if it is now ahead."""
        rank = self._topics.rank(part.key[0])
        self._taken[rank] += 1
        if self.policy.took(rank):
            self._set(consumer, rank, held=True)

    def apply(self, consumer: client.Consumer) -> None:
        """Re-measure (at most every few ms) and pause or resume queues accordingly."""
        now = time.monotonic()
        if now < self._due:
            return
        self._due = now + _EVERY_S
        held = self.policy.decide(self.ready(consumer))
        parts = list(self._parts.values())
        if held == self._applied and self._same(parts):
            return
        rank = self._topics.rank
        for part in parts:
            if not part.revoked:
                _hold(consumer, part, held=rank(part.key[0]) in held)
        self._applied, self._applied_to = held, parts

    def _same(self, parts: list[Partition]) -> bool:
        """Whether ``parts`` are the very partitions the last decision was applied to (an
        assignment, a loss or a rewind replaces a :class:`Partition`: its pauses start anew)."""
        seen = self._applied_to
        return len(parts) == len(seen) and all(map(operator.is_, parts, seen))

    def ready(self, consumer: client.Consumer) -> list[int]:
        """Tasks each queue could start now, as far as this worker knows.

        First what costs nothing: tasks taken but not started, tasks taken in the last two
        turns of this measure, and a queue held back counts as having work (it was held for
        that). Only the queues this says nothing about, and whose backlog can change a decision,
        have their partitions' ends read, every ``_MEASURE_S`` (each read takes a librdkafka
        lock: reading them all every turn cost a quarter of the poll thread)."""
        taken = [a + b for a, b in zip(self._taken, self._taken_before, strict=True)]
        self._taken_before, self._taken = self._taken, [0] * len(taken)
        counts = [a + b for a, b in zip(self._waiting(), taken, strict=True)]
        for rank in self.policy.held:
            counts[rank] = max(counts[rank], 1)
        unknown = self._unknown(counts)
        now = time.monotonic()
        if unknown and now >= self._measure_due:
            self._measure_due = now + _MEASURE_S
            self._measure(consumer, unknown)
        for rank in unknown:
            counts[rank] += self._measured[rank]
        return counts

    def _unknown(self, counts: list[int]) -> list[int]:
        """The queues with no sign of work whose backlog matters: under ``strict``, those above
        the lowest queue with work (nothing below it can be held for them); under ``weighted``,
        all of them, when another queue has work."""
        working = [rank for rank, n in enumerate(counts) if n > 0]
        if not working:
            return []
        below = working[-1] if self.policy.order == "strict" else len(counts)
        return [rank for rank in range(below) if counts[rank] == 0]

    def _measure(self, consumer: client.Consumer, ranks: list[int]) -> None:
        unknown: list[Partition] = []
        by_rank = self._by_rank()
        for rank in ranks:
            self._measured[rank] = sum(self._backlog(consumer, p, unknown) for p in by_rank[rank])
        if unknown:
            self._starts.learn(consumer, unknown)

    def _by_rank(self) -> list[list[Partition]]:
        """The partitions worth measuring, by queue: every main-topic partition, and the tier
        partitions this worker has taken a record from (the others are, nearly always, empty:
        reading every tier partition's end each time cost a quarter of the poll thread). A
        held tier head is not due: nothing behind it is ready."""
        ranked: list[list[Partition]] = [[] for _ in self.policy.weights]
        for (topic, _), part in list(self._parts.items()):
            if part.revoked or Pause.HOLD in part.pauses:
                continue
            if part.next_offset is not None or self._topics.tier_delay(topic) is None:
                ranked[self._topics.rank(topic)].append(part)
        return ranked

    def _backlog(self, consumer: client.Consumer, part: Partition, unknown: list[Partition]) -> int:
        end = consumer.cached_end(*part.key)
        if not end:
            return 0  # not fetched yet, or an empty partition
        at = part.next_offset if part.next_offset is not None else self._starts.get(part)
        if at is None:  # nothing taken from it yet: where it starts is asked for below, and
            unknown.append(part)  # until then all of it counts (one measure, not idle)
            return end
        return max(0, end - at)

    def _set(self, consumer: client.Consumer, rank: int, *, held: bool) -> None:
        self._applied = None  # a hold outside a decision: the next one is applied in full
        for (topic, _), part in list(self._parts.items()):
            if self._topics.rank(topic) == rank and not part.revoked:
                _hold(consumer, part, held=held)


def _hold(consumer: client.Consumer, part: Partition, *, held: bool) -> None:
    """Add or drop the partition's ``PRIORITY`` pause reason (other reasons stay)."""
    if held and Pause.PRIORITY not in part.pauses:
        pause(consumer, part, Pause.PRIORITY)
    elif not held and Pause.PRIORITY in part.pauses:
        unpause(consumer, part, Pause.PRIORITY)
