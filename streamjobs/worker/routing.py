"""Routing a consumed task record, on the poll thread, before it becomes an attempt.

Owns what happens to one record read from a task topic: a record of a partition no longer ours
(or paused) is left for the next read; one the previous owner already ran (its commit metadata
says) only ends its key's retry wait; an undecodable one (empty value, attempt out of range, due
beyond ``max_future``) or one of an unknown task type is dead-lettered with its reason; a
cancelled task is settled ``cancelled`` without starting (a tier record too, without waiting
until it is due); a tier record whose head is not released yet holds its partition (paused, not
the thread asleep), and one released but not due yet hops to the tier that fits the rest of its
wait; a task over a rate limit is left to :mod:`streamjobs.worker.ratelimited`. A record taken
has its offset tracked and covered by the crash ledger. Does not queue, park, hold or run tasks,
nor count them in flight (:mod:`streamjobs.worker.intake`, with what :meth:`Router.route`
returns), write records (:class:`~streamjobs.worker.settle.Settler`) or pause partitions
itself (:mod:`streamjobs.worker.partitions`).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from streamjobs import client, status
from streamjobs.envelope import Envelope, decode_envelope
from streamjobs.errors import BadInput, KafkaUnavailable
from streamjobs.registry import Handler, TaskRegistry
from streamjobs.retry import clamp_attempt, pick_tier
from streamjobs.settings import Settings
from streamjobs.topics import ServedTopics
from streamjobs.worker.cancels import CancelBook, not_started_note, settle_cancelled
from streamjobs.worker.outcomes import OutRecord
from streamjobs.worker.partitions import Assigned, Partition
from streamjobs.worker.quarantine import StartLedger
from streamjobs.worker.ratelimit import Decision
from streamjobs.worker.ratelimited import RateLimits
from streamjobs.worker.settle import Settler

_log = logging.getLogger(__name__)

#: A record taken to become an attempt: what the loop queues (or holds, ``Decision.HOLD``).
Taken = tuple[Envelope, Handler, Partition, Decision]


class Router:
    """Decides, per consumed record, whether it is taken, settled at once, or left in Kafka."""

    def __init__(
        self,
        settings: Settings,
        registry: TaskRegistry,
        topics: ServedTopics,
        parts: Assigned,
        limits: RateLimits,
        *,
        settler: Settler,
        ledger: StartLedger,
        cancels: CancelBook,
    ) -> None:
        """The keyword parts are one run's (made by ``Worker.run``)."""
        self.registry = registry
        self._topics = topics
        self._parts = parts
        self._limits = limits
        self.settler = settler
        self.ledger = ledger
        self.cancels = cancels
        self._max_future_ms = int(settings.max_future.total_seconds() * 1000)

    def route(self, consumer: client.Consumer, message: client.Record) -> Taken | None:
        """Route ``message``; returns it as taken if it is to become an attempt."""
        topic, partition, offset = message.topic, message.partition, message.offset
        part = self._parts.get((topic, partition))
        if part is None or part.revoked or self._parts.refuse(consumer, part, offset):
            return None  # not ours any more, or paused: it will be read again after resume/seek
        if part.finished_before(offset):  # the previous owner ran it (its commit metadata says)
            self.settler.retry_ended(message)  # key_ordered counted it as waiting on its tier
            return None
        try:
            envelope = self._decode(message)
        except BadInput as exc:
            self._begin(part, offset)
            self.settler.dead_letter(message, part, None, exc.reason, exc)
            return None
        if self._cancelled(message, part, envelope):
            return None
        tier = self._topics.tier_delay(topic)
        if tier is not None and self._not_due(consumer, message, part, envelope, tier):
            return None
        decision = self._limits.decide(consumer, message, part, envelope)
        if decision is Decision.FULL:
            return None  # not taken: its partition is paused until the held tasks have room
        self._begin(part, offset)
        try:
            handler = self.registry.get(envelope.task)
        except BadInput as exc:
            self.settler.dead_letter(message, part, envelope, exc.reason, exc)
            return None
        return envelope, handler, part, decision

    def _begin(self, part: Partition, offset: int) -> None:
        try:  # quarantine is a safety net: without the ledger, tasks still run
            self.ledger.cover(part.key, offset)
        except KafkaUnavailable as exc:
            _log.warning("%s: a crash here may go uncounted", exc)
        part.next_offset = offset + 1
        part.tracker.dispatched(offset)

    def _decode(self, message: client.Record) -> Envelope:
        value = message.value
        if not value:
            raise BadInput("empty or tombstone value on a task topic", reason="empty_value")
        envelope = decode_envelope(value)
        if clamp_attempt(envelope.attempt) is None:
            raise BadInput(f"attempt {envelope.attempt} out of range", reason="bad_attempt")
        due = envelope.not_before_ms
        if due is not None and due - status.now_ms() > self._max_future_ms:
            raise BadInput(f"due time {due} is beyond max_future", reason="due_too_far")
        return envelope

    def _cancelled(self, message: client.Record, part: Partition, envelope: Envelope) -> bool:
        """A cancelled task never starts: settled ``cancelled`` when its record is read (a tier
        record too, without waiting until it is due)."""
        request = self.cancels.cancelled(envelope)
        if request is None:
            return False
        self._begin(part, message.offset)
        settle_cancelled(self.settler, part, message, envelope, note=not_started_note(request))
        return True

    def _not_due(
        self,
        consumer: client.Consumer,
        message: client.Record,
        part: Partition,
        envelope: Envelope,
        tier: timedelta,
    ) -> bool:
        """Hold the partition if its head is not released yet; hop if released but not due."""
        now = status.now_ms()
        due = envelope.not_before_ms or 0
        release = message.timestamp_ms + int(tier.total_seconds() * 1000)
        release = min(release, due) if due else release
        if release > now:
            self._parts.hold(consumer, part, message.offset, release)
            return True
        if due > now:
            self._begin(part, message.offset)
            self._hop(message, part, timedelta(milliseconds=due - now))
            return True
        return False

    def _hop(self, message: client.Record, part: Partition, remaining: timedelta) -> None:
        """Move a released-but-not-due record to the tier that fits the rest of its wait."""
        topic = message.topic
        queue = self._topics.of(topic)
        family = queue.retry if topic in queue.retry.values() else queue.delay
        target = family[pick_tier(list(family), remaining)]
        self.settler.settle(
            part, message, [OutRecord(target, message.key, message.value, message.headers)]
        )
        self.settler.stats.hopped += 1
