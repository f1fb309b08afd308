"""Result expiry against a real broker: purge tombstones old final statuses, nothing else."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from typer.testing import CliRunner

from streamjobs import Producer, Settings, Task, TaskRegistry, TaskState, statusreads
from streamjobs.cli import app
from streamjobs.ops.purge import purge
from streamjobs.topics import queue_topics
from tests.integration.conftest import (
    ThreadWorker,
    build_settings,
    read_topic,
    state_of,
    worker_env,
)
from tests.support import wait_for

pytestmark = pytest.mark.integration


class Export(Task):
    name: str


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """Holds the "slow" export until the test ends, so its status stays ``running``."""
    event = threading.Event()
    yield event
    event.set()


def test_purge_tombstones_old_finished_statuses_and_keeps_unfinished_ones(
    settings: Settings,
    producer: Producer,
    worker: Callable[..., ThreadWorker],
    gate: threading.Event,
) -> None:
    registry = TaskRegistry()

    @registry.handler(Export, max_attempts=1)
    def export(task: Export) -> str:
        if task.name == "slow":
            gate.wait(60.0)
        if task.name == "broken":
            raise ValueError("no such report")
        return task.name

    worker(registry)
    done = producer.submit(Export(name="done"))
    broken = producer.submit(Export(name="broken"))
    wait_for(lambda: state_of(settings, broken.task_id) == "dead_lettered", 30.0)
    running = producer.submit(Export(name="slow"), key="reports")
    queued = producer.submit(Export(name="after-slow"), key="reports")  # waits behind "slow"
    expected = {
        done.task_id: "succeeded",
        broken.task_id: "dead_lettered",
        running.task_id: "running",
        queued.task_id: "queued",
    }
    wait_for(
        lambda: all(state_of(settings, i) == s for i, s in expected.items()),
        30.0,
        message=f"states {expected}",
    )

    assert purge(settings, timedelta(hours=1)) == 0  # nothing finished that long ago
    assert purge(settings, timedelta(0), dry_run=True) == 2
    assert state_of(settings, done.task_id) == "succeeded"

    purged = purge(settings, timedelta(0))

    assert purged == 2
    assert statusreads.latest(settings, done.task_id) is None
    assert statusreads.latest(settings, broken.task_id) is None
    assert state_of(settings, running.task_id) == "running"
    assert state_of(settings, queued.task_id) == "queued"
    tombstones = {
        r.key for r in read_topic(settings, queue_topics(settings).status) if r.value is None
    }
    assert tombstones == {done.task_id.encode(), broken.task_id.encode()}
    gate.set()
    assert queued.wait(30.0) == "after-slow"


def test_purge_leaves_other_queues_statuses_unless_asked_for_all(
    settings: Settings, worker: Callable[..., ThreadWorker]
) -> None:
    # two queues of one prefix share the status topic
    images = build_settings(settings.bootstrap_servers, settings.topic_prefix, queue="images")
    registry = TaskRegistry()

    @registry.handler(Export)
    def export(task: Export) -> str:
        return task.name

    finished = []
    for queue_settings in (settings, images):
        worker(registry, queue_settings)
        with Producer(queue_settings) as producer:
            handle = producer.submit(Export(name=queue_settings.queue))
        handle.wait(30.0)
        finished.append(handle.task_id)

    result = CliRunner().invoke(
        app,
        [
            *("purge", "--older-than", "0s", "--queue", settings.queue),
            *("--bootstrap-servers", settings.bootstrap_servers),
            *("--topic-prefix", settings.topic_prefix),
        ],
        env=worker_env(settings),
    )

    assert result.exit_code == 0, result.output
    assert "purged 1 finished task statuses" in result.output
    assert statusreads.latest(settings, finished[0]) is None
    view = statusreads.latest(images, finished[1])
    assert view is not None
    assert view.state is TaskState.SUCCEEDED
    assert purge(images, timedelta(0), all_queues=True) == 1
    assert statusreads.latest(images, finished[1]) is None
