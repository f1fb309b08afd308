"""``streamjobs consume --processes N``: a supervisor keeping N worker processes in one group.

The supervisor and its children are real processes against the real broker; children are found
by their parent PID in ``/proc``. Every fact about tasks is read from Kafka.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from streamjobs import Producer, Settings, TaskState
from streamjobs.status import decode_status
from streamjobs.topics import queue_topics
from tests.fault.handlers import Sleepy
from tests.integration.conftest import (
    WorkerProcesses,
    all_succeeded,
    build_settings,
    group_assignment,
    read_topic,
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


def children_of(pid: int) -> set[int]:
    """PIDs whose parent is ``pid`` (read from /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            found.add(int(stat.parent.name))
    return found


def replaced(supervisor: int, known: frozenset[int]) -> bool:
    """One child of ``supervisor`` is new (not in ``known``)."""
    return len(children_of(supervisor) - known) == 1


def members(settings: Settings) -> int:
    try:
        return len(group_assignment(settings))
    except TimeoutError:
        return 0


def two_workers_in_the_group(settings: Settings, supervisor: int) -> set[int]:
    wait_for(lambda: len(children_of(supervisor)) == 2, 30.0, message="two worker processes")
    wait_for(lambda: members(settings) == 2, 60.0, interval=0.5, message="two group members")
    return children_of(supervisor)


def test_a_killed_worker_process_is_restarted_and_sigterm_stops_them_all_with_exit_0(
    settings: Settings, worker_process: WorkerProcesses
) -> None:
    supervisor = worker_process.start(settings, REGISTRY, "--processes", "2")
    first = two_workers_in_the_group(settings, supervisor.pid)

    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    wait_for(
        lambda: len(children_of(supervisor.pid) - first) == 1,
        30.0,
        message="a new worker process in place of the killed one",
    )
    (new,) = children_of(supervisor.pid) - first
    log = worker_process.log_of(supervisor)
    assert f"(pid {victim}) exited with SIGKILL; restarting it in" in log
    # its banner comes once its signal handlers are installed
    wait_for(
        lambda: f"worker vm-{new}-" in worker_process.log_of(supervisor),
        60.0,
        message="the new worker process to start its worker",
    )

    supervisor.send_signal(signal.SIGTERM)
    try:
        code = supervisor.wait(60.0)
    except subprocess.TimeoutExpired:
        pytest.fail(f"supervisor did not stop:\n{worker_process.log_of(supervisor)}")
    assert code == 0, worker_process.log_of(supervisor)
    assert not children_of(supervisor.pid)
    # every child left the group; the SIGKILLed one's membership expires with its session
    wait_for(lambda: group_assignment(settings) == {}, 20.0, message="an empty group")


def test_a_rolling_restart_loses_nothing_and_reruns_at_most_what_was_running(
    settings: Settings, worker_process: WorkerProcesses
) -> None:
    supervisor = worker_process.start(settings, REGISTRY, "--processes", "2")
    before = two_workers_in_the_group(settings, supervisor.pid)
    tasks = [Sleepy(key=f"key-{n % 24}", seq=n, ms=10) for n in range(800)]
    with Producer(settings) as producer:
        handles = producer.submit_many(tasks, keys=[t.key for t in tasks])
    task_ids = [h.task_id for h in handles]

    seen = set(before)
    for old in sorted(before):  # one process at a time, while tasks flow
        os.kill(old, signal.SIGTERM)
        wait_for(
            partial(replaced, supervisor.pid, frozenset(seen)),
            60.0,
            message=f"a worker process started in place of pid {old}",
        )
        seen |= children_of(supervisor.pid)
        wait_for(lambda: members(settings) == 2, 60.0, interval=0.5, message="two members")

    wait_for(lambda: all_succeeded(settings, task_ids), 120.0, interval=0.5, message="all done")
    runs = Counter(
        view.task_id
        for record in read_topic(settings, queue_topics(settings).status)
        if record.value is not None
        and (view := decode_status(record.value)).state is TaskState.RUNNING
    )
    reruns = sum(count - 1 for count in runs.values())
    print(f"\n[rolling restart] {len(task_ids)} tasks, lost 0, re-runs {reruns}")
    # a graceful stop finishes what runs (concurrency 1 per process) and commits it
    assert reruns <= len(before)
