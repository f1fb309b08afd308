"""A worker with the Monitor's middleware, against the fake Kafka client: what a handler's own
log records carry, the attempts running now as metrics and heartbeats see them, and the counts
and traceback of outcomes, all without an attempt hook that allocates per task."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamjobs import Settings, Task, TaskRegistry
from streamjobs.client import TopicPartition
from streamjobs.metrics import logs
from streamjobs.metrics.monitor import Monitor
from streamjobs.metrics.prometheus import WorkerMetrics, exposition, new_registry
from streamjobs.metrics.running import RunningTask, oldest_by_task, snapshot
from streamjobs.metrics.tasklog import LOGGER
from streamjobs.middleware import Heard, Middleware, Outcomes
from streamjobs.taskcontext import CurrentTask
from streamjobs.topics import queue_topics
from streamjobs.worker.loop import Worker
from tests.support import wait_for
from tests.unit.fake_kafka import FakeKafka, task_record


class Note(Task):
    text: str


class AsyncNote(Task):
    text: str


SETTINGS = Settings(
    topic_prefix="sj",
    commit_interval=timedelta(milliseconds=5),
    shutdown_grace=timedelta(seconds=2),
    retry_tiers="1s",
    max_attempts=2,
    concurrency=2,
)
MAIN = queue_topics(SETTINGS).main
_log = logging.getLogger("tests.observed.handler")


@pytest.fixture
def records() -> Iterator[io.StringIO]:
    """JSON lines of every record at DEBUG and above, with the task context filter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.formatter("json"))
    handler.addFilter(logs.TaskContextFilter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def observed() -> Iterator[Callable[[TaskRegistry], tuple[Worker, Monitor, FakeKafka]]]:
    stops: list[Callable[[], None]] = []

    def start(registry: TaskRegistry) -> tuple[Worker, Monitor, FakeKafka]:
        kafka = FakeKafka()
        monitor = Monitor(SETTINGS, registry=new_registry(), heartbeats=False)
        worker = Worker(
            SETTINGS, registry, worker_id="w-1", clients=kafka, middleware=monitor.middleware
        )
        monitor.metrics.watch(worker)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        consumer = wait_for(lambda: kafka.consumer, 5.0, message="the worker's consumer")
        consumer.rebalance("assign", (MAIN, 0), (MAIN, 1))
        wait_for(worker.assigned.is_set, 5.0, message="the assignment")

        def stop() -> None:
            kafka.release()
            worker.stop()
            thread.join(10.0)

        stops.append(stop)
        return worker, monitor, kafka

    yield start
    for stop in stops:
        stop()


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _samples(monitor: Monitor) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = exposition(monitor.metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_sync_and_an_async_handlers_own_records_carry_their_task(
    observed: Callable[[TaskRegistry], tuple[Worker, Monitor, FakeKafka]],
    records: io.StringIO,
) -> None:
    registry = TaskRegistry()

    @registry.handler(Note)
    def note(task: Note) -> None:
        _log.info("sync %s", task.text)

    @registry.handler(AsyncNote)
    async def async_note(task: AsyncNote) -> None:
        await asyncio.sleep(0)
        _log.info("async %s", task.text)

    worker, _, kafka = observed(registry)
    assert kafka.consumer is not None
    kafka.consumer.deliver(
        task_record(Note(text="a"), topic=MAIN, offset=0, task_id="t-sync"),
        task_record(AsyncNote(text="b"), topic=MAIN, offset=0, partition=1, task_id="t-async"),
    )
    wait_for(lambda: worker.stats.succeeded == 2, 5.0, message="both tasks")
    _log.info("outside")
    mine = {line["message"]: line for line in _lines(records) if line["logger"] == _log.name}
    assert (mine["sync a"]["task_id"], mine["sync a"]["task"]) == ("t-sync", "Note")
    assert (mine["async b"]["task_id"], mine["async b"]["task"]) == ("t-async", "AsyncNote")
    assert mine["sync a"]["attempt"] == 1
    assert "task_id" not in mine["outside"]


def test_attempts_running_now_are_listed_with_their_start_and_gone_once_they_end(
    observed: Callable[[TaskRegistry], tuple[Worker, Monitor, FakeKafka]],
) -> None:
    registry = TaskRegistry()
    inside, release = threading.Event(), threading.Event()

    @registry.handler(Note)
    def note(task: Note) -> None:
        inside.set()
        release.wait(5.0)

    worker, monitor, kafka = observed(registry)
    assert kafka.consumer is not None
    before = time.time()
    kafka.consumer.deliver(task_record(Note(text="a"), topic=MAIN, offset=0, task_id="t-1"))
    assert inside.wait(5.0), "the handler never ran"
    [running] = snapshot(worker.running_tasks())
    assert (running.task_id, running.task, running.attempt) == ("t-1", "Note", 1)
    assert before <= running.started_at <= time.time()
    found = _samples(monitor)
    assert found[("streamjobs_worker_tasks_running", (("queue", "default"),))] == 1
    oldest = found[("streamjobs_task_oldest_running_seconds", (("queue", "default"),
                                                               ("task", "Note")))]  # fmt: skip
    assert 0 <= oldest < 5
    release.set()
    wait_for(lambda: worker.stats.succeeded == 1, 5.0, message="the task")
    assert worker.running_tasks() == []
    assert _samples(monitor)[("streamjobs_worker_tasks_running", (("queue", "default"),))] == 0


def test_outcomes_are_counted_and_a_failures_traceback_logged_from_its_outcome(
    observed: Callable[[TaskRegistry], tuple[Worker, Monitor, FakeKafka]],
    records: io.StringIO,
) -> None:
    registry = TaskRegistry()

    @registry.handler(Note)
    def note(task: Note) -> None:
        if task.text == "bad":
            raise ValueError("boom")

    _, monitor, kafka = observed(registry)
    assert kafka.consumer is not None
    kafka.consumer.deliver(
        task_record(Note(text="ok"), topic=MAIN, offset=0, task_id="t-ok"),
        task_record(Note(text="bad"), topic=MAIN, offset=1, task_id="t-bad"),
    )
    wait_for(lambda: TopicPartition(MAIN, 0, 2) in kafka.commits(), 5.0, message="the commit")
    base = (("queue", "default"), ("task", "Note"))
    wait_for(
        lambda: _samples(monitor).get(("streamjobs_task_retried_total", (*base, ("tier", "1s")))),
        5.0,
        message="the retry counted",
    )
    found = _samples(monitor)
    assert found[("streamjobs_task_started_total", base)] == 2
    assert found[("streamjobs_task_succeeded_total", base)] == 1
    assert found[("streamjobs_task_failed_total", (("exception", "ValueError"), *base))] == 1
    assert found[("streamjobs_task_duration_seconds_count", base)] == 2
    outcomes = [line for line in _lines(records) if line["logger"] == LOGGER]
    retried = next(line for line in outcomes if line.get("outcome") == "retried")
    assert (retried["task_id"], retried["level"]) == ("t-bad", "INFO")
    [traceback] = [line for line in outcomes if "exception" in line]
    assert traceback["level"] == "WARNING"
    assert 'raise ValueError("boom")' in str(traceback["exception"])


class _Counter(Middleware):
    """Hears outcomes as a counter does, without success contexts, and keeps what it heard."""

    def __init__(self) -> None:
        self.pairs = 0  # outcomes told with their contexts
        self.successes = 0  # successes told, with or without

    def wants_success_contexts(self) -> bool:
        return False

    def outcome_batch(self, heard: Sequence[Heard]) -> None:  # the poll thread only
        batch = Outcomes.of(heard)
        self.pairs += len(batch)
        self.successes += sum(map(len, batch.successes_by_task().values()))


def test_a_worker_whose_outcome_listeners_only_count_keeps_no_context_per_success() -> None:
    registry = TaskRegistry()

    @registry.handler(Note)
    def note(task: Note) -> None:
        pass

    kafka, counter, metrics = FakeKafka(), _Counter(), WorkerMetrics(new_registry())
    worker = Worker(
        SETTINGS, registry, worker_id="w-1", clients=kafka, middleware=[counter, metrics]
    )
    metrics.watch(worker)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        consumer = wait_for(lambda: kafka.consumer, 5.0, message="the worker's consumer")
        consumer.rebalance("assign", (MAIN, 0), (MAIN, 1))
        wait_for(worker.assigned.is_set, 5.0, message="the assignment")
        assigned = time.monotonic()
        # a whole poll-loop turn after the assignment: the chain was asked at its end
        wait_for(lambda: worker.stats.polled_at > assigned, 5.0, message="a turn")
        records = [
            task_record(Note(text=str(i)), topic=MAIN, offset=i // 2, partition=i % 2)
            for i in range(20)
        ]
        consumer.deliver(*records)
        wait_for(lambda: counter.successes == 20, 5.0, message="every success told")
        assert counter.pairs == 0  # none kept its context until Kafka had its outcome
        base = (("queue", "default"), ("task", "Note"))
        text = exposition(metrics.registry).decode()
        found = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        assert found[("streamjobs_task_started_total", base)] == 20
        assert found[("streamjobs_task_succeeded_total", base)] == 20
        assert found[("streamjobs_task_duration_seconds_count", base)] == 20
    finally:
        kafka.release()
        worker.stop()
        thread.join(10.0)


def test_running_tasks_are_listed_oldest_first_and_the_oldest_of_each_type_found() -> None:
    first, second, third = (CurrentTask(f"t{i}", t, None, 1) for i, t in enumerate("ABA"))
    first.started_at, second.started_at, third.started_at = 30.0, 10.0, 20.0
    assert [t.task_id for t in snapshot([first, second, third])] == ["t1", "t2", "t0"]
    assert snapshot([second]) == [RunningTask("t1", "B", None, 1, 10.0)]
    assert oldest_by_task([first, second, third]) == {"A": 20.0, "B": 10.0}
