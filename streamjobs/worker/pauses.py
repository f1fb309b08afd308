"""Pause reasons: why a partition is paused, layered so that several reasons can hold it.

Owns the :class:`Pause` reasons and the two moves on a partition's reason set: :func:`pause` adds
a reason (the consumer is paused when the first one arrives) and :func:`unpause` drops one (the
partition resumes, seeking back to its first record not taken, only when the last is gone). Any
flow control (tier holds, backpressure, parking, queue priorities, rate limits) pauses through
these, so one never resumes a partition another still holds. Pausing makes librdkafka drop what
it prefetched, hence the seek on resume. Does not decide when to pause
(:mod:`streamjobs.worker.partitions`, :mod:`streamjobs.worker.priorities`).
"""

from __future__ import annotations

import enum
from typing import Protocol

from streamjobs import client


class Pause(enum.Enum):
    """Why a partition is paused; it resumes when it has no reason left."""

    HOLD = "hold"  # a tier partition whose head is not due yet
    BACKPRESSURE = "backpressure"  # every partition, while the executor stays full
    PARKING = "parking"  # main-topic partitions, while key_ordered parks too many tasks
    PRIORITY = "priority"  # a lower queue's partitions, while higher ones have work ready
    RATE = "rate"  # a partition whose next task is over a rate limit (worker/ratelimit.py)


class Pausable(Protocol):
    """What pausing needs of a partition (:class:`streamjobs.worker.partitions.Partition`)."""

    key: tuple[str, int]
    pauses: set[Pause]
    next_offset: int | None


def pause(consumer: client.Consumer, part: Pausable, reason: Pause) -> None:
    """Add ``reason``; the consumer pauses the partition if it was flowing."""
    if not part.pauses:
        consumer.pause([client.TopicPartition(*part.key)])
    part.pauses.add(reason)


def unpause(consumer: client.Consumer, part: Pausable, reason: Pause) -> None:
    """Drop one reason; the partition resumes only when it was the last one."""
    if reason not in part.pauses:
        return
    part.pauses.discard(reason)
    if not part.pauses:
        resume(consumer, part, part.next_offset)


def resume(consumer: client.Consumer, part: Pausable, offset: int | None) -> None:
    """Resume the partition, re-reading from ``offset`` (what was prefetched was dropped)."""
    consumer.resume([client.TopicPartition(*part.key)])
    if offset is not None:  # drop what was prefetched before the pause; re-read from here
        consumer.seek(client.TopicPartition(part.key[0], part.key[1], offset))
