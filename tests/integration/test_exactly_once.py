"""Exactly-once mode: statuses, tier records and consumed offsets commit in one transaction.

A Worker runs in a thread with ``exactly_once=True``. Everything is read back from Kafka with an
explicit ``isolation.level=read_committed`` consumer, the isolation readers of this mode must use;
what a ``read_uncommitted`` reader may additionally see (aborted attempts) is deliberately not
asserted. A new task's ``queued`` record is on the submitted topic, written by the
(non-transactional) submitting producer: these counts are of the status topic only.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from streamjobs import Producer, Settings, Task, TaskRegistry, TaskState
from streamjobs.status import decode_status
from streamjobs.topics import queue_topics
from tests.integration.conftest import (
    NO_OFFSET,
    ThreadWorker,
    committed_offsets,
    dead_letters,
    envelopes,
    statuses,
)
from tests.support import wait_for

pytestmark = pytest.mark.integration

RUNNING, RETRY, SUCCEEDED, DEAD = (
    TaskState.RUNNING,
    TaskState.RETRY_SCHEDULED,
    TaskState.SUCCEEDED,
    TaskState.DEAD_LETTERED,
)


class Add(Task):
    a: int
    b: int


class FlakyOnce(Task):
    """Fails its first attempt, succeeds on the retry."""

    name: str


class Broken(Task):
    """Always fails: dead-lettered after ``max_attempts`` (3)."""

    name: str


def committed_status_counts(settings: Settings, timeout: float = 20.0) -> Counter[tuple[str, str]]:
    """How many status records of each (task id, state) a ``read_committed`` reader sees."""
    topic = queue_topics(settings).status
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"test-eos-reader-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    counts: Counter[tuple[str, str]] = Counter()
    try:
        partitions = consumer.list_topics(topic, timeout=10.0).topics[topic].partitions
        ends = {}  # for read_committed the high watermark is the last stable offset
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 10.0)
            if high > low:
                ends[partition] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])

        def read_to_end() -> bool:
            for message in consumer.consume(500, timeout=0.2):
                value = message.value()
                if message.error() is None and value is not None:
                    view = decode_status(value)
                    counts[(view.task_id, view.state.value)] += 1
            for position in consumer.position([TopicPartition(topic, p) for p in list(ends)]):
                if position.offset >= ends[position.partition]:
                    del ends[position.partition]
            return not ends

        wait_for(read_to_end, timeout, interval=0, message=f"reading {topic} to its end")
    finally:
        consumer.close()
    return counts


def history(counts: Counter[tuple[str, str]], task_id: str) -> dict[str, int]:
    """The status records of one task: how many of each state."""
    return {state: n for (tid, state), n in counts.items() if tid == task_id}


def _all_final(settings: Settings, task_ids: list[str]) -> bool:
    views = statuses(settings)
    return all((v := views.get(t)) is not None and v.state.final for t in task_ids)


def test_exactly_once_worker_writes_one_final_status_per_task_and_commits_every_offset(
    make_settings: Callable[..., Settings], worker: Callable[..., ThreadWorker]
) -> None:
    settings = make_settings(exactly_once=True, commit_interval="100ms")
    names = queue_topics(settings)
    registry = TaskRegistry()
    failed_once: set[str] = set()

    @registry.handler(Add)
    def add(task: Add) -> int:
        return task.a + task.b

    @registry.handler(FlakyOnce)
    def flaky(task: FlakyOnce) -> str:
        if task.name not in failed_once:
            failed_once.add(task.name)
            raise RuntimeError("first attempt fails")
        return "recovered"

    @registry.handler(Broken)
    def broken(task: Broken) -> None:
        raise RuntimeError(f"{task.name} always fails")

    worker(registry, settings)
    with Producer(settings) as producer:
        adds = producer.submit_many(
            [Add(a=n, b=1) for n in range(30)], keys=[f"k{n % 7}" for n in range(30)]
        )
        flaky_handle = producer.submit(FlakyOnce(name="flaky"), key="flaky")
        broken_handle = producer.submit(Broken(name="broken"), key="broken")
    handles = [*adds, flaky_handle, broken_handle]
    task_ids = [h.task_id for h in handles]

    wait_for(
        lambda: _all_final(settings, task_ids),
        60.0,
        interval=0.2,
        message="every task to reach a final state (read_committed)",
    )

    counts = committed_status_counts(settings)
    for handle in adds:
        assert history(counts, handle.task_id) == {RUNNING: 1, SUCCEEDED: 1}
    assert history(counts, flaky_handle.task_id) == {
        RUNNING: 2,
        RETRY: 1,
        SUCCEEDED: 1,
    }
    assert history(counts, broken_handle.task_id) == {
        RUNNING: 3,
        RETRY: 2,
        DEAD: 1,
    }
    views = statuses(settings)
    assert [views[h.task_id].result for h in adds] == [n + 1 for n in range(30)]
    assert (views[flaky_handle.task_id].attempt, views[flaky_handle.task_id].result) == (
        2,
        "recovered",
    )
    dead = [d for d in dead_letters(settings) if d["task_id"] == broken_handle.task_id]
    assert [(d["reason"], d["attempts"]) for d in dead] == [("max_attempts", 3)]
    # the tier records, like the statuses, are committed once each
    on_tiers = Counter(
        (topic, envelope.task_id)
        for topic in names.retry.values()
        for _, envelope in envelopes(settings, topic)
    )
    first_tier, second_tier = names.retry.values()
    assert on_tiers == {
        (first_tier, flaky_handle.task_id): 1,
        (first_tier, broken_handle.task_id): 1,
        (second_tier, broken_handle.task_id): 1,
    }

    # statuses and offsets share transactions: once every final status is visible, every
    # consumed offset is committed too (no waiting)
    main_ends: dict[int, int] = {}
    for handle in handles:
        main_ends[handle.partition] = max(main_ends.get(handle.partition, 0), handle.offset + 1)
    committed = committed_offsets(settings, names.main)
    assert {p: committed[p] for p in main_ends} == main_ends
    for topic in names.retry.values():
        tier_ends: dict[int, int] = {}
        for record, _ in envelopes(settings, topic):
            tier_ends[record.partition] = max(tier_ends.get(record.partition, 0), record.offset + 1)
        committed = committed_offsets(settings, topic)
        assert all(committed[p] >= end for p, end in tier_ends.items()), (topic, committed)


def test_exactly_once_worker_stopped_gracefully_commits_its_last_transaction(
    make_settings: Callable[..., Settings], worker: Callable[..., ThreadWorker]
) -> None:
    # no periodic commit during the test: only the stop can commit what the worker did
    settings = make_settings(exactly_once=True, commit_interval="1d")
    main = queue_topics(settings).main
    registry = TaskRegistry()
    calls: list[int] = []
    lock = threading.Lock()

    @registry.handler(Add)
    def add(task: Add) -> int:
        with lock:
            calls.append(task.a)
        return task.a + task.b

    running = worker(registry, settings)
    with Producer(settings) as producer:
        handles = producer.submit_many(
            [Add(a=n, b=2) for n in range(40)], keys=[f"k{n % 5}" for n in range(40)]
        )
    wait_for(lambda: len(calls) == len(handles), 30.0, message="every handler call")
    assert set(committed_offsets(settings, main).values()) == {NO_OFFSET}
    assert not any(s == SUCCEEDED for _, s in committed_status_counts(settings))

    running.stop()

    counts = committed_status_counts(settings)
    for handle in handles:
        assert history(counts, handle.task_id) == {RUNNING: 1, SUCCEEDED: 1}
    ends: dict[int, int] = {}
    for handle in handles:
        ends[handle.partition] = max(ends.get(handle.partition, 0), handle.offset + 1)
    committed = committed_offsets(settings, main)
    assert {p: committed[p] for p in ends} == ends
