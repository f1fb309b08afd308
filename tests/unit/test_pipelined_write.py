"""The pipelined mode of the confirmed write (the asyncio API), against the fake producer: a new
task's submitted record and task record are produced at once, without waiting for either; the
outcome comes once both are reported; a failed task record takes its submitted record back; a
full local queue is retried by the resident poll thread; and threads waiting in the sync mode
meanwhile are served by that thread too."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from streamjobs.confirmed import ConfirmedWriter, PreparedTask
from streamjobs.errors import SubmitError
from streamjobs.middleware import MiddlewareChain
from streamjobs.settings import Settings
from streamjobs.taskhandle import TaskHandle
from streamjobs.topics import queue_topics
from tests.support import wait_for
from tests.unit.fake_kafka import FakeKafka, FakeProducer

SETTINGS = Settings(topic_prefix="p")
NAMES = queue_topics(SETTINGS)
SUBMITTED, MAIN = NAMES.submitted, NAMES.main


def _item(task_id: str) -> PreparedTask:
    return PreparedTask(
        task="Charge",
        task_id=task_id,
        key=None,
        topic=MAIN,
        value=b"task:" + task_id.encode(),
        status_value=b"queued:" + task_id.encode(),
        submitted_at_ms=1,
        status_headers=[("digest", b"d")],
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
def writer(producer: FakeProducer) -> Iterator[ConfirmedWriter]:
    running = ConfirmedWriter(SETTINGS, lambda: producer, NAMES, MiddlewareChain([]), 5.0)  # type: ignore[arg-type, return-value]
    running.start_pipelining()
    yield running
    running.stop_pipelining(5.0)


def test_both_records_are_produced_at_once_and_the_handle_comes_once_both_are_reported(
    kafka: FakeKafka, writer: ConfirmedWriter
) -> None:
    outcomes = Outcomes()
    kafka.hold(SUBMITTED)

    writer.write_pipelined(_item("a"), outcomes.done_for("a"))

    assert [s.topic for s in kafka.kinds("produce")] == [MAIN, SUBMITTED]  # the task first
    assert "a" not in outcomes.by_id  # the submitted record is not reported yet
    kafka.release()
    wait_for(lambda: "a" in outcomes.by_id, 5, message="task a confirmed")
    handle = outcomes.by_id["a"]
    assert isinstance(handle, TaskHandle)
    assert (handle.task_id, handle.topic) == ("a", MAIN)
    assert kafka.kinds("produce")[1].headers == [("digest", b"d")]  # the queued record's


def test_a_failed_task_record_is_a_submit_error_and_takes_its_submitted_record_back(
    kafka: FakeKafka, writer: ConfirmedWriter
) -> None:
    outcomes = Outcomes()
    kafka.failing_topics.add(MAIN)

    writer.write_pipelined(_item("c"), outcomes.done_for("c"))

    wait_for(lambda: "c" in outcomes.by_id, 5, message="task c reported")
    assert isinstance(outcomes.by_id["c"], SubmitError)
    produced = [(s.topic, s.key, s.value) for s in kafka.kinds("produce")]
    assert produced == [
        (MAIN, b"c", b"task:c"),
        (SUBMITTED, b"c", b"queued:c"),
        (SUBMITTED, b"c", None),
    ]


def test_a_full_local_queue_is_retried_until_the_task_is_confirmed(
    producer: FakeProducer, writer: ConfirmedWriter
) -> None:
    outcomes = Outcomes()
    producer.full_for = 3

    writer.write_pipelined(_item("d"), outcomes.done_for("d"))

    wait_for(lambda: "d" in outcomes.by_id, 5, message="task d confirmed")
    assert isinstance(outcomes.by_id["d"], TaskHandle)


def test_many_writes_in_flight_are_each_reported_once_beside_a_sync_submitter(
    kafka: FakeKafka, writer: ConfirmedWriter
) -> None:
    outcomes = Outcomes()
    ids = [f"t{i}" for i in range(50)]
    sync = [_item("s1"), _item("s2")]
    submitter = threading.Thread(target=writer.write_each, args=(sync,))

    submitter.start()
    for task_id in ids:
        writer.write_pipelined(_item(task_id), outcomes.done_for(task_id))
    submitter.join(5.0)

    wait_for(lambda: len(outcomes.by_id) == 50, 5, message="all 50 reported")
    assert all(isinstance(o, TaskHandle) for o in outcomes.by_id.values())
    assert writer.in_flight == 0
    assert not submitter.is_alive()
    assert all(item.handle is not None for item in sync)
