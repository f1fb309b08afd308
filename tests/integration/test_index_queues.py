"""The index of several queues against a real broker: it follows every queue's dead letters
(redriven through their own queue) and the cancels topic, so a cancel requested for a queued
task is pending in the index until a worker writes ``cancelled``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from streamjobs import Producer, Settings, TaskState
from streamjobs.index.follower import Follower
from streamjobs.index.queries import DeadLetterFilter, IndexReader
from tests.integration.conftest import TEST_SETTINGS, ThreadWorker, build_settings, state_of
from tests.integration.test_redrive import Charge, fails_on_first_run
from tests.support import wait_for

pytestmark = pytest.mark.integration


def _caught_up(settings: Settings, path: Path) -> IndexReader:
    with Follower(settings.model_copy(update={"index_path": path})) as follower:
        follower.catch_up()
    return IndexReader(path)


def test_an_index_of_two_queues_holds_both_queues_dead_letters_and_state_counts(
    kafka_bootstrap: str,
    unique_prefix: str,
    worker: Callable[..., ThreadWorker],
    tmp_path: Path,
) -> None:
    per_queue = {q: build_settings(kafka_bootstrap, unique_prefix, queue=q) for q in ("hi", "lo")}
    served = Settings(
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=unique_prefix,
        queues=["hi", "lo"],
        **TEST_SETTINGS,
    )
    ids: dict[str, list[str]] = {}
    for queue, orders in (("hi", range(2)), ("lo", range(2, 5))):  # each fails its first run
        with Producer(per_queue[queue]) as producer:
            ids[queue] = [producer.submit(Charge(order=n)).task_id for n in orders]
    worker(fails_on_first_run(Counter()), served)
    every = [(per_queue[q], t) for q, found in ids.items() for t in found]
    wait_for(
        lambda: all(state_of(s, t) == TaskState.DEAD_LETTERED for s, t in every),
        60,
        message="every task dead-lettered",
    )
    path = tmp_path / "index.db"
    with _caught_up(served, path) as index:
        assert index.states_by_queue() == {"hi": {"dead_lettered": 2}, "lo": {"dead_lettered": 3}}
        assert index.dead_letters_by_queue() == {"hi": (2, 0), "lo": (3, 0)}
        letters = index.dead_letters(DeadLetterFilter(("hi", "lo")))
        assert sorted((d.queue, d.task_id) for d in letters) == sorted(
            (q, t) for q, found in ids.items() for t in found
        )


def test_a_cancel_of_a_queued_task_is_pending_in_the_index_until_a_worker_reaches_it(
    settings: Settings,
    producer: Producer,
    worker: Callable[..., ThreadWorker],
    tmp_path: Path,
) -> None:
    handle = producer.submit(Charge(order=1))
    producer.cancel(handle.task_id)
    path = tmp_path / "index.db"
    with _caught_up(settings, path) as index:
        queued = index.task(handle.task_id)
        assert queued is not None
        assert queued.state is TaskState.QUEUED  # what the status says, unchanged
        pending = index.pending_cancel(queued)
        assert pending is not None
        assert pending.generation == 0

    worker(fails_on_first_run(Counter()))
    wait_for(
        lambda: state_of(settings, handle.task_id) == TaskState.CANCELLED,
        60,
        message="the task cancelled by a worker",
    )
    with _caught_up(settings, path) as index:
        done = index.task(handle.task_id)
        assert done is not None
        assert done.state is TaskState.CANCELLED
        assert index.pending_cancel(done) is None
