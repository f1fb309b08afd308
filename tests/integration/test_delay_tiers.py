"""Delay tiers: ``submit(delay=...)`` and ``submit(eta=...)`` never run early, and run soon after.

Tiers here are 500ms, 1s and 2s (see ``TEST_SETTINGS``). A task's due time is the
``not_before_ms`` its status records carry; the handler notes when it really started.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from streamjobs import Producer, Settings, Task, TaskRegistry, TaskState
from streamjobs.topics import queue_topics
from tests.integration.conftest import ThreadWorker, envelopes, latest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LATE_BOUND_MS = 3000  # generous: the shortest tier is 500 ms; a shared CI machine is slow


class Timed(Task):
    name: str


@pytest.fixture
def started() -> dict[str, int]:
    """Wall-clock start (ms) of each task, by name."""
    return {}


@pytest.fixture
def timed_registry(started: dict[str, int]) -> TaskRegistry:
    registry = TaskRegistry()

    @registry.handler(Timed)
    def timed(task: Timed) -> str:
        started.setdefault(task.name, time.time_ns() // 1_000_000)
        return task.name

    return registry


def _due_and_start(settings: Settings, task_id: str, started: dict[str, int], name: str) -> int:
    """How late (ms) the task started after its due time; asserts it did not start early."""
    view = latest(settings, task_id)
    assert view is not None
    assert view.state is TaskState.SUCCEEDED
    assert view.not_before_ms is not None
    lateness = started[name] - view.not_before_ms
    assert lateness >= 0, f"{name} ran {-lateness} ms before its due time"
    return lateness


def _tiers_holding(settings: Settings, task_id: str) -> set[timedelta]:
    names = queue_topics(settings)
    return {
        delay
        for delay, topic in names.delay.items()
        if any(envelope.task_id == task_id for _, envelope in envelopes(settings, topic))
    }


def test_delayed_task_never_runs_before_its_due_time_and_runs_soon_after(
    settings: Settings,
    producer: Producer,
    worker: Callable[..., ThreadWorker],
    timed_registry: TaskRegistry,
    started: dict[str, int],
) -> None:
    worker(timed_registry)
    before = time.time_ns() // 1_000_000
    handle = producer.submit(Timed(name="delayed"), delay=timedelta(seconds=1.5))

    assert handle.wait(30.0) == "delayed"
    lateness = _due_and_start(settings, handle.task_id, started, "delayed")
    assert lateness < LATE_BOUND_MS
    assert started["delayed"] - before >= 1500
    assert handle.topic == queue_topics(settings).delay[timedelta(seconds=1)]


def test_task_submitted_with_an_eta_never_runs_before_it(
    settings: Settings,
    producer: Producer,
    worker: Callable[..., ThreadWorker],
    timed_registry: TaskRegistry,
    started: dict[str, int],
) -> None:
    worker(timed_registry)
    eta = datetime.now(UTC) + timedelta(seconds=1.2)
    handle = producer.submit(Timed(name="eta"), eta=eta)

    assert handle.wait(30.0) == "eta"
    lateness = _due_and_start(settings, handle.task_id, started, "eta")
    assert lateness < LATE_BOUND_MS
    assert started["eta"] >= int(eta.timestamp() * 1000)


def test_delay_longer_than_the_longest_tier_hops_through_tiers_and_never_runs_early(
    settings: Settings,
    producer: Producer,
    worker: Callable[..., ThreadWorker],
    timed_registry: TaskRegistry,
    started: dict[str, int],
) -> None:
    worker(timed_registry)
    handle = producer.submit(Timed(name="long"), delay=timedelta(seconds=3.5))

    assert handle.wait(30.0) == "long"
    lateness = _due_and_start(settings, handle.task_id, started, "long")
    assert lateness < LATE_BOUND_MS
    hops = _tiers_holding(settings, handle.task_id)
    assert timedelta(seconds=2) in hops
    assert len(hops) >= 2, f"expected a hop to a shorter tier, saw only {hops}"


def test_delayed_tasks_of_one_key_do_not_hold_back_undelayed_tasks(
    settings: Settings,
    producer: Producer,
    worker: Callable[..., ThreadWorker],
    timed_registry: TaskRegistry,
    started: dict[str, int],
) -> None:
    worker(timed_registry)
    delayed = producer.submit(Timed(name="later"), key="same", delay=timedelta(seconds=2))
    now = producer.submit(Timed(name="now"), key="same")

    assert now.wait(30.0) == "now"
    assert "later" not in started
    assert delayed.wait(30.0) == "later"
    assert _due_and_start(settings, delayed.task_id, started, "later") < LATE_BOUND_MS
