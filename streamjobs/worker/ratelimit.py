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
(:mod:`streamjobs.worker.partitions`) or run tasks (:mod:`streamjobs.worker.intake`).
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections import Counter, deque
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
    seq: int  # arrival order
    limits: tuple[LimitName, ...]
    item: T


class RateGate(Generic[T]):
    """One worker's buckets (per limited task type, and the queue's) and its held tasks.

    ``share`` sets every bucket's rate from the partitions owned; ``decide`` answers for a task
    just read; ``release`` returns, in arrival order, the held tasks that may start now.

    Held tasks wait in one line per key; the first of each line (its head) is what waits for
    tokens. ``release`` looks at heads in arrival order and stops as soon as every limit a head
    still waits for is out of tokens, so a poll turn costs what it starts, not what is held.
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
        self._lines: dict[Hashable, deque[_Held[T]]] = {}  # held tasks per key, in order
        self._heads: list[tuple[int, Hashable]] = []  # (seq, key) of each line's head: a heap
        # the heads in the heap, by the limits they wait for (a few kinds: types + queue)
        self._pending: Counter[tuple[LimitName, ...]] = Counter()
        self._count = 0
        self._seq = itertools.count()
        self._dirty = False  # partitions changed: look for tasks of given-up partitions

    @property
    def active(self) -> bool:
        """Whether any limit is set (without one, every task runs at once)."""
        return bool(self._rates)

    @property
    def held(self) -> int:
        return self._count

    @property
    def room_again(self) -> bool:
        """Whether partitions paused for a full hold may resume: it has emptied to half."""
        return self._count <= self.max_held // 2

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
        if key not in self._lines and self._take(self.limits_of(task), now):
            return Decision.RUN
        return Decision.HOLD if self._count < self.max_held else Decision.FULL

    def hold(self, task: str, key: Hashable, item: T) -> None:
        """Keep ``item`` until :meth:`release` hands it back (after ``decide`` said HOLD)."""
        held = _Held(next(self._seq), self.limits_of(task), item)
        self._count += 1
        line = self._lines.get(key)
        if line is not None:
            line.append(held)
            return
        self._lines[key] = deque([held])
        self._push_head(key, held)

    def release(self, now: float, gone: Callable[[T], bool]) -> tuple[list[T], list[T]]:
        """The held items that may start now, tokens taken, in arrival order (a key's items
        in order), and those dropped because ``gone`` (their partition was given up)."""
        if not self._count or not (self._dirty or self._any_ready(now)):
            return [], []
        started: list[T] = []
        dropped = self._drop(gone, started) if self._dirty else []
        exhausted: set[LimitName] = set()  # out of tokens until the next poll turn
        waiting: list[tuple[int, Hashable]] = []  # heads still without tokens
        while self._heads and not self._all_blocked(exhausted):
            seq, key = heapq.heappop(self._heads)
            head = self._lines[key][0]
            self._pending[head.limits] -= 1
            if gone(head.item):  # given up without share() hearing of it (a rewind)
                self._dirty = True  # dropped, with the rest of its partition, next turn
                waiting.append((seq, key))
            elif exhausted.isdisjoint(head.limits) and self._take(head.limits, now):
                self._start_line(key, started)
            else:
                exhausted.update(n for n in head.limits if not self._buckets[n].ready(now))
                waiting.append((seq, key))
        for seq, key in waiting:
            heapq.heappush(self._heads, (seq, key))
            self._pending[self._lines[key][0].limits] += 1
        return started, dropped

    def _all_blocked(self, exhausted: set[LimitName]) -> bool:
        """Whether every head left waits for a limit out of tokens: the scan can stop."""
        return all(
            not count or not exhausted.isdisjoint(limits) for limits, count in self._pending.items()
        )

    def _any_ready(self, now: float) -> bool:
        return any(
            count and all(self._buckets[name].ready(now) for name in limits)
            for limits, count in self._pending.items()
        )

    def _take(self, limits: tuple[LimitName, ...], now: float) -> bool:
        """Take one token of each limit, if every one has a token; else take none."""
        buckets = [self._buckets[name] for name in limits]
        if not all(bucket.ready(now) for bucket in buckets):
            return False
        for bucket in buckets:
            bucket.take()
        return True

    def _push_head(self, key: Hashable, head: _Held[T]) -> None:
        heapq.heappush(self._heads, (head.seq, key))
        self._pending[head.limits] += 1

    def _start_line(self, key: Hashable, started: list[T]) -> None:
        """The head of ``key``'s line has its tokens: start it and the unlimited tasks right
        behind it (held only to keep the key's order); a limited one becomes the new head."""
        line = self._lines[key]
        started.append(line.popleft().item)
        self._count -= 1
        while line and not line[0].limits:
            started.append(line.popleft().item)
            self._count -= 1
        self._next_head(key, line)

    def _next_head(self, key: Hashable, line: deque[_Held[T]]) -> None:
        if line:
            self._push_head(key, line[0])
        else:
            del self._lines[key]

    def _drop(self, gone: Callable[[T], bool], started: list[T]) -> list[T]:
        """Drop the tasks of given-up partitions; a line whose head went may start at once."""
        self._dirty = False
        dropped: list[T] = []
        self._heads.clear()
        self._pending.clear()
        for key, line in list(self._lines.items()):
            kept: deque[_Held[T]] = deque()
            for held in line:
                if gone(held.item):
                    dropped.append(held.item)
                else:
                    kept.append(held)
            while kept and not kept[0].limits:
                started.append(kept.popleft().item)
            self._lines[key] = kept
            self._next_head(key, kept)
        self._count = sum(len(line) for line in self._lines.values())
        return dropped
