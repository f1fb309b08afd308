"""Ordering across retries, per queue: ``non_blocking`` (default) or ``key_ordered``.

A task of key ``k`` fails once and goes to a retry tier. Under ``non_blocking`` the next task of
``k`` runs at once; under ``key_ordered`` it waits until the retry has run, while other keys
keep flowing in both modes. Under ``key_ordered`` the tasks parked behind a retry are bounded:
at ``max_parked`` the worker stops taking main-topic records until the retry releases them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka import Producer as KafkaProducer

from streamjobs import Producer, Settings, Task, TaskRegistry
from streamjobs.topics import queue_topics
from streamjobs.worker.keyorder import KeyGate, Release, Slot
from tests.integration.conftest import (
    Membership,
    ThreadWorker,
    all_succeeded,
    key_for_partition,
)
from tests.support import wait_for

pytestmark = pytest.mark.integration


class Step(Task):
    key: str
    seq: int


def _registry(runs: list[tuple[str, int, float]], failed: set[tuple[str, int]]) -> TaskRegistry:
    registry = TaskRegistry()

    @registry.handler(Step)
    def step(task: Step) -> None:
        runs.append((task.key, task.seq, time.monotonic()))
        if (task.key, task.seq) == ("k", 0) and ("k", 0) not in failed:
            failed.add(("k", 0))
            raise ConnectionError("transient")  # the first attempt fails; the retry succeeds

    return registry


def _run(settings: Settings, worker: Callable[..., ThreadWorker]) -> list[tuple[str, int, float]]:
    runs: list[tuple[str, int, float]] = []
    worker(_registry(runs, set()), settings)
    with Producer(settings) as producer:
        tasks = [Step(key="k", seq=0), Step(key="k", seq=1), Step(key="k", seq=2)]
        tasks.append(Step(key="other", seq=0))
        handles = producer.submit_many(tasks, keys=[t.key for t in tasks])
        for handle in handles:
            handle.wait(30.0)
    wait_for(lambda: len(runs) == 5, 10.0, message="4 tasks, one of them twice")
    return runs


def test_key_ordered_later_tasks_of_a_key_wait_for_its_retry_while_other_keys_flow(
    make_settings: Callable[..., Settings], worker: Callable[..., ThreadWorker]
) -> None:
    runs = _run(make_settings(ordering="key_ordered", retry_tiers="1s"), worker)

    of_k = [seq for key, seq, _ in runs if key == "k"]
    assert of_k == [0, 0, 1, 2], f"key k ran out of order: {of_k}"
    retry_at = [at for key, seq, at in runs if (key, seq) == ("k", 0)][1]
    other_at = next(at for key, _, at in runs if key == "other")
    assert other_at < retry_at, "another key waited behind k's retry"


def test_non_blocking_later_tasks_of_a_key_run_before_its_retry(
    make_settings: Callable[..., Settings], worker: Callable[..., ThreadWorker]
) -> None:
    runs = _run(make_settings(ordering="non_blocking", retry_tiers="1s"), worker)

    of_k = [seq for key, seq, _ in runs if key == "k"]
    assert of_k == [0, 1, 2, 0], f"non_blocking should not hold key k: {of_k}"


def test_key_ordered_parked_tasks_pause_main_intake_at_the_limit_then_all_run_in_order(
    make_settings: Callable[..., Settings],
    worker: Callable[..., ThreadWorker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bound: parked tasks never exceed ``max_parked - 1 + max_in_flight``. The worker stops
    taking main-topic records once ``max_parked`` are parked; what can still park is what it
    had already taken, and one consume takes at most ``max_in_flight`` minus the tasks queued.
    """
    settings = make_settings(
        ordering="key_ordered", retry_tiers="3s", max_parked=5, max_in_flight=5, concurrency=1
    )
    later = 40  # far beyond the bound: without one, all of them would park
    # the parked count right after each park, exact (the running count is only sampled)
    peaks: list[int] = []
    park = KeyGate.park_if_blocked

    def recording_park(gate: KeyGate, slot: Slot, release: Release) -> bool:
        parked = park(gate, slot, release)
        if parked:
            peaks.append(gate.parked())
        return parked

    monkeypatch.setattr(KeyGate, "park_if_blocked", recording_park)
    runs: list[tuple[str, int, float]] = []
    running = worker(_registry(runs, set()), settings)
    tasks = [Step(key="k", seq=n) for n in range(later + 1)]
    with Producer(settings) as producer:
        handles = producer.submit_many(tasks, keys=[t.key for t in tasks])

    wait_for(
        lambda: running.worker.paused_for_parking,
        10.0,
        interval=0.01,
        message="main intake to pause while k's first task waits in its 3 s retry tier",
    )
    assert running.worker.parked >= settings.max_parked
    wait_for(
        lambda: all_succeeded(settings, [h.task_id for h in handles]),
        30.0,
        interval=0.2,
        message="every task of k to succeed after the retry",
    )

    bound = settings.max_parked - 1 + settings.max_in_flight
    assert settings.max_parked <= max(peaks) <= bound, f"parked peaked at {max(peaks)}"
    of_k = [seq for key, seq, _ in runs if key == "k"]
    assert of_k == [0, *range(later + 1)], f"key k ran out of order: {of_k}"
    assert running.worker.parked == 0
    assert not running.worker.paused_for_parking, "main intake still paused with nothing parked"


@pytest.mark.slow
def test_key_ordered_worker_joining_while_intake_is_paused_for_parking_keeps_every_key_in_order(
    make_settings: Callable[..., Settings],
    worker: Callable[..., ThreadWorker],
    membership: Membership,
) -> None:
    """Both partitions hold parked tasks and the first worker's main intake is paused when a
    second worker joins and takes one of them over. The first forgets that partition's parked
    tasks; the second re-reads them behind the retry it inherits. A pause or a parked count left
    behind by the rebalance would stall a partition, here or when it comes back to the first
    worker after the second leaves, and its tasks would never finish."""
    # the retries must not be released before the rebalance is over: a 20 s tier leaves a
    # margin of well over 10 s on a loaded machine (the join and handover take 1-3 s here)
    settings = make_settings(
        ordering="key_ordered", retry_tiers="20s", max_parked=4, max_in_flight=4, partitions=2
    )
    keys = [key_for_partition(p, settings.partitions, "ordered") for p in range(2)]
    later = {keys[0]: 3, keys[1]: 12}  # 3 park on one partition, the rest pause intake
    runs: list[tuple[str, int]] = []
    registry = TaskRegistry()
    failed: set[str] = set()

    @registry.handler(Step)
    def step(task: Step) -> None:
        runs.append((task.key, task.seq))
        if task.seq == 0 and task.key not in failed:
            failed.add(task.key)
            raise ConnectionError("transient")  # each key's first attempt fails once

    first = worker(registry, settings)
    handles = []
    with Producer(settings) as producer:
        handles += producer.submit_many([Step(key=k, seq=0) for k in keys], keys=keys)
        wait_for(lambda: failed == set(keys), 10.0, message="both first attempts to fail")
        # one key after the other, so that both partitions hold parked tasks
        tasks = [Step(key=keys[0], seq=n) for n in range(1, later[keys[0]] + 1)]
        handles += producer.submit_many(tasks, keys=[keys[0]] * len(tasks))
        wait_for(lambda: first.worker.parked == 3, 10.0, message="3 tasks to park, below 4")
        assert not first.worker.paused_for_parking
        tasks = [Step(key=keys[1], seq=n) for n in range(1, later[keys[1]] + 1)]
        handles += producer.submit_many(tasks, keys=[keys[1]] * len(tasks))
        wait_for(
            lambda: first.worker.paused_for_parking and first.worker.in_flight == 0,
            10.0,
            message="the first worker to pause its main intake and park what it had taken",
        )

    second = worker(registry, settings)
    main = queue_topics(settings).main
    wait_for(
        lambda: membership.of(first.worker, "revoke"),
        20.0,
        message="the first worker to give a partition up",
    )
    given_up = {p for parts in membership.of(first.worker, "revoke") for t, p in parts if t == main}
    assert len(given_up) == 1, given_up
    # the first worker's parked count is no witness here: forgetting the given-up partition's
    # tasks takes it to half the limit, which resumes its main intake and parks new ones at once
    wait_for(
        lambda: second.worker.parked > 0,
        20.0,
        message="the second worker to re-read the given-up tasks and park them behind its retry",
    )
    assert [seq for _, seq in runs] == [0, 0], "a retry ran before the rebalance"
    wait_for(
        lambda: all_succeeded(settings, [h.task_id for h in handles]),
        40.0,
        interval=0.2,
        message="every task to succeed after the rebalance",
    )

    for key in keys:
        of_key = [seq for k, seq in runs if k == key]
        assert of_key == [0, *range(later[key] + 1)], f"{key} ran out of order: {of_key}"
    for member in (first.worker, second.worker):
        assert (member.parked, member.paused_for_parking) == (0, False)

    # the partition given up was paused for parking when it left; back with the first worker,
    # it must be consumed (librdkafka keeps a pause across a re-assignment unless resumed)
    second.stop()
    wait_for(
        lambda: membership.of(first.worker, "assign")[-1] >= {(main, p) for p in given_up},
        20.0,
        message="the first worker to get its partition back",
    )
    with Producer(settings) as producer:
        again = producer.submit_many([Step(key=k, seq=99) for k in keys], keys=keys)
    wait_for(
        lambda: all_succeeded(settings, [h.task_id for h in again]),
        20.0,
        interval=0.2,
        message="new tasks on both partitions to succeed on the first worker",
    )


def test_key_ordered_key_flows_again_after_the_transaction_with_its_retry_is_aborted(
    make_settings: Callable[..., Settings],
    worker: Callable[..., ThreadWorker],
) -> None:
    """exactly_once: the transaction carrying k's retry is aborted (the handler fences the
    worker's transactional producer), so the retry record is never written and the worker
    re-reads from the committed offsets. k's retry must be counted once, not once per read:
    a stale count would park k's later tasks for good after the real retry succeeds."""
    settings = make_settings(ordering="key_ordered", exactly_once=True, retry_tiers="1s")
    transactional_id: list[str] = []
    fencers: list[KafkaProducer] = []
    runs: list[int] = []
    registry = TaskRegistry()

    @registry.handler(Step)
    def step(task: Step) -> None:
        runs.append(task.seq)
        if task.seq == 0 and runs.count(0) == 1:
            # a second producer with the worker's transactional id: its open transaction aborts
            fencer = KafkaProducer(
                {
                    "bootstrap.servers": settings.bootstrap_servers,
                    "transactional.id": transactional_id[0],
                }
            )
            fencer.init_transactions(30.0)
            fencers.append(fencer)
        if task.seq == 0 and runs.count(0) <= 2:
            raise ConnectionError("transient")  # fails when fenced, and once more when re-read

    running = worker(registry, settings)
    transactional_id.append(f"{settings.group}.{running.worker.worker_id}")
    tasks = [Step(key="k", seq=n) for n in range(3)]
    with Producer(settings) as producer:
        handles = producer.submit_many(tasks, keys=["k"] * len(tasks))
    wait_for(
        lambda: all_succeeded(settings, [h.task_id for h in handles]),
        30.0,
        interval=0.2,
        message="k's retry and then its later tasks to succeed after the aborted transaction",
    )
    assert fencers, "the first attempt never ran"
    assert runs.count(0) == 3, runs  # fenced, re-read after the abort, then the real retry
    assert [seq for seq in runs if seq] == [1, 2], runs
    assert runs.index(1) > len(runs) - 3, f"a later task of k ran before its retry: {runs}"
    assert (running.worker.parked, running.worker.paused_for_parking) == (0, False)
    fencers.clear()  # no client outlives the test


def test_key_ordered_needs_the_consumer_group_protocol() -> None:
    with pytest.raises(ValueError, match="key_ordered needs group_protocol=consumer"):
        Settings(ordering="key_ordered", group_protocol="classic")
