"""streamjobs.worker.executor: serial per key, parallel across keys, never blocking the caller.

Synchronisation is by events and barriers with deadlines, never by sleeping.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from streamjobs.worker.executor import KeyedExecutor, WorkItem

DEADLINE = 10.0  # seconds; only reached when the behaviour under test is broken


class Blocker:
    """A work item that holds its thread from when it starts until :attr:`release` is set."""

    def __init__(self) -> None:
        self.started, self.release = threading.Event(), threading.Event()

    def __call__(self) -> None:
        self.started.set()
        self.release.wait(DEADLINE)


@contextmanager
def blocking(executor: KeyedExecutor, key: str) -> Iterator[Blocker]:
    """A :class:`Blocker` submitted for ``key``, released when the block ends (whatever
    happens in it, so a failed assertion never leaves a thread waiting)."""
    block = Blocker()
    executor.submit(key, block)
    try:
        yield block
    finally:
        block.release.set()


class Probe:
    """Records, per key, how many items run at once and in which order they ran."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active: dict[str, int] = {}
        self.most_active: dict[str, int] = {}
        self.order: dict[str, list[int]] = {}

    def item(self, key: str, n: int, during: WorkItem = lambda: None) -> WorkItem:
        def run() -> None:
            with self.lock:
                self.active[key] = self.active.get(key, 0) + 1
                self.most_active[key] = max(self.most_active.get(key, 0), self.active[key])
                self.order.setdefault(key, []).append(n)
            try:
                during()
            finally:
                with self.lock:
                    self.active[key] -= 1

        return run


class Countdown:
    """An event set once ``count`` items have finished."""

    def __init__(self, count: int) -> None:
        self.left = count
        self.lock = threading.Lock()
        self.done = threading.Event()

    def tick(self) -> None:
        with self.lock:
            self.left -= 1
            if self.left == 0:
                self.done.set()


@pytest.fixture
def make_executor() -> Iterator[Callable[[int], KeyedExecutor]]:
    made: list[KeyedExecutor] = []

    def make(concurrency: int) -> KeyedExecutor:
        executor = KeyedExecutor(concurrency, name=f"test-exec-{len(made)}")
        made.append(executor)
        return executor

    yield make
    for executor in made:
        executor.shutdown(timeout=DEADLINE)


def test_items_with_different_keys_run_concurrently(
    make_executor: Callable[[int], KeyedExecutor],
) -> None:
    executor = make_executor(4)
    barrier = threading.Barrier(4, timeout=DEADLINE)
    met = Countdown(4)

    def meet() -> None:
        barrier.wait()  # passes only when all four keys are running at the same time
        met.tick()

    for key in "abcd":
        executor.submit(key, meet)
    assert met.done.wait(DEADLINE)
    assert not barrier.broken


def test_other_keys_keep_running_while_one_key_is_blocked(
    make_executor: Callable[[int], KeyedExecutor],
) -> None:
    executor = make_executor(2)
    b_ran = threading.Event()
    with blocking(executor, "a") as block:
        assert block.started.wait(DEADLINE)
        for _ in range(20):  # many items of another key, all through the one free thread
            executor.submit("b", lambda: None)
        executor.submit("b", b_ran.set)
        assert b_ran.wait(DEADLINE)
        assert not block.release.is_set()


def test_same_key_item_waits_for_the_one_before_it(
    make_executor: Callable[[int], KeyedExecutor],
) -> None:
    executor = make_executor(4)
    release = threading.Event()
    first_started, second_ran, other_ran = threading.Event(), threading.Event(), threading.Event()
    first_finished = threading.Event()
    overlap: list[bool] = []

    def first() -> None:
        first_started.set()
        release.wait(DEADLINE)
        first_finished.set()

    def second() -> None:
        overlap.append(not first_finished.is_set())
        second_ran.set()

    try:
        executor.submit("k", first)
        assert first_started.wait(DEADLINE)
        executor.submit("k", second)
        executor.submit("other", other_ran.set)
        # three idle threads and the later item of another key already ran: the same-key item
        # was not started merely for lack of a thread
        assert other_ran.wait(DEADLINE)
        assert not second_ran.is_set()
    finally:
        release.set()
    assert second_ran.wait(DEADLINE)
    assert overlap == [False]


def test_same_key_items_never_overlap_under_load(
    make_executor: Callable[[int], KeyedExecutor],
) -> None:
    executor = make_executor(8)
    probe = Probe()
    per_key = 60
    others = Countdown(2 * per_key)
    finished = Countdown(per_key)
    release = threading.Event()

    def hold_then_finish() -> None:
        release.wait(DEADLINE)  # "a" keeps its first item running while b and c drain
        finished.tick()

    try:
        for n in range(per_key):
            executor.submit("a", probe.item("a", n, hold_then_finish if n == 0 else finished.tick))
            executor.submit("b", probe.item("b", n, others.tick))
            executor.submit("c", probe.item("c", n, others.tick))
        # seven idle threads served b and c; none of them may have started a second "a" item
        assert others.done.wait(DEADLINE)
        assert probe.order["a"] == [0]
    finally:
        release.set()
    assert finished.done.wait(DEADLINE)
    assert probe.most_active == {"a": 1, "b": 1, "c": 1}


def test_same_key_items_run_in_submission_order(
    make_executor: Callable[[int], KeyedExecutor],
) -> None:
    executor = make_executor(6)
    probe = Probe()
    keys, per_key = [f"key-{i}" for i in range(10)], 50
    finished = Countdown(len(keys) * per_key)
    for n in range(per_key):
        for key in keys:
            executor.submit(key, probe.item(key, n, finished.tick))
    assert finished.done.wait(DEADLINE)
    assert probe.order == {key: list(range(per_key)) for key in keys}


def test_submit_never_blocks_while_every_thread_is_busy(
    make_executor: Callable[[int], KeyedExecutor],
) -> None:
    executor = make_executor(1)
    finished = Countdown(1000)
    with blocking(executor, "busy") as block:
        assert block.started.wait(DEADLINE)
        for n in range(1000):  # returns at once although the only thread is taken
            executor.submit(n % 7, finished.tick)
        assert finished.left == 1000
    assert finished.done.wait(DEADLINE)


def test_an_item_that_raises_is_logged_and_the_next_item_of_its_key_still_runs(
    make_executor: Callable[[int], KeyedExecutor], caplog: pytest.LogCaptureFixture
) -> None:
    executor = make_executor(1)
    next_ran = threading.Event()

    def boom() -> None:
        raise ValueError("handler bug")

    with caplog.at_level(logging.ERROR, logger="streamjobs.worker.executor"):
        executor.submit("k", boom)
        executor.submit("k", next_ran.set)
        assert next_ran.wait(DEADLINE)
    assert any(
        r.message == "work item raised" and r.exc_info and r.exc_info[0] is ValueError
        for r in caplog.records
    )


def test_a_key_is_reusable_after_its_queue_drains(
    make_executor: Callable[[int], KeyedExecutor],
) -> None:
    executor = make_executor(2)
    first, second = threading.Event(), threading.Event()
    executor.submit("k", first.set)
    assert first.wait(DEADLINE)
    executor.submit("k", second.set)
    assert second.wait(DEADLINE)


def test_shutdown_finishes_submitted_items_then_stops_its_threads() -> None:
    name = "test-exec-shutdown"
    executor = KeyedExecutor(3, name=name)
    probe = Probe()
    for n in range(30):
        executor.submit(n % 4, probe.item(str(n % 4), n))
    executor.shutdown(timeout=DEADLINE)
    assert sum(len(ran) for ran in probe.order.values()) == 30
    assert not [t for t in threading.enumerate() if t.name.startswith(name)]


def test_hand_off_returns_once_an_idle_thread_has_started_the_item(
    make_executor: Callable[[int], KeyedExecutor],
) -> None:
    executor = make_executor(1)
    with blocking(executor, "a") as block:
        began = time.monotonic()
        executor.hand_off(DEADLINE)  # returns when the thread takes the item, not at the timeout
        assert time.monotonic() - began < DEADLINE / 2
        assert block.started.wait(DEADLINE)


def test_hand_off_does_not_wait_while_every_thread_is_busy(
    make_executor: Callable[[int], KeyedExecutor],
) -> None:
    executor = make_executor(1)
    b_ran = threading.Event()
    with blocking(executor, "a") as block:
        assert block.started.wait(DEADLINE)
        executor.submit("b", b_ran.set)  # ready, but the only thread is busy
        began = time.monotonic()
        executor.hand_off(DEADLINE)
        assert time.monotonic() - began < DEADLINE / 2
        assert not b_ran.is_set()
    assert b_ran.wait(DEADLINE)


def test_hand_off_does_not_wait_when_nothing_is_ready(
    make_executor: Callable[[int], KeyedExecutor],
) -> None:
    executor = make_executor(2)
    began = time.monotonic()
    executor.hand_off(DEADLINE)
    assert time.monotonic() - began < DEADLINE / 2
