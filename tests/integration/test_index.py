"""The index against a real broker: it follows the status and dead-letter topics incrementally,
resumes from its stored offsets after a restart, rebuilds from Kafka when its file is deleted,
and drops tasks whose status was tombstoned by ``purge``."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streamjobs import Producer, Settings, TaskState, statusreads
from streamjobs.cli import app
from streamjobs.client import murmur2_partition
from streamjobs.index.follower import Follower
from streamjobs.index.queries import DeadLetterFilter, IndexReader, TaskFilter
from streamjobs.index.store import IndexStore
from streamjobs.ops.inspect import inspect
from streamjobs.ops.redrive import redrive
from streamjobs.topics import queue_topics
from tests.integration.conftest import RawProducer, ThreadWorker, worker_env
from tests.integration.test_redrive import Charge, fails_on_first_run
from tests.support import wait_for

pytestmark = pytest.mark.integration


def _follower(settings: Settings, path: Path) -> Follower:
    return Follower(settings.model_copy(update={"index_path": path}))


def test_the_index_follows_statuses_incrementally_and_resumes_after_a_restart(
    settings: Settings, producer: Producer, worker: object, tmp_path: Path
) -> None:
    path = tmp_path / "index.db"
    start_worker = worker
    handles = [producer.submit(Charge(order=n)) for n in range(5)]
    ids = [h.task_id for h in handles]
    assert isinstance(start_worker(fails_on_first_run(Counter())), ThreadWorker)
    wait_for(lambda: _all_final(settings, ids), 60, message="every task final")

    with _follower(settings, path) as follower:
        first = follower.catch_up()
        assert first.applied[queue_topics(settings).status] >= 10  # running, outcome
        assert first.applied[queue_topics(settings).submitted] == 5  # queued
        applied = follower.store.offsets(queue_topics(settings).status)
    with IndexReader(path) as index:
        assert index.state_counts() == {"dead_lettered": 5}
        [failed] = index.search(TaskFilter(text=f"order {3}"))
        assert failed.task_id == ids[3]
        assert len(index.dead_letters(DeadLetterFilter(settings.queue))) == 5

    more = [producer.submit(Charge(order=n)).task_id for n in range(10, 13)]
    wait_for(lambda: _all_final(settings, more), 60, message="new tasks final")
    with _follower(settings, path) as again:  # a restart: a new process, the same file
        assert again.store.offsets(queue_topics(settings).status) == applied
        second = again.catch_up()
    status_topic = queue_topics(settings).status
    # only what was written since: never the records applied before the restart
    assert second.behind[status_topic] == second.applied[status_topic]
    assert 6 <= second.applied[status_topic] < first.applied[status_topic] + 6  # 2 per task
    with IndexReader(path) as index:
        assert index.state_counts() == {"dead_lettered": 8}


def test_a_deleted_index_is_rebuilt_from_kafka_with_the_same_answers(
    settings: Settings, producer: Producer, worker: object, tmp_path: Path
) -> None:
    ids = [producer.submit(Charge(order=n)).task_id for n in range(4)]
    worker(fails_on_first_run(Counter()))  # type: ignore[operator]
    wait_for(lambda: _all_final(settings, ids), 60, message="every task final")
    path = tmp_path / "index.db"
    with _follower(settings, path) as follower:
        follower.catch_up()
    with IndexReader(path) as index:
        before = ({t: index.task(t) for t in ids}, index.dead_letter_reasons(settings.queue))
    for leftover in tmp_path.glob("index.db*"):
        leftover.unlink()
    with _follower(settings, path) as rebuilt:
        rebuilt.catch_up()
    with IndexReader(path) as index:
        after = ({t: index.task(t) for t in ids}, index.dead_letter_reasons(settings.queue))
    assert after == before
    assert after[1] == {"max_attempts": 4}


def test_a_purge_tombstone_removes_the_task_from_the_index(
    settings: Settings, producer: Producer, worker: object, raw_producer: RawProducer,
    tmp_path: Path,
) -> None:  # fmt: skip
    ids = [producer.submit(Charge(order=n)).task_id for n in range(3)]
    worker(fails_on_first_run(Counter()))  # type: ignore[operator]
    wait_for(lambda: _all_final(settings, ids), 60, message="every task final")
    path = tmp_path / "index.db"
    with _follower(settings, path) as follower:
        follower.catch_up()
        status_topic = queue_topics(settings).status
        gone = ids[0]
        raw_producer.produce(
            status_topic,
            None,
            key=gone.encode(),
            partition=murmur2_partition(gone.encode(), settings.partitions),
        )
        follower.catch_up()
    with IndexReader(path) as index:
        assert index.task(gone) is None
        assert index.history(gone) == []
        assert index.task(ids[1]) is not None
        assert index.state_counts() == {"dead_lettered": 2}


def test_two_writers_sharing_an_index_file_apply_each_record_once(
    settings: Settings, producer: Producer, worker: object, tmp_path: Path
) -> None:
    ids = [producer.submit(Charge(order=n)).task_id for n in range(3)]
    worker(fails_on_first_run(Counter()))  # type: ignore[operator]
    wait_for(lambda: _all_final(settings, ids), 60, message="every task final")
    path = tmp_path / "index.db"
    one = Follower(settings.model_copy(update={"index_path": path}), IndexStore(path))
    two = Follower(settings.model_copy(update={"index_path": path}), IndexStore(path))
    with one, two:
        ranges = two.plan(10.0)  # planned before one runs
        one.catch_up()
        for feed in two.feeds:
            two._read(feed, ranges[feed.topic] or [], 10.0)  # the same records again: all skipped
    with IndexReader(path) as index:
        assert all(len(index.history(t)) == 3 for t in ids)


def _all_final(settings: Settings, ids: list[str]) -> bool:
    views = statusreads.snapshot(settings)
    return all(t in views and views[t].state is TaskState.DEAD_LETTERED for t in ids)


def test_inspect_and_status_answer_from_a_configured_index_as_they_do_from_kafka(
    settings: Settings, producer: Producer, worker: object, tmp_path: Path
) -> None:
    ids = [producer.submit(Charge(order=n)).task_id for n in range(3)]
    worker(fails_on_first_run(Counter()))  # type: ignore[operator]
    wait_for(lambda: _all_final(settings, ids), 60, message="every task final")
    indexed = settings.model_copy(update={"index_path": tmp_path / "index.db"})
    from_kafka, from_index = inspect(settings), inspect(indexed)
    assert from_index.states == from_kafka.states == {"dead_lettered": 3}
    assert from_index.dead_letters == from_kafka.dead_letters == {"max_attempts": 3}
    assert (from_index.redriven, from_index.succeeded_last_minute) == (0, 0)

    redrive(settings, refs=None, reason="max_attempts")  # the handler succeeds the second time
    wait_for(lambda: inspect(indexed).states == {"succeeded": 3}, 60, message="redriven tasks")
    assert inspect(indexed).redriven == 3
    env = {**worker_env(settings), "STREAMJOBS_INDEX_PATH": str(tmp_path / "index.db")}
    result = CliRunner().invoke(
        app,
        ["status", ids[0], "--json", "--bootstrap-servers", settings.bootstrap_servers,
         "--topic-prefix", settings.topic_prefix],
        env=env,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["state"] == "succeeded"
