"""The spine against a real broker: submit, consume, commit after the outcome, status topic."""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable

import pytest

from streamjobs import (
    Producer,
    Settings,
    StatusView,
    Task,
    TaskFailed,
    TaskRegistry,
    TaskState,
)
from streamjobs.topics import queue_topics
from tests.integration.conftest import (
    NO_OFFSET,
    ThreadWorker,
    committed_offset,
    envelopes,
    group_assignment,
    key_for_partition,
    latest,
    state_of,
    status_history,
    statuses,
)
from tests.support import wait_for

pytestmark = pytest.mark.integration


class Add(Task):
    a: int
    b: int


class Step(Task):
    key: str
    seq: int


class Gate(Task):
    name: str


def test_submitted_task_succeeds_with_its_result_on_the_status_topic(
    settings: Settings, producer: Producer, worker: Callable[..., ThreadWorker]
) -> None:
    registry = TaskRegistry()

    @registry.handler(Add)
    def add(task: Add) -> dict[str, int]:
        return {"sum": task.a + task.b}

    worker(registry)
    handle = producer.submit(Add(a=2, b=3), key="calc")

    assert handle.wait(30.0) == {"sum": 5}
    view = latest(settings, handle.task_id)
    assert view is not None
    assert view.state is TaskState.SUCCEEDED
    assert view.result == {"sum": 5}
    assert view.attempt == 1
    assert view.key == "calc"
    main = queue_topics(settings).main
    wait_for(
        lambda: committed_offset(settings, main, handle.partition) > handle.offset,
        30.0,
        message="the succeeded task's offset to be committed",
    )


def test_queued_status_exists_before_any_worker_runs(
    settings: Settings, producer: Producer
) -> None:
    handle = producer.submit(Add(a=1, b=1))

    view = latest(settings, handle.task_id)
    assert view is not None
    assert view.state is TaskState.QUEUED
    assert view.topic == queue_topics(settings).main
    main = queue_topics(settings).main
    assert committed_offset(settings, main, handle.partition) == NO_OFFSET


def test_unknown_task_id_has_no_status(settings: Settings, producer: Producer) -> None:
    producer.submit(Add(a=1, b=1))  # the status topic is not empty: the id is merely unknown

    assert latest(settings, uuid.uuid4().hex) is None


@pytest.mark.slow
def test_same_key_tasks_run_in_submit_order_with_two_workers_in_one_group(
    make_settings: Callable[..., Settings], worker: Callable[..., ThreadWorker]
) -> None:
    settings = make_settings(concurrency=4)
    seen: list[tuple[str, int]] = []
    registry = TaskRegistry()

    @registry.handler(Step)
    def step(task: Step) -> None:
        seen.append((task.key, task.seq))
        time.sleep(0.002)  # the work: long enough for keys to interleave across threads

    workers = [worker(registry, settings), worker(registry, settings)]
    wait_for(lambda: _stable_group(settings, 2), 30.0, message="a stable group of two workers")
    keys = [f"key-{k}" for k in range(20)]
    tasks = [Step(key=key, seq=seq) for seq in range(30) for key in keys]
    with Producer(settings) as producer:
        handles = producer.submit_many(tasks, keys=[t.key for t in tasks])

    # hand the busy worker's partitions over mid-run: per-key order must survive the rebalance
    wait_for(lambda: len(seen) >= 100, 60.0, message="a first part of the tasks to run")
    busy = max(workers, key=lambda w: w.worker.stats.succeeded)
    busy.stop()
    final = wait_for(
        lambda: _all_succeeded(settings, [h.task_id for h in handles]),
        60.0,
        message="every task to be succeeded on the status topic",
    )

    per_key: dict[str, list[int]] = defaultdict(list)
    for key, seq in seen:
        per_key[key].append(seq)
    # a handed-over partition is re-read from its committed offset, so a task may run again
    # (at least once); but no task may run for the first time before an earlier one of its key
    first_runs = {key: list(dict.fromkeys(seqs)) for key, seqs in per_key.items()}
    wrong = {key: per_key[key] for key, firsts in first_runs.items() if firsts != list(range(30))}
    assert not wrong, f"per-key run order differs from submit order: {wrong}"
    assert set(per_key) == set(keys)
    assert {view.worker_id for view in final.values()} == {w.worker.worker_id for w in workers}


def test_a_busy_key_does_not_starve_the_task_of_another_key(
    settings: Settings, producer: Producer, worker: Callable[..., ThreadWorker]
) -> None:
    ran: list[tuple[str, int]] = []
    registry = TaskRegistry()

    @registry.handler(Step)
    def step(task: Step) -> None:
        ran.append((task.key, task.seq))
        time.sleep(0.5 if task.seq == 0 else 0.01)  # the work; the first one is long

    worker(registry)  # one handler thread (concurrency 1)
    hot, cold = key_for_partition(0, 3, "hot"), key_for_partition(0, 3, "cold")
    tasks = [Step(key=hot, seq=0), Step(key=cold, seq=0)]
    tasks += [Step(key=hot, seq=n) for n in range(1, 40)]
    handles = producer.submit_many(tasks, keys=[t.key for t in tasks])

    handles[1].wait(30.0)
    position = ran.index((cold, 0))
    assert position <= 2, f"the other key's task waited behind {position} tasks of the busy key"


def test_two_workers_in_one_group_share_the_main_topic_partitions(
    settings: Settings, worker: Callable[..., ThreadWorker]
) -> None:
    main = queue_topics(settings).main
    worker(TaskRegistry())
    worker(TaskRegistry())

    owners = wait_for(
        lambda: _stable_group(settings, 2), 30.0, message="a stable group of two workers"
    )

    main_share = {
        member: sorted(p for t, p in parts if t == main) for member, parts in owners.items()
    }
    assert all(main_share.values()), f"a worker owns no main-topic partition: {main_share}"


def _stable_group(settings: Settings, members: int) -> dict[str, set[tuple[str, int]]] | None:
    """The group's assignment once it has ``members`` members, each owning partitions, and
    every task-topic partition is owned."""
    owners = group_assignment(settings)
    everything = {
        (topic, p)
        for topic in queue_topics(settings).task_topics
        for p in range(settings.partitions)
    }
    owned = set().union(*owners.values()) if owners else set()
    if len(owners) == members and all(owners.values()) and owned == everything:
        return owners
    return None


def _all_succeeded(settings: Settings, task_ids: list[str]) -> dict[str, StatusView] | None:
    views = statuses(settings)
    found = {task_id: views.get(task_id) for task_id in task_ids}
    if all(v is not None and v.state is TaskState.SUCCEEDED for v in found.values()):
        return {k: v for k, v in found.items() if v is not None}
    return None


def test_handler_exception_leaves_offset_uncommitted_until_its_outcome_is_written(
    make_settings: Callable[..., Settings], worker: Callable[..., ThreadWorker]
) -> None:
    settings = make_settings(concurrency=2)
    main = queue_topics(settings).main
    release = threading.Event()
    blocked = threading.Event()
    registry = TaskRegistry()

    @registry.handler(Gate)
    def gate(task: Gate) -> str:
        if task.name == "blocker" and not blocked.is_set():
            blocked.set()
            release.wait(30.0)
            raise RuntimeError("failed after being released")
        return task.name

    worker(registry, settings)
    partition = 0
    with Producer(settings) as producer:
        try:
            blocker = producer.submit(
                Gate(name="blocker"), key=key_for_partition(partition, 3, "blocker")
            )
            wait_for(
                lambda: state_of(settings, blocker.task_id) == "running",
                30.0,
                message="the blocking task to be running",
            )
            # a later task of the same partition finishes first (another key, another thread)
            later = producer.submit(Gate(name="later"), key=key_for_partition(partition, 3, "l"))
            assert later.partition == blocker.partition
            assert later.offset > blocker.offset
            assert later.wait(30.0) == "later"
            # a commit cycle that happened after "later" finished: a probe on another partition
            probe = producer.submit(Gate(name="probe"), key=key_for_partition(1, 3, "probe"))
            assert probe.wait(30.0) == "probe"
            wait_for(
                lambda: committed_offset(settings, main, probe.partition) > probe.offset,
                30.0,
                message="the probe's offset to be committed",
            )

            assert committed_offset(settings, main, partition) <= blocker.offset
        finally:
            release.set()

        wait_for(
            lambda: committed_offset(settings, main, partition) > later.offset,
            30.0,
            message="the partition to be committed past the failed task",
        )
        # what made the commit possible: the outcome of attempt 1, a retry record and its status
        outcome = [
            (v.state, v.attempt, v.error_type) for v in status_history(settings, blocker.task_id)
        ]
        assert (TaskState.RETRY_SCHEDULED, 1, "RuntimeError") in outcome
        retry_topic = queue_topics(settings).retry[min(settings.retry_tiers)]
        assert [env.attempt for _, env in envelopes(settings, retry_topic)] == [2]
        assert blocker.wait(30.0) == "blocker"  # the retry (attempt 2) succeeds


def test_wait_raises_task_failed_with_the_reason_of_a_dead_lettered_task(
    producer: Producer, worker: Callable[..., ThreadWorker]
) -> None:
    registry = TaskRegistry()

    @registry.handler(Add, max_attempts=1)
    def add(task: Add) -> int:
        raise ValueError(f"cannot add {task.a} and {task.b}")

    worker(registry)
    handle = producer.submit(Add(a=4, b=5))

    with pytest.raises(TaskFailed) as failed:
        handle.wait(30.0)
    assert failed.value.task_id == handle.task_id
    assert failed.value.reason == "max_attempts"
    assert failed.value.error_type == "ValueError"
    assert failed.value.error == "cannot add 4 and 5"
