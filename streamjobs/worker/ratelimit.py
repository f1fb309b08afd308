"""Rate limits in the worker: this worker's share of each limit, and the tasks waiting for it.

Owns the decision of when a rate-limited task may start. A limit (a task type's ``rate_limit``
or the queue's ``queue_rate_limit``) holds for the whole consumer group, with no messages between
workers: each worker refills a token bucket at its **share** of the limit, the limit times the
fraction of the queue's task partitions it owns (:func:`share`). The group's assignment gives
every partition to at most one member, so the shares add up to at most the limit as workers
join and leave; a worker that dies takes nothing with it, its partitions move and their share
moves with them. The caveat: a worker with no backlog of a limited type does not use its share,
so keys skewed onto few partitions leave the group *under* the limit, never over.

A task over the limit **waits**: it is taken from Kafka but not started (its offset stays
uncommitted) and :class:`RateGate` releases it when a token is there. Later tasks of its key
wait behind it (per-key order); other keys and task types keep flowing. Held tasks take at most
``max_held`` places; past that the caller pauses the partition instead (:class:`Decision`).

Pure: no Kafka, no threads, the caller passes the time (``time.monotonic()``), and items are
opaque. Used from the poll thread only. Does not pause partitions
(:mod:`streamjobs.worker.partitions`) or run tasks (:mod:`streamjobs.worker.loop`).
"""

from __future__ import annotations

import enum
import itertools
from collections import Counter
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from streamjobs.rates import Rate

T = TypeVar("T")
# A bucket holds this much of its rate (at least one token): after an idle spell a worker may
# start that many tasks at once. Larger than a poll turn, so tokens are not lost to the cap
# while tasks wait; small, so any window of T seconds sees at most T + 0.5 s of the limit.
BURST_S = 0.5
QUEUE: None = None  # the bucket of the queue's limit (task types are named by strings)
LimitName = str | None
_EPSILON = 1e-9


class TokenBucket:
    """Tokens accrue at ``rate`` per second up to a small burst; one token starts one task.

    Starts empty (a restarting worker never starts a burst at once). Changing the rate keeps the
    tokens earned so far, capped to the new burst.
    """

    __slots__ = ("_at", "rate", "tokens")

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.tokens = 0.0
        self._at = now

    @property
    def capacity(self) -> float:
        return max(1.0, self.rate * BURST_S)

    def _refill(self, now: float) -> None:
        if now > self._at:
            self.tokens = min(self.capacity, self.tokens + (now - self._at) * self.rate)
            self._at = now

    def set_rate(self, rate: float, now: float) -> None:
        self._refill(now)  # what was earned at the old rate is kept
        self.rate = rate
        self.tokens = min(self.tokens, self.capacity)

    def ready(self, now: float) -> bool:
        """Whether a token is there now."""
        self._refill(now)
        return self.tokens >= 1.0 - _EPSILON

    def take(self) -> None:
        """Use a token (after :meth:`ready` said there is one)."""
        self.tokens = max(0.0, self.tokens - 1.0)


def share(rate: Rate, owned: int, total: int) -> float:
    """One worker's part of ``rate`` in tasks per second: the fraction of the queue's ``total``
    task partitions it ``owned``. Zero when it owns none (nothing of the queue can reach it)."""
    if total <= 0 or owned <= 0:
        return 0.0
    return rate.per_second * min(owned, total) / total


class Decision(enum.Enum):
    """What to do with a task just read."""

    RUN = "run"  # tokens taken: start it
    HOLD = "hold"  # over the limit (or behind a held task of its key): hand it to hold()
    FULL = "full"  # over, and max_held tasks are held: leave it unread, pause its partition


@dataclass(slots=True)
class _Held(Generic[T]):
    key: Hashable
    limits: tuple[LimitName, ...]
    item: T


class RateGate(Generic[T]):
    """One worker's buckets (per limited task type, and the queue's) and its held tasks.

    ``share`` sets every bucket's rate from the partitions owned; ``decide`` answers for a task
    just read; ``release`` returns, in arrival order, the held tasks that may start now.
    """

    def __init__(
        self,
        types: Mapping[str, Rate],
        queue: Rate | None,
        *,
        max_held: int,
        now: float,
    ) -> None:
        self._rates: dict[LimitName, Rate] = dict(types.items())
        if queue is not None:
            self._rates[QUEUE] = queue
        self._buckets = {name: TokenBucket(0.0, now) for name in self._rates}
        self._queue_limited = queue is not None
        self.max_held = max(1, max_held)
        self._held: dict[int, _Held[T]] = {}  # in arrival order
        self._seq = itertools.count()
        self._keys: Counter[Hashable] = Counter()  # held tasks per key
        self._waiting: Counter[LimitName] = Counter()  # held tasks per limit
        self._dirty = False  # partitions changed: look at every held task on the next release

    @property
    def active(self) -> bool:
        """Whether any limit is set (without one, every task runs at once)."""
        return bool(self._rates)

    @property
    def held(self) -> int:
        return len(self._held)

    @property
    def room_again(self) -> bool:
        """Whether partitions paused for a full hold may resume: it has emptied to half."""
        return len(self._held) <= self.max_held // 2

    def rate(self, name: LimitName) -> float:
        """This worker's current share of a limit, in tasks per second."""
        return self._buckets[name].rate

    def share(self, owned: int, total: int, now: float) -> None:
        """The worker owns ``owned`` of the queue's ``total`` task partitions now."""
        for name, bucket in self._buckets.items():
            bucket.set_rate(share(self._rates[name], owned, total), now)
        self._dirty = True

    def limits_of(self, task: str) -> tuple[LimitName, ...]:
        type_limit: tuple[LimitName, ...] = (task,) if task in self._rates else ()
        return (*type_limit, QUEUE) if self._queue_limited else type_limit

    def decide(self, task: str, key: Hashable, now: float) -> Decision:
        """For a task of type ``task`` just read: start it (its tokens taken), hold it, or
        leave it unread. A key with a task held holds its later tasks too (per-key order)."""
        if key not in self._keys:
            limits = self.limits_of(task)
            if self._take(limits, now):
                return Decision.RUN
        return Decision.HOLD if len(self._held) < self.max_held else Decision.FULL

    def hold(self, task: str, key: Hashable, item: T) -> None:
        """Keep ``item`` until :meth:`release` hands it back (after ``decide`` said HOLD)."""
        limits = self.limits_of(task)
        self._held[next(self._seq)] = _Held(key, limits, item)
        self._keys[key] += 1
        self._waiting.update(limits)

    def release(self, now: float, gone: Callable[[T], bool]) -> tuple[list[T], list[T]]:
        """The held items that may start now, tokens taken, in arrival order (a key's items
        in order), and those dropped because ``gone`` (their partition was given up)."""
        if not self._held or not (self._dirty or self._any_ready(now)):
            return [], []
        self._dirty = False
        started: list[T] = []
        dropped: list[T] = []
        blocked: set[Hashable] = set()  # keys whose earlier task still waits
        for seq, held in list(self._held.items()):
            if gone(held.item):
                self._forget(seq, held)
                dropped.append(held.item)
            elif held.key not in blocked and self._take(held.limits, now):
                self._forget(seq, held)
                started.append(held.item)
            else:
                blocked.add(held.key)
        return started, dropped

    def _any_ready(self, now: float) -> bool:
        return any(self._buckets[n].ready(now) for n, count in self._waiting.items() if count)

    def _take(self, limits: tuple[LimitName, ...], now: float) -> bool:
        """Take one token of each limit, if every one has a token; else take none."""
        buckets = [self._buckets[name] for name in limits]
        if not all(bucket.ready(now) for bucket in buckets):
            return False
        for bucket in buckets:
            bucket.take()
        return True

    def _forget(self, seq: int, held: _Held[T]) -> None:
        del self._held[seq]
        self._keys[held.key] -= 1
        if not self._keys[held.key]:
            del self._keys[held.key]
        self._waiting.subtract(held.limits)
