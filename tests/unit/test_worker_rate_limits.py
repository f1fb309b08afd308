"""The worker's side of rate limits, against a fake Kafka client: a task over the limit is
taken but not started (its offset uncommitted) while other tasks flow; past the hold bound its
partition is paused; a revoke drops held tasks unstarted."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest

from streamjobs import Settings, Task, TaskRegistry
from streamjobs.client import TopicPartition
from streamjobs.topics import queue_topics
from streamjobs.worker.loop import Worker
from tests.support import wait_for
from tests.unit.fake_kafka import FakeKafka, task_record


class Limited(Task):
    n: int


class Free(Task):
    n: int


SETTINGS = Settings(
    topic_prefix="sj",
    partitions=1,
    commit_interval=timedelta(milliseconds=5),
    shutdown_grace=timedelta(seconds=2),
    retry_tiers="1s",
    delay_tiers="1s",
    max_in_flight=4,  # at most 2 tasks held
    concurrency=2,
)
TOPICS = queue_topics(SETTINGS)
MAIN = TOPICS.main


@pytest.fixture
def kafka() -> FakeKafka:
    return FakeKafka()


@pytest.fixture
def run(kafka: FakeKafka) -> Iterator[Callable[[TaskRegistry], Worker]]:
    threads: list[tuple[Worker, threading.Thread]] = []

    def run(registry: TaskRegistry) -> Worker:
        worker = Worker(SETTINGS, registry, worker_id="w-1", clients=kafka)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        threads.append((worker, thread))
        consumer = wait_for(lambda: kafka.consumer, 5.0, message="the worker's consumer")
        consumer.rebalance("assign", *((t, 0) for t in TOPICS.task_topics))
        wait_for(worker.assigned.is_set, 5.0, message="the assignment")
        return worker

    yield run
    kafka.release()
    for worker, thread in threads:
        worker.stop()
        thread.join(10.0)


def _registry(ran: list[str], limit: str) -> TaskRegistry:
    registry = TaskRegistry()

    @registry.handler(Limited, rate_limit=limit)
    def limited(task: Limited) -> None:
        ran.append(f"limited-{task.n}")

    @registry.handler(Free)
    def free(task: Free) -> None:
        ran.append(f"free-{task.n}")

    return registry


def test_a_task_over_the_limit_waits_uncommitted_while_other_tasks_run_past_it(
    kafka: FakeKafka, run: Callable[[TaskRegistry], Worker]
) -> None:
    ran: list[str] = []
    worker = run(_registry(ran, "1/h"))  # a fresh bucket is empty: nothing limited starts
    assert kafka.consumer is not None
    kafka.consumer.deliver(
        task_record(Limited(n=0), topic=MAIN, offset=0),
        task_record(Free(n=1), topic=MAIN, offset=1),
        task_record(Free(n=2), topic=MAIN, offset=2),
    )
    wait_for(lambda: sorted(ran) == ["free-1", "free-2"], 5.0, message="the free tasks")
    assert worker.held_for_rate == 1
    assert all(c.offset == 0 for c in kafka.commits() if c.partition == 0 and c.topic == MAIN), (
        "the held task's offset must stay uncommitted"
    )
    assert (MAIN, 0) not in kafka.consumer.paused, "one held task does not pause the partition"


def test_a_task_of_the_same_key_waits_behind_a_held_one(
    kafka: FakeKafka, run: Callable[[TaskRegistry], Worker]
) -> None:
    ran: list[str] = []
    worker = run(_registry(ran, "1/h"))
    assert kafka.consumer is not None
    kafka.consumer.deliver(
        task_record(Limited(n=0), topic=MAIN, offset=0, key="k"),
        task_record(Free(n=1), topic=MAIN, offset=1, key="k"),
        task_record(Free(n=2), topic=MAIN, offset=2, key="other"),
    )
    wait_for(lambda: ran == ["free-2"], 5.0, message="the other key's task")
    wait_for(lambda: worker.held_for_rate == 2, 5.0, message="both tasks of key k held")


def test_past_the_hold_bound_the_partition_pauses_at_the_first_task_not_taken(
    kafka: FakeKafka, run: Callable[[TaskRegistry], Worker]
) -> None:
    ran: list[str] = []
    worker = run(_registry(ran, "1/h"))
    assert kafka.consumer is not None
    kafka.consumer.deliver(
        *(task_record(Limited(n=n), topic=MAIN, offset=n) for n in range(3)),
        task_record(Free(n=3), topic=MAIN, offset=3),
    )
    wait_for(lambda: (MAIN, 0) in kafka.consumer.paused, 5.0, message="the pause")  # type: ignore[union-attr]
    assert worker.held_for_rate == 2
    assert ran == [], "the free task is behind the unread one in its partition"
    assert worker._parts[(MAIN, 0)].next_offset == 2, "the resume re-reads the third task"


def test_held_tasks_start_as_tokens_come_and_are_committed_after(
    kafka: FakeKafka, run: Callable[[TaskRegistry], Worker]
) -> None:
    ran: list[str] = []
    # owning every task topic's only partition: the whole limit, 20/s
    run(_registry(ran, "20/s"))
    assert kafka.consumer is not None
    kafka.consumer.deliver(*(task_record(Limited(n=n), topic=MAIN, offset=n) for n in range(2)))
    wait_for(lambda: len(ran) == 2, 5.0, message="both limited tasks")
    wait_for(lambda: TopicPartition(MAIN, 0, 2) in kafka.commits(), 5.0, message="the commit")


def test_a_revoked_partitions_held_tasks_never_start(
    kafka: FakeKafka, run: Callable[[TaskRegistry], Worker]
) -> None:
    ran: list[str] = []
    worker = run(_registry(ran, "1/h"))
    assert kafka.consumer is not None
    kafka.consumer.deliver(task_record(Limited(n=0), topic=MAIN, offset=0))
    wait_for(lambda: worker.held_for_rate == 1, 5.0, message="the held task")
    kafka.consumer.rebalance("revoke", (MAIN, 0))
    wait_for(lambda: worker.held_for_rate == 0, 5.0, message="the held task dropped")
    assert worker.in_flight == 0
    assert ran == []
    assert TopicPartition(MAIN, 0, 1) not in kafka.commits()
