"""Per-key serial execution on a bounded thread pool.

Owns running work items so that items with the same key run one at a time, in submission order,
while different keys run in parallel on ``concurrency`` threads and take turns: after each item,
a key's next item queues behind the other keys' items, so a busy key cannot starve the rest.
A work item is expected to handle its own failures: anything escaping one (a worker bug, never a
handler's exception) goes to ``on_crash``, and a thread that dies anyway is reported by
``dead_threads`` (the worker's watchdog stops the worker then, rather than run on short-handed).
Does not know about Kafka: the worker decides what a work item is and what its completion means.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable

WorkItem = Callable[[], None]
OnCrash = Callable[[str, BaseException], None]  # thread name, what escaped
_log = logging.getLogger(__name__)


def _log_crash(thread: str, exc: BaseException) -> None:
    del thread  # called from that thread: the record's threadName names it
    _log.error("work item raised", exc_info=exc)


class KeyedExecutor:
    """Serial per key, parallel across keys. ``submit`` never blocks."""

    def __init__(
        self, concurrency: int, *, name: str = "streamjobs-task", on_crash: OnCrash = _log_crash
    ) -> None:
        self._on_crash = on_crash
        self._stopping = False
        self._ready: queue.SimpleQueue[tuple[Hashable, WorkItem] | None] = queue.SimpleQueue()
        self._waiting: dict[Hashable, deque[WorkItem]] = {}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # notified when no key has work left
        self._threads = [
            threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True)
            for i in range(concurrency)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, key: Hashable, item: WorkItem) -> None:
        with self._lock:
            waiting = self._waiting.get(key)
            if waiting is not None:  # the key is busy: run after the items before it
                waiting.append(item)
                return
            self._waiting[key] = deque()
        self._ready.put((key, item))

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
            key, item = entry
            try:
                item()
            except BaseException as exc:  # a work item must not kill the pool
                self._on_crash(threading.current_thread().name, exc)
            with self._lock:
                waiting = self._waiting[key]
                if not waiting:
                    del self._waiting[key]
                    if not self._waiting:
                        self._idle.notify_all()
                    continue
                following = waiting.popleft()
            # back of the line, not run at once: a key with a backlog must not starve the others
            self._ready.put((key, following))

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
