"""Crash-loop quarantine with real ``streamjobs consume`` processes.

A task that kills its worker (``os._exit``) must end in the dead-letter topic with reason
``crash_loop`` after at most ``crash_limit + 1`` crashes instead of crash-looping the group, and
an ordinary SIGTERM handover must not make the next owner suspect anything, and a poison task
far past the committed offset (behind a task that holds the commit) must be counted too. Workers
run the handlers of ``tests/fault/crash_handlers.py``; the test restarts them, as a supervisor
would.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import tests.integration.conftest as integration
from streamjobs import Producer, Settings, TaskState
from streamjobs.status import decode_status
from streamjobs.topics import queue_topics
from tests.fault.crash_handlers import FailOnce, Poison, Work
from tests.integration.conftest import (
    WorkerProcesses,
    build_settings,
    committed_offset,
    dead_letters,
    read_topic,
    state_of,
    statuses,
)
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.fault, pytest.mark.slow]

REGISTRY = "tests.fault.crash_handlers:registry"
EXIT_CODE = 3
SUSPECT_LOG = "lost their owner abruptly"
# outlasts four restarts (~43 s here, more on a loaded machine) with room to spare: each restart
# waits out the dead member's 10 s broker-side session
HELD_RETRY_TIER = "90s"


@pytest.fixture
def settings(kafka_bootstrap: str, unique_prefix: str) -> Settings:
    """One partition, so the poison task blocks every task behind it until it is quarantined.

    ``crash_limit`` stays at its default (3) here and in the workers (``worker_env`` passes none).
    """
    return build_settings(kafka_bootstrap, unique_prefix, partitions=1)


@pytest.fixture
def worker_process(tmp_path: Path) -> Iterator[WorkerProcesses]:
    procs = WorkerProcesses(tmp_path)
    yield procs
    procs.stop_all()


def _succeeded(settings: Settings, task_ids: list[str]) -> bool:
    views = statuses(settings)
    return all((v := views.get(t)) is not None and v.state is TaskState.SUCCEEDED for t in task_ids)


def _stop(procs: WorkerProcesses, proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(30.0)
    except subprocess.TimeoutExpired:
        pytest.fail(f"worker did not exit after SIGTERM:\n{procs.log_of(proc)}")


def _start_until_crash_or_quarantine(
    procs: WorkerProcesses, settings: Settings, poison_id: str
) -> subprocess.Popen[bytes]:
    """Start a worker; return once it died or has dead-lettered the poison task."""
    proc = procs.start(settings, REGISTRY)
    _crashed_before_quarantine(proc, settings, poison_id)
    return proc


def _crashed_before_quarantine(
    proc: subprocess.Popen[bytes], settings: Settings, poison_id: str
) -> bool:
    """Wait until the worker died (True) or has dead-lettered the poison task (False)."""

    def crashed_or_quarantined() -> bool:
        return proc.poll() is not None or state_of(settings, poison_id) == "dead_lettered"

    wait_for(
        crashed_or_quarantined,
        60.0,
        interval=0.2,
        message="the worker to crash or the poison task to be quarantined",
    )
    return proc.poll() is not None


def test_task_that_kills_its_worker_is_dead_lettered_as_crash_loop_after_crash_limit_restarts(
    settings: Settings, worker_process: WorkerProcesses
) -> None:
    main = queue_topics(settings).main
    with Producer(settings) as producer:
        poison = producer.submit(Poison(exit_code=EXIT_CODE), key="poison")
        others = producer.submit_many(
            [Work(n=n) for n in range(1, 20)], keys=[f"k{n}" for n in range(1, 20)]
        )
    other_ids = [h.task_id for h in others]

    crashes = 0
    while True:
        proc = _start_until_crash_or_quarantine(worker_process, settings, poison.task_id)
        if proc.poll() is None:
            break
        assert proc.returncode == EXIT_CODE, worker_process.log_of(proc)
        crashes += 1
        assert crashes <= settings.crash_limit + 1, (
            f"still crash-looping after {crashes} crashes:\n{worker_process.log_of(proc)}"
        )

    assert 1 <= crashes <= settings.crash_limit + 1
    wait_for(
        lambda: _succeeded(settings, other_ids),
        30.0,
        interval=0.2,
        message="the tasks behind the poison to succeed",
    )
    dead = [d for d in dead_letters(settings) if d["task_id"] == poison.task_id]
    assert len(dead) == 1
    original = next(r for r in read_topic(settings, main) if r.offset == poison.offset)
    assert dead[0]["reason"] == "crash_loop"
    assert (dead[0]["origin_topic"], dead[0]["origin_offset"]) == (main, poison.offset)
    assert dead[0]["original_value"] == original.value
    assert not dead[0]["truncated"]
    assert _stop(worker_process, proc) == 0, worker_process.log_of(proc)


def test_graceful_handover_marks_no_task_suspect(
    kafka_bootstrap: str, unique_prefix: str, worker_process: WorkerProcesses
) -> None:
    settings = build_settings(kafka_bootstrap, unique_prefix)  # three partitions
    names = queue_topics(settings)
    first = worker_process.start(settings, REGISTRY)
    with Producer(settings) as producer:
        before = producer.submit_many(
            [Work(n=n) for n in range(15)], keys=[f"k{n}" for n in range(15)]
        )
        wait_for(
            lambda: _succeeded(settings, [h.task_id for h in before]),
            30.0,
            interval=0.2,
            message="the first worker's tasks to succeed",
        )
        assert _stop(worker_process, first) == 0, worker_process.log_of(first)

        second = worker_process.start(settings, REGISTRY)
        after = producer.submit_many(
            [Work(n=n) for n in range(15, 30)], keys=[f"k{n}" for n in range(15)]
        )
    wait_for(
        lambda: _succeeded(settings, [h.task_id for h in after]),
        30.0,
        interval=0.2,
        message="the second worker's tasks to succeed",
    )

    assert SUSPECT_LOG not in worker_process.log_of(second)
    owners: dict[bytes, list[bytes | None]] = {}
    counted: list[tuple[bytes | None, bytes | None]] = []  # start counts and their tombstones
    for record in read_topic(settings, names.starts):
        if record.key is not None and record.key.startswith(b"owner:"):
            owners.setdefault(record.key, []).append(record.value)
        elif record.key is None or not record.key.startswith(b"lease:"):  # a lease counts nothing
            counted.append((record.key, record.value))
    # each main partition: taken and released by the first worker, then taken by the second
    for partition in range(settings.partitions):
        assert owners[f"owner:{names.main}:{partition}".encode()] == [
            b"active",
            b"released",
            b"active",
        ]
    assert counted == []  # no start of any record was counted


def _pass_ordering_to_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """``worker_env`` passes neither ``ordering`` nor ``max_in_flight``: add both."""
    plain_env = integration.worker_env

    def env(settings: Settings) -> dict[str, str]:
        values = plain_env(settings)
        values["STREAMJOBS_ORDERING"] = settings.ordering
        values["STREAMJOBS_MAX_IN_FLIGHT"] = str(settings.max_in_flight)
        return values

    monkeypatch.setattr(integration, "worker_env", env)


def _key_history(settings: Settings, task_ids: list[str]) -> list[tuple[str, TaskState]]:
    """What the workers wrote for these tasks, in the order written (one status partition)."""
    topic = queue_topics(settings).status
    views = [decode_status(r.value) for r in read_topic(settings, topic) if r.value is not None]
    return [
        (v.task_id, v.state)
        for v in views
        if v.task_id in task_ids and v.state is not TaskState.QUEUED
    ]


def test_poison_task_far_past_a_commit_held_by_parked_tasks_is_quarantined_while_they_wait(
    kafka_bootstrap: str,
    unique_prefix: str,
    worker_process: WorkerProcesses,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    settings = build_settings(
        kafka_bootstrap,
        unique_prefix,
        partitions=1,
        ordering="key_ordered",
        retry_tiers=HELD_RETRY_TIER,
        max_in_flight=2,
    )
    _pass_ordering_to_workers(monkeypatch)
    main = queue_topics(settings).main
    with Producer(settings) as producer:
        # key a: the first task goes to the long tier; the next ones park behind it, and the
        # first of them holds the committed offset until the retry has run
        held = producer.submit(FailOnce(marker=str(tmp_path / "held-failed"), n=0), key="a")
        parked = producer.submit_many([Work(n=n) for n in range(1, 6)], keys=["a"] * 5)
        before = producer.submit_many([Work(n=n) for n in range(20)], keys=["b"] * 20)
        proc = worker_process.start(settings, REGISTRY)
        commit_held = parked[0].offset

        def behind_the_held_commit() -> bool:
            return (
                state_of(settings, held.task_id) == "retry_scheduled"
                and _succeeded(settings, [h.task_id for h in before])
                and committed_offset(settings, main, 0) == commit_held
            )

        wait_for(
            behind_the_held_commit,
            30.0,
            interval=0.2,
            message="key b's tasks to succeed while key a's parked tasks hold the commit",
        )
        poison = producer.submit(Poison(exit_code=EXIT_CODE), key="b")
        after = producer.submit_many([Work(n=n) for n in range(20, 30)], keys=["b"] * 10)
    assert poison.offset - commit_held > 2 * settings.max_in_flight, "outside the default window"

    crashes = 0
    while _crashed_before_quarantine(proc, settings, poison.task_id):
        assert proc.returncode == EXIT_CODE, worker_process.log_of(proc)
        crashes += 1
        assert crashes <= settings.crash_limit + 1, (
            f"still crash-looping after {crashes} crashes:\n{worker_process.log_of(proc)}"
        )
        proc = worker_process.start(settings, REGISTRY)

    # quarantined while key a still waits for its retry: the commit never moved past the
    # first parked task, so only the dead workers' leases can have made the poison task suspect
    views = statuses(settings)
    assert views[held.task_id].state is TaskState.RETRY_SCHEDULED
    assert [views[h.task_id].state for h in parked] == [TaskState.QUEUED] * len(parked)
    assert committed_offset(settings, main, 0) == commit_held
    assert 1 <= crashes <= settings.crash_limit + 1
    assert SUSPECT_LOG in worker_process.log_of(proc)

    key_a = [held.task_id, *(h.task_id for h in parked)]
    wait_for(
        lambda: _succeeded(settings, [*key_a, *(h.task_id for h in [*before, *after])]),
        90.0,
        interval=0.5,
        message="key a's retry to release its parked tasks and every task to succeed",
    )
    expected = [
        (held.task_id, TaskState.RUNNING),
        (held.task_id, TaskState.RETRY_SCHEDULED),
        (held.task_id, TaskState.RUNNING),
        (held.task_id, TaskState.SUCCEEDED),
    ]
    for handle in parked:  # each starts only once the one before it succeeded
        expected += [(handle.task_id, TaskState.RUNNING), (handle.task_id, TaskState.SUCCEEDED)]
    assert _key_history(settings, key_a) == expected
    dead = dead_letters(settings)
    assert [(d["task_id"], d["reason"]) for d in dead] == [(poison.task_id, "crash_loop")]
    assert (dead[0]["origin_topic"], dead[0]["origin_offset"]) == (main, poison.offset)
    assert _stop(worker_process, proc) == 0, worker_process.log_of(proc)
