"""The one-round-trip submit against a real broker: a new task's ``queued`` fact lives on the
compacted ``<prefix>.submitted`` topic, written with the task record, and readers merge it with
the status topic. ``queued`` is visible the moment submit returns; a submitted record landing
after the worker's outcome (produced late on purpose here) never regresses it, for point reads,
snapshots and the index alike; purge removes the id from both topics."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from streamjobs import Producer, Settings, Task, TaskRegistry, TaskState, statusreads
from streamjobs.client import new_producer, produce_confirmed
from streamjobs.index.follower import Follower
from streamjobs.index.queries import IndexReader
from streamjobs.ops.purge import purge
from streamjobs.topics import queue_topics
from tests.integration.conftest import ThreadWorker, read_topic
from tests.support import wait_for

pytestmark = pytest.mark.integration


class Greet(Task):
    name: str


def _registry() -> TaskRegistry:
    registry = TaskRegistry()

    @registry.handler(Greet)
    def greet(task: Greet) -> str:
        return f"hello {task.name}"

    return registry


def _submitted_records(settings: Settings, task_id: str) -> list[bytes | None]:
    topic = queue_topics(settings).submitted
    return [r.value for r in read_topic(settings, topic) if r.key == task_id.encode()]


def test_queued_is_visible_the_moment_submit_returns_and_only_the_submitted_topic_holds_it(
    settings: Settings, producer: Producer
) -> None:
    handles = [producer.submit(Greet(name=str(n))) for n in range(5)]
    later = producer.submit(Greet(name="later"), delay=timedelta(hours=1))

    for handle in handles:
        view = statusreads.latest(
            settings, handle.task_id
        )  # no wait: submit returned, Kafka has it
        assert view is not None
        assert view.state is TaskState.QUEUED
    view = later.status()
    assert view is not None
    assert view.state is TaskState.SCHEDULED
    snapshot = statusreads.snapshot(settings)
    assert {h.task_id for h in [*handles, later]} <= snapshot.keys()
    assert read_topic(settings, queue_topics(settings).status) == []  # no worker wrote yet
    assert len(_submitted_records(settings, handles[0].task_id)) == 1


def test_a_submitted_record_landing_after_the_workers_outcome_never_regresses_it(
    settings: Settings,
    producer: Producer,
    worker: Callable[..., ThreadWorker],
    tmp_path: Path,
) -> None:
    worker(_registry())
    handle = producer.submit(Greet(name="ada"))
    assert handle.wait(30) == "hello ada"
    [queued] = _submitted_records(settings, handle.task_id)
    assert queued is not None

    # the interleaving the old write order existed for: the queued fact lands last
    client = new_producer(settings)
    produce_confirmed(client, queue_topics(settings).submitted, [(handle.task_id.encode(), queued)])
    client.flush(10.0)

    view = statusreads.latest(settings, handle.task_id)
    assert view is not None
    assert view.state is TaskState.SUCCEEDED
    assert view.result == "hello ada"
    assert statusreads.snapshot(settings)[handle.task_id].state is TaskState.SUCCEEDED
    indexed = settings.model_copy(update={"index_path": tmp_path / "index.db"})
    with Follower(indexed) as follower:
        follower.catch_up()
    with IndexReader(tmp_path / "index.db") as index:
        row = index.task(handle.task_id)
        assert row is not None
        assert row.state is TaskState.SUCCEEDED


def test_the_index_shows_a_task_queued_then_succeeded(
    settings: Settings,
    producer: Producer,
    worker: Callable[..., ThreadWorker],
    tmp_path: Path,
) -> None:
    indexed = settings.model_copy(update={"index_path": tmp_path / "index.db"})
    handle = producer.submit(Greet(name="grace"))
    with Follower(indexed) as follower:
        follower.catch_up()
        with IndexReader(tmp_path / "index.db") as index:
            row = index.task(handle.task_id)
            assert row is not None
            assert row.state is TaskState.QUEUED
        worker(_registry())
        handle.wait(30)
        follower.catch_up()
    with IndexReader(tmp_path / "index.db") as index:
        row = index.task(handle.task_id)
        assert row is not None
        assert row.state is TaskState.SUCCEEDED
        states = [v.state for v in index.history(handle.task_id)]
        assert states[0] is TaskState.QUEUED
        assert states[-1] is TaskState.SUCCEEDED
        assert index.state_counts() == {"succeeded": 1}


def test_purge_removes_a_finished_task_from_both_topics(
    settings: Settings, producer: Producer, worker: Callable[..., ThreadWorker]
) -> None:
    worker(_registry())
    done = producer.submit(Greet(name="done"))
    done.wait(30)
    waiting = producer.submit(Greet(name="waiting"), delay=timedelta(hours=1))

    assert purge(settings, timedelta(0)) == 1

    wait_for(lambda: statusreads.latest(settings, done.task_id) is None, 10, message="purged")
    assert _submitted_records(settings, done.task_id)[-1] is None  # its queued fact: tombstoned
    assert done.task_id not in statusreads.snapshot(settings)
    view = statusreads.latest(settings, waiting.task_id)  # not final: kept
    assert view is not None
    assert view.state is TaskState.SCHEDULED
