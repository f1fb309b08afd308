"""Killing and stopping ``streamjobs consume`` processes: nothing is lost, stops are clean.

Workers run as real subprocesses (``python -m streamjobs.cli consume``) with the handlers of
``tests/fault/handlers.py``; every fact checked is read from Kafka.
"""

from __future__ import annotations

import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamjobs import Producer, Settings, TaskState
from streamjobs.status import decode_status
from streamjobs.topics import queue_topics
from tests.fault.handlers import Sleepy, Slow
from tests.integration.conftest import (
    WorkerProcesses,
    build_settings,
    committed_offset,
    committed_offsets,
    group_assignment,
    latest,
    read_topic,
    state_of,
    statuses,
)
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.fault, pytest.mark.slow]

REGISTRY = "tests.fault.handlers:registry"


@pytest.fixture
def settings(kafka_bootstrap: str, unique_prefix: str) -> Settings:
    return build_settings(kafka_bootstrap, unique_prefix)


@pytest.fixture
def worker_process(tmp_path: Path) -> Iterator[WorkerProcesses]:
    procs = WorkerProcesses(tmp_path)
    yield procs
    procs.stop_all()


def _succeeded(settings: Settings, task_ids: list[str]) -> int:
    views = statuses(settings)
    return sum(
        1 for t in task_ids if (v := views.get(t)) is not None and v.state is TaskState.SUCCEEDED
    )


def test_worker_killed_with_sigkill_mid_run_loses_no_task(
    settings: Settings, worker_process: WorkerProcesses
) -> None:
    main = queue_topics(settings).main
    first = worker_process.start(settings, REGISTRY, concurrency=2)
    tasks = [Sleepy(key=f"key-{n % 40}", seq=n) for n in range(2000)]
    with Producer(settings) as producer:
        handles = producer.submit_many(tasks, keys=[t.key for t in tasks])
    task_ids = [h.task_id for h in handles]

    wait_for(
        lambda: sum(max(0, o) for o in committed_offsets(settings, main).values()) >= 200,
        60.0,
        message="a first part of the tasks to be committed",
    )
    first.send_signal(signal.SIGKILL)
    assert first.wait(10.0) == -signal.SIGKILL
    done_at_kill = _succeeded(settings, task_ids)
    assert 0 < done_at_kill < len(task_ids), "the kill did not land mid-run"

    second = worker_process.start(settings, REGISTRY, concurrency=4)
    wait_for(
        lambda: _succeeded(settings, task_ids) == len(task_ids),
        120.0,
        interval=0.5,
        message="every submitted task to end succeeded",
    )
    assert second.poll() is None, worker_process.log_of(second)
    # duplicates are allowed (at least once) but bounded by what was in flight at the kill
    runs = Counter(
        view.task_id
        for record in read_topic(settings, queue_topics(settings).status)
        if record.value is not None
        and (view := decode_status(record.value)).state is TaskState.RUNNING
    )
    assert set(runs) == set(task_ids)
    reruns = sum(count - 1 for count in runs.values())
    assert reruns <= settings.max_in_flight


def test_sigterm_lets_the_worker_finish_its_task_commit_and_exit_0(
    settings: Settings, worker_process: WorkerProcesses
) -> None:
    main = queue_topics(settings).main
    proc = worker_process.start(settings, REGISTRY)
    with Producer(settings) as producer:
        handle = producer.submit(Slow(seconds=2.0), key="slow")
    wait_for(
        lambda: state_of(settings, handle.task_id) == "running",
        30.0,
        message="the slow task to be running",
    )

    proc.send_signal(signal.SIGTERM)

    try:
        code = proc.wait(30.0)
    except subprocess.TimeoutExpired:
        pytest.fail(f"worker did not exit after SIGTERM:\n{worker_process.log_of(proc)}")
    assert code == 0, worker_process.log_of(proc)
    view = latest(settings, handle.task_id)
    assert view is not None
    assert view.state is TaskState.SUCCEEDED
    assert view.result == "finished"
    assert committed_offset(settings, main, handle.partition) > handle.offset
    assert group_assignment(settings) == {}  # it left the group instead of timing out
