"""streamjobs.worker.loop: the poll / dispatch / commit cycle, against a fake Kafka client.

No broker: :mod:`tests.unit.fake_kafka` stands in for the client package, holds delivery
acknowledgements until the test releases them, and logs every produce, ack and commit in order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest

from streamjobs import Settings, Task, TaskRegistry
from streamjobs.client import TopicPartition
from streamjobs.errors import KafkaUnavailable
from streamjobs.status import decode_status
from streamjobs.topics import queue_topics
from streamjobs.worker.loop import Worker
from tests.support import wait_for
from tests.unit.fake_kafka import FakeKafka, Sent, task_record


class Add(Task):
    a: int
    b: int


SETTINGS = Settings(
    topic_prefix="sj",
    commit_interval=timedelta(milliseconds=5),
    shutdown_grace=timedelta(seconds=2),
    retry_tiers="1s,5s",
    max_attempts=2,
)
TOPICS = queue_topics(SETTINGS)
MAIN = TOPICS.main


class Running:
    """A worker running in a thread of the test; ``stop()`` joins it and returns its error."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:  # handed to the test by stop()
            self.error = exc

    def stop(self) -> BaseException | None:
        self.worker.stop()
        self._thread.join(10.0)
        assert not self._thread.is_alive(), "the worker did not stop"
        return self.error


@pytest.fixture
def kafka() -> FakeKafka:
    return FakeKafka()


@pytest.fixture
def start(kafka: FakeKafka) -> Iterator[Callable[[TaskRegistry], Running]]:
    running: list[Running] = []

    def start(registry: TaskRegistry) -> Running:
        worker = Running(Worker(SETTINGS, registry, worker_id="w-1", clients=kafka))
        running.append(worker)
        consumer = wait_for(lambda: kafka.consumer, 5.0, message="the worker's consumer")
        consumer.rebalance("assign", (MAIN, 0))
        wait_for(worker.worker.assigned.is_set, 5.0, message="the assignment")
        return worker

    yield start
    kafka.release()
    for worker in running:
        worker.stop()


def _states(sent: list[Sent]) -> list[str]:
    return [decode_status(s.value).state.value for s in sent if s.value is not None]


def _polls_pass(kafka: FakeKafka, count: int) -> None:
    assert kafka.consumer is not None
    target = kafka.consumer.polls + count
    wait_for(lambda: kafka.consumer is not None and kafka.consumer.polls >= target, 5.0)


def test_offset_is_committed_only_after_the_tasks_outcome_is_acknowledged(
    kafka: FakeKafka, start: Callable[[TaskRegistry], Running]
) -> None:
    registry = TaskRegistry()
    ran = threading.Event()

    @registry.handler(Add)
    def add(task: Add) -> int:
        ran.set()
        return task.a + task.b

    start(registry)
    kafka.hold(TOPICS.status)
    assert kafka.consumer is not None
    kafka.consumer.deliver(task_record(Add(a=1, b=2), topic=MAIN, offset=0))
    assert ran.wait(5.0), "the handler never ran"
    wait_for(
        lambda: "succeeded" in _states(kafka.produced(TOPICS.status)), 5.0, message="the outcome"
    )
    _polls_pass(kafka, 20)  # many commit intervals pass while Kafka has not acknowledged it
    assert TopicPartition(MAIN, 0, 1) not in kafka.commits(), (
        "committed before the outcome was durable"
    )

    kafka.release()
    wait_for(lambda: TopicPartition(MAIN, 0, 1) in kafka.commits(), 5.0, message="the commit")
    order = [(kind, getattr(what, "topic", what)) for kind, what in kafka.events]
    acked = max(
        i for i, (kind, topic) in enumerate(order) if (kind, topic) == ("ack", TOPICS.status)
    )
    committed = next(i for i, (kind, what) in enumerate(kafka.events) if kind == "commit")
    assert committed > acked, "the commit must follow the status acknowledgement"
    assert _states(kafka.produced(TOPICS.status)) == ["running", "succeeded"]


def test_failing_handler_commits_once_its_retry_record_and_status_are_acknowledged(
    kafka: FakeKafka, start: Callable[[TaskRegistry], Running]
) -> None:
    registry = TaskRegistry()

    @registry.handler(Add)
    def add(task: Add) -> int:
        raise RuntimeError("flaky")

    start(registry)
    first_tier = TOPICS.retry[SETTINGS.retry_tiers[0]]
    kafka.hold(first_tier)
    assert kafka.consumer is not None
    kafka.consumer.deliver(task_record(Add(a=1, b=2), topic=MAIN, offset=0))
    wait_for(lambda: kafka.produced(first_tier), 5.0, message="the retry record")
    _polls_pass(kafka, 20)
    assert not kafka.commits(), "committed before the retry record was durable"

    kafka.release()
    wait_for(lambda: TopicPartition(MAIN, 0, 1) in kafka.commits(), 5.0, message="the commit")
    assert "retry_scheduled" in _states(kafka.produced(TOPICS.status))
    [retry] = kafka.produced(first_tier)
    assert retry.key == b"task-0", "a retry keeps the task's key, hence its partition number"


def test_undecodable_record_is_dead_lettered_and_committed_without_running_anything(
    kafka: FakeKafka, start: Callable[[TaskRegistry], Running]
) -> None:
    registry = TaskRegistry()

    @registry.handler(Add)
    def add(task: Add) -> int:
        raise AssertionError("must not run")

    start(registry)
    assert kafka.consumer is not None
    garbage = task_record(Add(a=1, b=2), topic=MAIN, offset=0)
    kafka.consumer.deliver(
        type(garbage)(MAIN, 0, 0, garbage.timestamp_ms, b"k", b"\x00garbage", [])
    )
    wait_for(lambda: TopicPartition(MAIN, 0, 1) in kafka.commits(), 5.0, message="the commit")
    [dead] = kafka.produced(TOPICS.dlq)
    assert dead.value is not None
    assert b"\x00garbage" in dead.value, "the dead letter keeps the original bytes"


def test_failed_outcome_delivery_stops_the_worker_and_never_commits_the_offset(
    kafka: FakeKafka, start: Callable[[TaskRegistry], Running]
) -> None:
    registry = TaskRegistry()

    @registry.handler(Add)
    def add(task: Add) -> int:
        return task.a + task.b

    running = start(registry)
    kafka.failing_topics.add(TOPICS.status)
    assert kafka.consumer is not None
    kafka.consumer.deliver(task_record(Add(a=1, b=2), topic=MAIN, offset=0))
    wait_for(lambda: kafka.kinds("nack"), 5.0, message="the failed delivery")
    wait_for(lambda: running.error is not None, 5.0, message="the worker to stop")
    assert isinstance(running.error, KafkaUnavailable)
    assert "outcome write failed" in str(running.error)
    assert TopicPartition(MAIN, 0, 1) not in kafka.commits()
    assert kafka.consumer.closed, "the worker leaves the group when it stops"


def test_revoked_partition_commits_its_finished_task_and_leaves_the_next_one_unstarted(
    kafka: FakeKafka, start: Callable[[TaskRegistry], Running]
) -> None:
    registry = TaskRegistry()
    started: list[int] = []
    release = threading.Event()

    @registry.handler(Add)
    def add(task: Add) -> int:
        started.append(task.a)
        release.wait(5.0)
        return task.a

    running = start(registry)
    assert kafka.consumer is not None
    # concurrency=1: the second task waits in the executor behind the first
    kafka.consumer.deliver(
        task_record(Add(a=0, b=0), topic=MAIN, offset=0),
        task_record(Add(a=1, b=0), topic=MAIN, offset=1),
    )
    wait_for(lambda: started == [0], 5.0, message="the first task to start")
    part = running.worker._parts[(MAIN, 0)]
    wait_for(lambda: len(part.tracker) == 2, 5.0, message="the second record to be taken")
    kafka.consumer.rebalance("revoke", (MAIN, 0))
    wait_for(lambda: part.revoked, 5.0, message="the revoke to begin")
    release.set()  # the first task finishes within the revoke's grace
    wait_for(
        lambda: TopicPartition(MAIN, 0, 1) in kafka.commits(), 5.0, message="the revoke's commit"
    )
    _polls_pass(kafka, 5)
    assert started == [0], "a queued task of a revoked partition must never start"
    assert TopicPartition(MAIN, 0, 2) not in kafka.commits(), "the unstarted task was committed"


def test_a_cancelled_task_is_settled_cancelled_and_committed_without_running(
    kafka: FakeKafka, start: Callable[[TaskRegistry], Running]
) -> None:
    from streamjobs.cancels import CancelRequest

    registry = TaskRegistry()
    ran: list[int] = []

    @registry.handler(Add)
    def add(task: Add) -> int:
        ran.append(task.a)
        return task.a + task.b

    worker = start(registry).worker
    follower = worker._cancels
    assert follower is not None
    follower.book.add(CancelRequest("task-0", "Add", "default", 0, 1_700_000_000_000))
    assert kafka.consumer is not None
    kafka.consumer.deliver(
        task_record(Add(a=1, b=2), topic=MAIN, offset=0),
        task_record(Add(a=3, b=4), topic=MAIN, offset=1),
    )

    wait_for(lambda: TopicPartition(MAIN, 0, 2) in kafka.commits(), 5.0, message="the commit")
    assert ran == [3]
    states = {
        decode_status(s.value).task_id: decode_status(s.value).state.value
        for s in kafka.produced(TOPICS.status)
        if s.value is not None
    }
    assert states == {"task-0": "cancelled", "task-1": "succeeded"}
    assert worker.stats.cancelled == 1
