"""The pipelined confirmed write, against the fake producer: the task record is produced only
after its ``queued`` status is acknowledged, a failed status produces no task, a failed task
takes its status back, and a full local queue is retried by the poll thread."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from streamjobs.errors import SubmitError
from streamjobs.pipeline import PipelineItem, SubmitPipeline
from streamjobs.settings import Settings
from streamjobs.taskhandle import TaskHandle
from tests.support import wait_for
from tests.unit.fake_kafka import FakeKafka, FakeProducer

STATUS, MAIN = "p.status", "p.default"


def _item(task_id: str) -> PipelineItem:
    return PipelineItem(
        task_id=task_id,
        topic=MAIN,
        record_key=task_id.encode(),
        value=b"task:" + task_id.encode(),
        status_value=b"queued:" + task_id.encode(),
        submitted_at_ms=1,
        status_headers=(("digest", b"d"),),
        wrap=None,
    )


class Outcomes:
    def __init__(self) -> None:
        self.by_id: dict[str, TaskHandle | SubmitError] = {}
        self.lock = threading.Lock()

    def done_for(self, task_id: str) -> Callable[[TaskHandle | SubmitError], None]:
        def done(outcome: TaskHandle | SubmitError) -> None:
            with self.lock:
                self.by_id[task_id] = outcome

        return done


@pytest.fixture
def kafka() -> FakeKafka:
    return FakeKafka()


@pytest.fixture
def producer(kafka: FakeKafka) -> FakeProducer:
    return FakeProducer(kafka)


@pytest.fixture
def pipeline(producer: FakeProducer) -> Iterator[SubmitPipeline]:
    running = SubmitPipeline(Settings(topic_prefix="p"), producer, STATUS)
    yield running
    running.close(5.0)


def test_task_record_is_produced_only_after_its_queued_status_is_acknowledged(
    kafka: FakeKafka, pipeline: SubmitPipeline
) -> None:
    outcomes = Outcomes()
    kafka.hold(STATUS)

    pipeline.write(_item("a"), outcomes.done_for("a"))

    assert [s.topic for s in kafka.kinds("produce")] == [STATUS]
    kafka.release()
    wait_for(lambda: "a" in outcomes.by_id, 5, message="task a confirmed")
    assert [s.topic for s in kafka.kinds("produce")] == [STATUS, MAIN]
    handle = outcomes.by_id["a"]
    assert isinstance(handle, TaskHandle)
    assert (handle.task_id, handle.topic) == ("a", MAIN)


def test_a_failed_queued_status_is_a_submit_error_and_no_task_is_produced(
    kafka: FakeKafka, pipeline: SubmitPipeline
) -> None:
    outcomes = Outcomes()
    kafka.failing_topics.add(STATUS)

    pipeline.write(_item("b"), outcomes.done_for("b"))

    wait_for(lambda: "b" in outcomes.by_id, 5, message="task b reported")
    assert isinstance(outcomes.by_id["b"], SubmitError)
    assert [s.topic for s in kafka.kinds("produce")] == [STATUS]


def test_a_failed_task_record_takes_its_queued_status_back_with_a_tombstone(
    kafka: FakeKafka, pipeline: SubmitPipeline
) -> None:
    outcomes = Outcomes()
    kafka.failing_topics.add(MAIN)

    pipeline.write(_item("c"), outcomes.done_for("c"))

    wait_for(lambda: "c" in outcomes.by_id, 5, message="task c reported")
    assert isinstance(outcomes.by_id["c"], SubmitError)
    produced = [(s.topic, s.key, s.value) for s in kafka.kinds("produce")]
    assert produced == [(STATUS, b"c", b"queued:c"), (MAIN, b"c", b"task:c"), (STATUS, b"c", None)]
    assert kafka.kinds("produce")[0].headers == [("digest", b"d")]  # the status carries them


def test_a_full_local_queue_is_retried_until_the_task_is_confirmed(
    kafka: FakeKafka, producer: FakeProducer, pipeline: SubmitPipeline
) -> None:
    outcomes = Outcomes()
    producer.full_for = 3

    pipeline.write(_item("d"), outcomes.done_for("d"))

    wait_for(lambda: "d" in outcomes.by_id, 5, message="task d confirmed")
    assert isinstance(outcomes.by_id["d"], TaskHandle)


def test_many_writes_in_flight_are_each_reported_once(
    kafka: FakeKafka, pipeline: SubmitPipeline
) -> None:
    outcomes = Outcomes()
    ids = [f"t{i}" for i in range(50)]

    for task_id in ids:
        pipeline.write(_item(task_id), outcomes.done_for(task_id))

    wait_for(lambda: len(outcomes.by_id) == 50, 5, message="all 50 reported")
    assert all(isinstance(o, TaskHandle) for o in outcomes.by_id.values())
    assert pipeline.in_flight == 0
