"""Middleware on a real worker: it hears every attempt and its written outcome, and cannot change
what happens to a task (a middleware that raises or swallows leaves failures failing)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from datetime import timedelta

import pytest

from streamjobs import Discard, Producer, Settings, Task, TaskRegistry, TaskState
from streamjobs.middleware import AttemptContext, AttemptOutcome, Middleware
from streamjobs.topics import queue_topics
from tests.integration.conftest import ThreadWorker, dead_letters, latest, state_of
from tests.support import wait_for

pytestmark = pytest.mark.integration


class Succeed(Task):
    n: int


class FailOnce(Task):
    token: str


class Doomed(Task):
    why: str


class Recording(Middleware):
    """Keeps every attempt context it wrapped and every outcome it heard, per task id."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entered: list[AttemptContext] = []
        self.outcomes: list[tuple[AttemptContext, AttemptOutcome]] = []

    @contextmanager
    def attempt(self, ctx: AttemptContext) -> Iterator[None]:
        with self.lock:
            self.entered.append(ctx)
        yield

    def outcome(self, ctx: AttemptContext, outcome: AttemptOutcome) -> None:
        with self.lock:
            self.outcomes.append((ctx, outcome))

    def heard(self, task_id: str, count: int) -> list[tuple[AttemptContext, AttemptOutcome]]:
        with self.lock:
            mine = [(c, o) for c, o in self.outcomes if c.task_id == task_id]
        return mine if len(mine) >= count else []


class Swallowing(Middleware):
    @contextmanager
    def attempt(self, ctx: AttemptContext) -> Iterator[None]:
        with suppress(Exception):
            yield


class Raising(Middleware):
    def attempt(self, ctx: AttemptContext) -> AbstractContextManager[None]:
        raise RuntimeError("middleware bug on enter")

    def outcome(self, ctx: AttemptContext, outcome: AttemptOutcome) -> None:
        raise RuntimeError("middleware bug in outcome")


def _registry() -> TaskRegistry:
    registry = TaskRegistry()
    failed: set[str] = set()

    @registry.handler(Succeed)
    def succeed(task: Succeed) -> int:
        return task.n * 2

    @registry.handler(FailOnce)
    def fail_once(task: FailOnce) -> str:
        if task.token not in failed:
            failed.add(task.token)
            raise ConnectionError(f"first try of {task.token}")
        return "ok"

    @registry.handler(Doomed)
    def doomed(task: Doomed) -> None:
        raise Discard(task.why)

    return registry


def test_middleware_hears_the_outcomes_of_a_succeeding_a_retried_and_a_dead_lettered_task(
    settings: Settings, producer: Producer, worker: Callable[..., ThreadWorker]
) -> None:
    recording = Recording()
    running = worker(_registry(), middleware=[recording])
    topics = queue_topics(settings)

    ok = producer.submit(Succeed(n=21), key="k-ok")
    retried = producer.submit(FailOnce(token="t"), key="k-retry")
    doomed = producer.submit(Doomed(why="user_gone"))

    [(ok_ctx, ok_outcome)] = wait_for(lambda: recording.heard(ok.task_id, 1), 30.0)
    first, second = wait_for(lambda: recording.heard(retried.task_id, 2), 30.0)
    [(dead_ctx, dead_outcome)] = wait_for(lambda: recording.heard(doomed.task_id, 1), 30.0)

    assert (ok_ctx.task, ok_ctx.key, ok_ctx.attempt, ok_ctx.queue) == (
        Succeed.task_name,
        "k-ok",
        1,
        settings.queue,
    )
    assert (ok_ctx.topic, ok_ctx.partition, ok_ctx.offset) == (topics.main, ok.partition, ok.offset)
    assert (ok_ctx.group, ok_ctx.worker_id) == (settings.group, running.worker.worker_id)
    assert ok_outcome.state is TaskState.SUCCEEDED
    assert ok_outcome.error_type is None
    assert timedelta(0) < ok_outcome.duration < timedelta(seconds=30)

    (ctx_1, outcome_1), (ctx_2, outcome_2) = first, second
    assert (ctx_1.attempt, ctx_1.topic) == (1, topics.main)
    assert outcome_1.state is TaskState.RETRY_SCHEDULED
    assert outcome_1.retry_tier == timedelta(milliseconds=300)
    assert (outcome_1.error_type, outcome_1.error) == ("ConnectionError", "first try of t")
    assert (ctx_2.attempt, ctx_2.topic) == (2, topics.retry[timedelta(milliseconds=300)])
    assert outcome_2.state is TaskState.SUCCEEDED

    assert dead_ctx.task == Doomed.task_name
    assert dead_outcome.state is TaskState.DEAD_LETTERED
    assert dead_outcome.reason == "user_gone"
    assert dead_outcome.error_type == "streamjobs.errors.Discard"

    # heard once written: every outcome is the task's state on the status topic
    assert state_of(settings, ok.task_id) == TaskState.SUCCEEDED
    assert state_of(settings, retried.task_id) == TaskState.SUCCEEDED
    assert state_of(settings, doomed.task_id) == TaskState.DEAD_LETTERED
    assert [ctx.task_id for ctx in recording.entered].count(retried.task_id) == 2


def test_a_middleware_that_raises_or_swallows_errors_leaves_failures_failing(
    settings: Settings,
    producer: Producer,
    worker: Callable[..., ThreadWorker],
    caplog: pytest.LogCaptureFixture,
) -> None:
    recording = Recording()
    worker(_registry(), middleware=[Raising(), Swallowing(), recording])

    ok = producer.submit(Succeed(n=1))
    retried = producer.submit(FailOnce(token="u"))
    doomed = producer.submit(Doomed(why="swallowed_or_not"))

    wait_for(lambda: recording.heard(retried.task_id, 2), 30.0)
    wait_for(lambda: state_of(settings, doomed.task_id) == TaskState.DEAD_LETTERED, 30.0)
    assert ok.wait(30.0) == 2
    assert retried.wait(30.0) == "ok"
    view = latest(settings, retried.task_id)
    assert view is not None
    assert view.attempt == 2
    dead = wait_for(
        lambda: [d for d in dead_letters(settings) if d["task_id"] == doomed.task_id],
        30.0,
    )
    assert [d["reason"] for d in dead] == ["swallowed_or_not"]
    assert "middleware Raising failed entering attempt; skipped" in caplog.text
    assert "middleware Raising failed in outcome; ignored" in caplog.text


def test_under_exactly_once_middleware_hears_each_outcome_once(
    make_settings: Callable[..., Settings], worker: Callable[..., ThreadWorker]
) -> None:
    settings = make_settings(exactly_once=True)
    recording = Recording()
    worker(_registry(), settings, middleware=[recording])

    with Producer(settings) as producer:
        retried = producer.submit(FailOnce(token="x"))
        doomed = producer.submit(Doomed(why="gone"))
        assert retried.wait(30.0) == "ok"

    states = [o.state for _, o in wait_for(lambda: recording.heard(retried.task_id, 2), 30.0)]
    [(_, dead)] = wait_for(lambda: recording.heard(doomed.task_id, 1), 30.0)
    assert states == [TaskState.RETRY_SCHEDULED, TaskState.SUCCEEDED]
    assert (dead.state, dead.reason) == (TaskState.DEAD_LETTERED, "gone")
    wait_for(lambda: state_of(settings, doomed.task_id) == TaskState.DEAD_LETTERED, 30.0)
    assert len(recording.heard(retried.task_id, 2)) == 2
