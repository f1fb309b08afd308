"""Per-key concurrency in one worker against a real broker: serial per key, parallel across keys,
contiguous commits, long tasks and a full executor without leaving the consumer group."""

from __future__ import annotations

import asyncio
import gc
import itertools
import threading
import time
import warnings
import weakref
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import pytest

from streamjobs import Producer, Settings, Task, TaskRegistry, TaskState, Worker, status
from streamjobs.topics import queue_topics
from tests.integration.conftest import (
    TEST_SETTINGS,
    Membership,
    ThreadWorker,
    all_succeeded,
    committed_offset,
    committed_offsets,
    group_assignment,
    read_topic,
    statuses,
)
from tests.support import holds_for, wait_for

pytestmark = pytest.mark.integration

# Shortest max.poll.interval.ms per group protocol. Classic: librdkafka requires it to be at least
# session.timeout.ms, and the broker's group.min.session.timeout.ms defaults to 6 s. Consumer
# (KIP-848): the session timeout lives on the broker and there is no such floor; 2 s still leaves
# the poll loop (a consume call every 50 ms) a wide margin on a loaded 2-CPU test box.
CLASSIC_POLL_INTERVAL_MS = 6000
CONSUMER_POLL_INTERVAL_MS = 2000


def _short_poll(interval_ms: int) -> dict[str, Any]:
    return {**TEST_SETTINGS["kafka"], "max.poll.interval.ms": interval_ms}


class Step(Task):
    key: str
    seq: int
    seconds: float = 0.0


def _state(settings: Settings, task_id: str) -> TaskState | None:
    view = statuses(settings).get(task_id)
    return None if view is None else view.state


def _runs(settings: Settings) -> Counter[str]:
    """How many times each task id was started, per the ``running`` records on the status topic."""
    return Counter(
        view.task_id
        for record in read_topic(settings, queue_topics(settings).status)
        if record.value is not None
        and (view := status.decode_status(record.value)).state is TaskState.RUNNING
    )


def _ends(settings: Settings, topic: str) -> dict[int, int]:
    return {p: max(0, o) for p, o in committed_offsets(settings, topic).items()}


def test_same_key_tasks_never_overlap_and_run_in_submit_order_while_keys_run_in_parallel(
    make_settings: Callable[..., Settings], worker: Callable[..., ThreadWorker]
) -> None:
    settings = make_settings(concurrency=8)
    keys = [f"key-{k}" for k in range(16)]
    per_key = 8
    spans: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    lock = threading.Lock()
    registry = TaskRegistry()

    @registry.handler(Step)
    def step(task: Step) -> int:
        start = time.monotonic()
        time.sleep(task.seconds)  # the work
        with lock:
            spans[task.key].append((task.seq, start, time.monotonic()))
        return task.seq

    worker(registry, settings)
    tasks = [Step(key=k, seq=s, seconds=0.03) for s in range(per_key) for k in keys]
    with Producer(settings) as producer:
        handles = producer.submit_many(tasks, keys=[t.key for t in tasks])

    wait_for(
        lambda: all_succeeded(settings, [h.task_id for h in handles]),
        60.0,
        message="every task to be succeeded on the status topic",
    )

    for key in keys:
        runs = sorted(spans[key], key=lambda run: run[1])
        assert [seq for seq, _, _ in runs] == list(range(per_key)), f"{key} ran out of order"
        overlaps = [(a, b) for a, b in itertools.pairwise(runs) if b[1] < a[2]]
        assert not overlaps, f"{key}: a task started before the previous one ended: {overlaps}"
    # different keys ran at the same time, beyond the partition count, within the concurrency
    edges = sorted(
        (t, delta) for runs in spans.values() for _, s, e in runs for t, delta in ((s, 1), (e, -1))
    )
    running, peak = 0, 0
    for _, delta in edges:
        running += delta
        peak = max(peak, running)
    assert settings.partitions < peak <= settings.concurrency, peak
    main = queue_topics(settings).main
    ends = Counter(h.partition for h in handles)
    wait_for(
        lambda: _ends(settings, main) == {p: ends[p] for p in range(settings.partitions)},
        30.0,
        message="every offset of the main topic to be committed",
    )


def test_out_of_order_completion_commits_only_up_to_the_lowest_unfinished_offset(
    make_settings: Callable[..., Settings], worker: Callable[..., ThreadWorker]
) -> None:
    settings = make_settings(partitions=1, concurrency=4)
    main = queue_topics(settings).main
    blocker_started = threading.Event()
    release = threading.Event()
    registry = TaskRegistry()

    @registry.handler(Step)
    def step(task: Step) -> int:
        if task.seq == -1:
            blocker_started.set()
            release.wait(30.0)
        return task.seq

    worker(registry, settings)
    with Producer(settings) as producer:
        first = producer.submit(Step(key="a", seq=0), key="a")
        wait_for(
            lambda: committed_offset(settings, main, 0) == first.offset + 1,
            30.0,
            message="the first task to be committed",
        )
        blocker = producer.submit(Step(key="a", seq=-1), key="a")
        assert blocker_started.wait(30.0), "the blocking task did not start"
        later = [Step(key=k, seq=n) for n in range(1, 6) for k in ("b", "c")]
        later_handles = producer.submit_many(later, keys=[t.key for t in later])
        behind = producer.submit(Step(key="a", seq=6), key="a")  # waits behind the blocker

    wait_for(
        lambda: all_succeeded(settings, [h.task_id for h in later_handles]),
        30.0,
        message="the later b/c tasks to succeed while the blocker runs",
    )
    views = statuses(settings)
    assert views[blocker.task_id].state is TaskState.RUNNING
    assert views[behind.task_id].state is TaskState.QUEUED  # same key: not before the blocker
    holds_for(
        lambda: committed_offset(settings, main, 0) == blocker.offset,
        1.5,
        message="the committed offset moved past the unfinished blocker",
    )

    release.set()

    wait_for(
        lambda: committed_offset(settings, main, 0) == behind.offset + 1,
        30.0,
        message="the committed offset to advance past every task",
    )
    assert all_succeeded(settings, [blocker.task_id, behind.task_id])


@pytest.mark.slow
def test_task_lasting_ten_max_poll_intervals_completes_without_a_rebalance(
    make_settings: Callable[..., Settings],
    worker: Callable[..., ThreadWorker],
    membership: Membership,
) -> None:
    """A task of 10 x max.poll.interval.ms, the shortest legal interval for the group protocol:
    20 s with ``consumer`` (KIP-848), 60 s with ``classic`` (see CLASSIC_POLL_INTERVAL_MS)."""
    settings = make_settings(concurrency=2)
    classic = getattr(settings, "group_protocol", "classic") == "classic"
    interval_ms = CLASSIC_POLL_INTERVAL_MS if classic else CONSUMER_POLL_INTERVAL_MS
    settings = settings.model_copy(update={"kafka": _short_poll(interval_ms)})
    main = queue_topics(settings).main
    seconds = 10 * interval_ms / 1000
    registry = TaskRegistry()

    @registry.handler(Step)
    def step(task: Step) -> int:
        time.sleep(task.seconds)  # the work
        return task.seq

    running = worker(registry, settings)
    members = set(group_assignment(settings))
    with Producer(settings) as producer:
        long = producer.submit(Step(key="long", seq=0, seconds=seconds), key="long")
        # the poll loop keeps serving other keys while the long task runs
        wait_for(
            lambda: _state(settings, long.task_id) is TaskState.RUNNING,
            30.0,
            message="the long task to be running",
        )
        quick = producer.submit(Step(key="quick", seq=1), key="quick")
        wait_for(lambda: all_succeeded(settings, [quick.task_id]), 30.0, message="quick task")

        wait_for(
            lambda: all_succeeded(settings, [long.task_id]),
            seconds + 30.0,
            interval=0.5,
            message="the long task to succeed",
        )

    assert set(group_assignment(settings)) == members, "the worker rejoined the group"
    assert len(membership.of(running.worker, "assign")) == 1
    assert membership.of(running.worker, "revoke") == []
    assert membership.of(running.worker, "lost") == []
    assert _runs(settings)[long.task_id] == 1, "the long task was started more than once"
    wait_for(
        lambda: committed_offset(settings, main, long.partition) > long.offset,
        30.0,
        message="the long task's offset to be committed",
    )


@pytest.mark.slow
def test_full_executor_pauses_intake_and_the_worker_stays_in_the_group(
    make_settings: Callable[..., Settings],
    worker: Callable[..., ThreadWorker],
    membership: Membership,
) -> None:
    """One thread, five slots, and a head task longer than max.poll.interval.ms: the executor
    stays full past the pause threshold while the poll loop must keep the membership alive."""
    # 6 s: legal for either group protocol, and well past the worker's 1 s pause threshold
    settings = make_settings(
        concurrency=1, max_in_flight=5, kafka=_short_poll(CLASSIC_POLL_INTERVAL_MS)
    )
    main = queue_topics(settings).main
    head_seconds = CLASSIC_POLL_INTERVAL_MS / 1000 + 1.0
    # Worker internals, sampled: the worker exposes no public in-flight or pause signal
    in_flight: list[int] = []
    ran: Counter[int] = Counter()
    holder: list[ThreadWorker] = []
    registry = TaskRegistry()

    @registry.handler(Step)
    def step(task: Step) -> int:
        in_flight.append(holder[0].worker.in_flight)
        ran[task.seq] += 1
        time.sleep(task.seconds)  # the work
        return task.seq

    running = worker(registry, settings)
    holder.append(running)
    members = set(group_assignment(settings))
    tasks = [
        Step(key="head", seq=0, seconds=head_seconds),
        *(Step(key=f"key-{n % 5}", seq=n, seconds=0.05) for n in range(1, 21)),
    ]
    with Producer(settings) as producer:
        handles = producer.submit_many(tasks, keys=[t.key for t in tasks])

    wait_for(
        lambda: running.worker.paused_for_backpressure,
        head_seconds,
        message="the worker to pause its partitions while the executor is full",
    )
    wait_for(
        lambda: all_succeeded(settings, [h.task_id for h in handles]),
        head_seconds + 30.0,
        interval=0.5,
        message="every task to succeed",
    )

    assert max(in_flight) <= settings.max_in_flight, max(in_flight)
    assert ran == Counter(range(21)), "a task ran twice or never"
    assert set(group_assignment(settings)) == members, "the worker rejoined the group"
    assert membership.of(running.worker, "revoke") == []
    assert membership.of(running.worker, "lost") == []
    ends = Counter(h.partition for h in handles)
    wait_for(
        lambda: _ends(settings, main) == {p: ends[p] for p in range(settings.partitions)},
        30.0,
        message="every offset of the main topic to be committed",
    )


def test_stopped_worker_leaves_no_unclosed_event_loop(
    make_settings: Callable[..., Settings],
) -> None:
    """A Worker with ``async def`` handlers runs them on its own event loop; after ``run()``
    returns nothing of it stays open (a long-lived process may run many workers)."""
    settings = make_settings()
    registry = TaskRegistry()

    @registry.handler(Step)
    async def step(task: Step) -> int:
        await asyncio.sleep(task.seconds)
        return task.seq

    instance = Worker(settings, registry)
    thread = threading.Thread(target=instance.run, name="worker-async", daemon=True)
    thread.start()
    try:
        assert instance.assigned.wait(30.0), "worker got no partitions within 30 s"
        with Producer(settings) as producer:
            handle = producer.submit(Step(key="a", seq=7), key="a")
        assert handle.wait(30.0) == 7
    finally:
        instance.stop()
        thread.join(30.0)
    assert not thread.is_alive(), "worker did not stop"
    gone = weakref.ref(instance)
    del instance, thread

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        gc.collect()

    assert gone() is None, "the stopped Worker was not collected"
    leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaked == [], f"a stopped worker left resources open: {leaked}"
