"""The index follows the workers' heartbeats and the schedules against a real broker: rows
appear as records are written, a restart resumes from the stored offsets (reading only what
was written since), and tombstones (a graceful stop, a removed schedule) remove rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamjobs import Settings, client
from streamjobs.index.follower import Follower
from streamjobs.index.queries import IndexReader
from streamjobs.metrics.heartbeat import Liveness, WorkerReport, encode_report
from streamjobs.scheduler import manage
from streamjobs.scheduler.state import Definition
from streamjobs.status import now_ms
from streamjobs.topics import queue_topics

pytestmark = pytest.mark.integration


def _follower(settings: Settings, path: Path) -> Follower:
    return Follower(settings.model_copy(update={"index_path": path}))


def _heartbeat(settings: Settings, worker_id: str, reported_at_ms: int | None) -> None:
    """What :class:`~streamjobs.metrics.heartbeat.Heartbeat` writes: a report, or (None) the
    tombstone of a graceful stop."""
    value = None
    if reported_at_ms is not None:
        report = WorkerReport(
            worker_id=worker_id, host="h", pid=1, version="0", queue=settings.queue, group="g",
            concurrency=1, started_at_ms=reported_at_ms - 1000, reported_at_ms=reported_at_ms,
            interval_ms=1000, partitions=1, in_flight=0, parked=0, started=0, succeeded=0,
            retried=0, dead_lettered=0,
        )  # fmt: skip
        value = encode_report(report)
    producer = client.new_producer(settings)
    topic = queue_topics(settings).workers
    client.produce_confirmed(producer, topic, [(worker_id.encode(), value)])


def test_heartbeats_are_followed_resumed_after_a_restart_and_a_graceful_stop_removes_a_worker(
    settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "index.db"
    topic = queue_topics(settings).workers
    now = now_ms()
    _heartbeat(settings, "w-1", now - 60_000)
    _heartbeat(settings, "w-2", now)
    _heartbeat(settings, "w-1", now)  # its latest: live again
    with _follower(settings, path) as follower:
        assert follower.catch_up().applied[topic] == 3
        applied = follower.store.offsets(topic)
    with IndexReader(path) as index:
        assert {v.report.worker_id: v.state for v in index.workers(now)} == {
            "w-1": Liveness.LIVE,
            "w-2": Liveness.LIVE,
        }
        # no heartbeat for more than three intervals: lost, judged when read
        assert {v.state for v in index.workers(now + 10_000)} == {Liveness.LOST}

    _heartbeat(settings, "w-2", None)  # w-2 stopped gracefully
    with _follower(settings, path) as again:  # a restart: the same file, a new process
        assert again.store.offsets(topic) == applied
        resumed = again.catch_up()
    assert (resumed.behind[topic], resumed.applied[topic]) == (1, 1)
    with IndexReader(path) as index:
        assert [v.report.worker_id for v in index.workers(now)] == ["w-1"]


def test_schedules_are_followed_as_the_cli_writes_them_and_resumed_after_a_restart(
    settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "index.db"
    topic = queue_topics(settings).schedules
    for name in ("nightly", "hourly"):
        definition = Definition(
            name=name, queue=settings.queue, task="Charge", args_json="{}",
            created_at_ms=now_ms(), updated_at_ms=now_ms(), every_s=3600,
        )  # fmt: skip
        manage.add(settings, definition)
    with _follower(settings, path) as follower:
        assert follower.catch_up().applied[topic] == 2
    with IndexReader(path) as index:
        assert {s.name: s.paused for s in index.schedules(settings.queue)} == {
            "hourly": False,
            "nightly": False,
        }
        assert index.schedules("another-queue") == []

    manage.set_paused(settings, "nightly", True)
    manage.remove(settings, "hourly")  # its pause switch and definition: two tombstones
    with _follower(settings, path) as again:
        resumed = again.catch_up()
    assert (resumed.behind[topic], resumed.applied[topic]) == (3, 3)
    with IndexReader(path) as index:
        [nightly] = index.schedules(settings.queue)
        assert (nightly.name, nightly.paused) == ("nightly", True)
        assert manage.summaries(settings) == [nightly]  # what reading Kafka says
