"""Per-key serial execution on a bounded thread pool.

Owns running work items so that items with the same key run one at a time, in submission order,
while different keys run in parallel on ``concurrency`` threads and take turns: after each item,
a key's next item queues behind the other keys' items, so a busy key cannot starve the rest.
A work item is expected to handle its own failures: anything escaping one (a worker bug, never a
handler's exception) goes to ``on_crash``, and a thread that dies anyway is reported by
``dead_threads`` (the worker's watchdog stops the worker then, rather than run on short-handed).
With ``ranks`` above 1 (a worker serving several queues) every item has a rank (its queue, 0 the
highest): the pool counts the items of each rank not started yet (:meth:`KeyedExecutor.waiting`)
and, when ``ordered``, starts a waiting item of a lower rank before any of a higher one.
Does not know about Kafka: the worker decides what a work item is and what its completion means.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Protocol

WorkItem = Callable[[], None]
OnCrash = Callable[[str, BaseException], None]  # thread name, what escaped
Entry = tuple[Hashable, WorkItem, int]  # key, item, rank
_log = logging.getLogger(__name__)


def _log_crash(thread: str, exc: BaseException) -> None:
    del thread  # called from that thread: the record's threadName names it
    _log.error("work item raised", exc_info=exc)


class _Ready(Protocol):
    def put(self, entry: Entry | None) -> None: ...
    def get(self) -> Entry | None: ...
    def empty(self) -> bool: ...


class _Ranked:
    """Ready items, the lowest rank first (``ordered``) and in submission order within a rank.

    One deque per rank plus a token queue: each put appends its entry, then a token; each get
    takes a token, then the first entry of the lowest non-empty rank. Every token follows its
    entry, so a get always finds one; deque appends and pops are atomic, and the token queue is
    the C ``SimpleQueue``, so this costs about what the single-rank pool does."""

    def __init__(self, ranks: int, ordered: bool) -> None:
        self._tokens: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._ranks: list[deque[Entry | None]] = [deque() for _ in range(ranks if ordered else 1)]
        self._ranks.append(deque())  # shutdown sentinels: after every item
        self._ordered = ordered

    def put(self, entry: Entry | None) -> None:
        rank = -1 if entry is None else entry[2] if self._ordered else 0
        self._ranks[rank].append(entry)
        self._tokens.put(None)

    def empty(self) -> bool:
        return self._tokens.empty()

    def get(self) -> Entry | None:
        self._tokens.get()
        while True:  # some rank holds an entry for every token taken; a racing get may take
            for entries in self._ranks:  # the one seen, and a put may land behind the scan:
                if entries:  # then scan again
                    try:
                        return entries.popleft()
                    except IndexError:
                        continue


class KeyedExecutor:
    """Serial per key, parallel across keys. ``submit`` never blocks."""

    def __init__(
        self,
        concurrency: int,
        *,
        name: str = "streamjobs-task",
        on_crash: OnCrash = _log_crash,
        ranks: int = 1,
        ordered: bool = False,
    ) -> None:
        self._on_crash = on_crash
        self._stopping = False
        # unordered ranks are only counted: the C queue alone (ranked entries cost ~1 us more)
        ranked = ranks > 1 and ordered
        self._ready: _Ready = _Ranked(ranks, ordered) if ranked else queue.SimpleQueue()
        # items not started yet, per rank (only counted with several ranks)
        self._unstarted = [0] * ranks if ranks > 1 else None
        self._waiting: dict[Hashable, deque[tuple[WorkItem, int]]] = {}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # notified when no key has work left
        self._busy = 0  # threads running an item (under _lock)
        self._started: threading.Event | None = None  # set when a thread takes an item
        self._threads = [
            threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True)
            for i in range(concurrency)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, key: Hashable, item: WorkItem, rank: int = 0) -> None:
        with self._lock:
            if self._unstarted is not None:
                self._unstarted[rank] += 1
            waiting = self._waiting.get(key)
            if waiting is not None:  # the key is busy: run after the items before it
                waiting.append((item, rank))
                return
            self._waiting[key] = deque()
        self._ready.put((key, item, rank))

    def hand_off(self, timeout: float) -> None:
        """After submitting: while a pool thread is idle and an item is ready, wait (up to
        ``timeout``) until a thread has started one.

        The submitting thread (the worker's poll thread) holds the GIL: a pool thread woken
        by :meth:`submit` starts its item only once the submitter lets go of it, and the rest
        of a poll-loop turn (producing outcomes, commits, pauses) lets go only in passing, so
        on a lightly loaded worker a task used to start after that bookkeeping, one more
        thread wake-up later. Waiting here, without the GIL, hands the idle thread the GIL
        and the core at once. Returns at once when every thread is busy (they take the
        items when they can; waiting would only hold up the submitter) or nothing is ready.
        """
        started = threading.Event()
        with self._lock:
            if self._busy >= len(self._threads) or self._ready.empty():
                return
            self._started = started
        try:
            started.wait(timeout)
        finally:
            self._started = None

    def waiting(self) -> list[int]:
        """Items submitted and not started yet, per rank (empty with a single rank)."""
        with self._lock:
            return list(self._unstarted or ())

    def dead_threads(self) -> list[str]:
        """Names of pool threads that ended although the pool was not shut down."""
        if self._stopping:
            return []
        return [thread.name for thread in self._threads if not thread.is_alive()]

    def _loop(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # bookkeeping failed: the pool is broken, say so at once
            self._on_crash(threading.current_thread().name, exc)
            raise

    def _serve(self) -> None:
        while True:
            entry = self._ready.get()
            if entry is None:
                return
            key, item, rank = entry
            with self._lock:
                self._busy += 1
                if self._unstarted is not None:
                    self._unstarted[rank] -= 1
                started = self._started
            if started is not None:
                started.set()
            try:
                item()
            except BaseException as exc:  # a work item must not kill the pool
                self._on_crash(threading.current_thread().name, exc)
            with self._lock:
                self._busy -= 1
                waiting = self._waiting[key]
                if not waiting:
                    del self._waiting[key]
                    if not self._waiting:
                        self._idle.notify_all()
                    continue
                following, rank = waiting.popleft()
            # back of the line, not run at once: a key with a backlog must not starve the others
            self._ready.put((key, following, rank))

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop the threads after the items already submitted; waits up to ``timeout``."""
        self._stopping = True
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._waiting:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._idle.wait(remaining)
        for _ in self._threads:
            self._ready.put(None)
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
