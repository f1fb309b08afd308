"""Cancel: tasks that have not started never run, running ones are told, finished ones stay.

Every test asserts Kafka facts: the ``cancelled`` status on the compacted status topic, the
committed offset past the cancelled record, the (absent) cancel request of a finished task.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from typer.testing import CliRunner

from streamjobs import (
    AsyncProducer,
    CancelResult,
    Producer,
    Settings,
    Task,
    TaskCancelled,
    TaskRegistry,
    TaskState,
    current_task,
)
from streamjobs.cancels import CancelOutcome
from streamjobs.cli import app
from streamjobs.topics import queue_topics
from tests.integration.conftest import (
    ThreadWorker,
    committed_offset,
    envelopes,
    latest,
    read_topic,
    state_of,
)
from tests.support import wait_for

pytestmark = pytest.mark.integration


class Job(Task):
    name: str


class SlowAsync(Task):
    name: str


class Watchful(Task):
    name: str
    give_up: bool = False


class Ran:
    """What the handlers saw, shared with the test thread."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.started = threading.Event()
        self.interrupted = threading.Event()
        self.lock = threading.Lock()

    def add(self, name: str) -> None:
        with self.lock:
            self.names.append(name)
        self.started.set()


@pytest.fixture
def ran() -> Ran:
    return Ran()


@pytest.fixture
def registry(ran: Ran) -> TaskRegistry:
    registry = TaskRegistry()

    @registry.handler(Job)
    def job(task: Job) -> str:
        ran.add(task.name)
        if task.name.startswith("fail-once") and ran.names.count(task.name) == 1:
            raise RuntimeError("first attempt fails")
        return task.name

    @registry.handler(SlowAsync)
    async def slow(task: SlowAsync) -> str:
        ran.add(task.name)
        try:
            await asyncio.sleep(60)
        finally:
            ran.interrupted.set()
        return task.name

    @registry.handler(Watchful)
    def watchful(task: Watchful) -> str:
        ran.add(task.name)
        current = current_task()
        if not current.wait_cancelled(30.0):
            return "never cancelled"
        if task.give_up:
            current.raise_if_cancelled()
        return "saw the cancel and finished"

    return registry


def _state(settings: Settings, task_id: str, state: TaskState, timeout: float = 20.0) -> None:
    wait_for(
        lambda: state_of(settings, task_id) == state.value, timeout, message=f"state {state.value}"
    )


def _committed_past(settings: Settings, topic: str, partition: int, offset: int) -> None:
    wait_for(
        lambda: committed_offset(settings, topic, partition) > offset,
        20.0,
        message=f"commit past {topic}[{partition}]@{offset}",
    )


def test_queued_task_cancelled_before_any_worker_runs_never_runs_and_ends_cancelled(
    settings: Settings,
    producer: Producer,
    worker: Callable[..., ThreadWorker],
    registry: TaskRegistry,
    ran: Ran,
) -> None:
    handle = producer.submit(Job(name="queued"))
    after = producer.submit(Job(name="after"))

    result = producer.cancel(handle.task_id)
    worker(registry)

    assert result == CancelResult(handle.task_id, CancelOutcome.REQUESTED, TaskState.QUEUED)
    assert after.wait(30.0) == "after"
    _state(settings, handle.task_id, TaskState.CANCELLED)
    _committed_past(settings, handle.topic, handle.partition, handle.offset)
    assert "queued" not in ran.names
    view = latest(settings, handle.task_id)
    assert view is not None
    assert view.reason == "cancelled"
    assert "before it started" in (view.note or "")
    with pytest.raises(TaskCancelled):
        handle.wait(10.0)


def test_delayed_task_cancelled_while_it_waits_in_its_delay_tier_never_runs(
    settings: Settings,
    producer: Producer,
    worker: Callable[..., ThreadWorker],
    registry: TaskRegistry,
    ran: Ran,
) -> None:
    worker(registry)
    handle = producer.submit(Job(name="delayed"), delay=timedelta(seconds=2))
    assert handle.topic in queue_topics(settings).delay.values()

    result = handle.cancel()

    assert result.outcome is CancelOutcome.REQUESTED
    assert result.state is TaskState.SCHEDULED
    _state(settings, handle.task_id, TaskState.CANCELLED)
    _committed_past(settings, handle.topic, handle.partition, handle.offset)
    assert "delayed" not in ran.names


def test_task_waiting_in_a_retry_tier_never_runs_again_after_cancel(
    make_settings: Callable[..., Settings],
    worker: Callable[..., ThreadWorker],
    registry: TaskRegistry,
    ran: Ran,
) -> None:
    settings = make_settings(retry_tiers="5s")
    worker(registry, settings)
    with Producer(settings) as producer:
        handle = producer.submit(Job(name="fail-once-retry"))
        _state(settings, handle.task_id, TaskState.RETRY_SCHEDULED)

        result = producer.cancel(handle.task_id)

    assert result.outcome is CancelOutcome.REQUESTED
    assert result.state is TaskState.RETRY_SCHEDULED
    _state(settings, handle.task_id, TaskState.CANCELLED)
    [(record, envelope)] = envelopes(settings, queue_topics(settings).retry[timedelta(seconds=5)])
    assert envelope.task_id == handle.task_id
    assert envelope.attempt == 2
    _committed_past(settings, record.topic, record.partition, record.offset)
    assert ran.names.count("fail-once-retry") == 1  # the retry never ran


def test_a_running_async_handler_is_interrupted_and_ends_cancelled(
    settings: Settings,
    producer: Producer,
    worker: Callable[..., ThreadWorker],
    registry: TaskRegistry,
    ran: Ran,
) -> None:
    worker(registry)
    handle = producer.submit(SlowAsync(name="long"))
    assert ran.started.wait(20.0)
    asked = time.monotonic()

    result = producer.cancel(handle.task_id)

    assert result.outcome is CancelOutcome.REQUESTED
    assert ran.interrupted.wait(5.0), "the async handler was not interrupted"
    _state(settings, handle.task_id, TaskState.CANCELLED, timeout=5.0)
    took = time.monotonic() - asked
    assert took < 5.0, f"cancel took {took:.2f}s to end the running task"
    _committed_past(settings, handle.topic, handle.partition, handle.offset)


@pytest.mark.parametrize(
    ("give_up", "state"), [(False, TaskState.SUCCEEDED), (True, TaskState.CANCELLED)]
)
def test_a_running_sync_handler_sees_the_cancel_flag_and_its_outcome_is_recorded(
    settings: Settings,
    producer: Producer,
    worker: Callable[..., ThreadWorker],
    registry: TaskRegistry,
    ran: Ran,
    give_up: bool,
    state: TaskState,
) -> None:
    worker(registry)
    handle = producer.submit(Watchful(name="sync", give_up=give_up))
    assert ran.started.wait(20.0)

    assert producer.cancel(handle.task_id).outcome is CancelOutcome.REQUESTED

    _state(settings, handle.task_id, state)
    view = latest(settings, handle.task_id)
    assert view is not None
    if state is TaskState.SUCCEEDED:
        assert view.result == "saw the cancel and finished"
    else:
        assert view.error_type == "Cancelled"
    assert ran.names == ["sync"]  # never retried


def test_cancel_of_a_finished_or_unknown_task_changes_nothing(
    settings: Settings,
    producer: Producer,
    worker: Callable[..., ThreadWorker],
    registry: TaskRegistry,
) -> None:
    worker(registry)
    handle = producer.submit(Job(name="done"))
    assert handle.wait(30.0) == "done"
    before = latest(settings, handle.task_id)

    finished = producer.cancel(handle.task_id)
    unknown = producer.cancel("no-such-task")

    assert finished == CancelResult(handle.task_id, CancelOutcome.FINISHED, TaskState.SUCCEEDED)
    assert unknown == CancelResult("no-such-task", CancelOutcome.UNKNOWN, None)
    assert read_topic(settings, queue_topics(settings).cancels) == []
    assert latest(settings, handle.task_id) == before


def test_cancellations_survive_a_full_restart_of_all_workers(
    settings: Settings,
    producer: Producer,
    worker: Callable[..., ThreadWorker],
    registry: TaskRegistry,
    ran: Ran,
) -> None:
    first = worker(registry)
    assert producer.submit(Job(name="before")).wait(30.0) == "before"
    first.stop()
    handle = producer.submit(Job(name="cancelled-while-down"))
    assert producer.cancel(handle.task_id).requested

    worker(registry)  # a new worker: the cancel is known only from the cancels topic
    later = producer.submit(Job(name="later"))

    assert later.wait(30.0) == "later"
    _state(settings, handle.task_id, TaskState.CANCELLED)
    _committed_past(settings, handle.topic, handle.partition, handle.offset)
    assert "cancelled-while-down" not in ran.names


def test_cli_cancel_prints_each_outcome_and_exits_1_when_an_id_could_not_be_cancelled(
    settings: Settings, producer: Producer
) -> None:
    queued = producer.submit(Job(name="cli"))
    clean_env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("STREAMJOBS_")}
    where = ["-b", settings.bootstrap_servers, "--topic-prefix", settings.topic_prefix]
    runner = CliRunner()

    both = runner.invoke(app, ["cancel", queued.task_id, "no-such-task", *where], env=clean_env)
    again = runner.invoke(app, ["cancel", queued.task_id, *where], env=clean_env)

    assert both.exit_code == 1, both.output
    assert f"{queued.task_id}: cancel requested (was queued)" in both.output
    assert "no-such-task: unknown" in both.output
    assert again.exit_code == 0, again.output
    assert latest(settings, queued.task_id) is not None


def test_async_handles_and_the_async_producer_cancel_too(settings: Settings) -> None:
    async def cancel_twice() -> tuple[CancelResult, CancelResult]:
        async with AsyncProducer(settings) as producer:
            handle = await producer.submit(Job(name="async"), delay=timedelta(minutes=5))
            return await handle.cancel(), await producer.cancel(handle.task_id)

    first, second = asyncio.run(cancel_twice())

    assert first.outcome is CancelOutcome.REQUESTED
    assert first.state is TaskState.SCHEDULED
    assert second.requested  # no worker has reached it yet: asking again writes again
    requests = read_topic(settings, queue_topics(settings).cancels)
    assert [r.key for r in requests] == [first.task_id.encode()] * 2
