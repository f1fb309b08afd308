"""SIGKILL of an ``--exactly-once`` worker in the middle of a transaction.

The worker stages outcomes in memory and opens a transaction only inside each commit (statuses,
then the consumed offsets, then ``commit_transaction``), so a transaction is open a few percent
of the time. To kill one that is open, the test watches the status topic for records past the
last stable offset (an open transaction), freezes the worker with SIGSTOP, and SIGKILLs it only if
the transaction is still open while it is frozen; otherwise it lets the worker go on and tries
again. After the kill a new worker (a new ``transactional.id``: it contains the PID) finishes the
queue. Handler runs may repeat; ``read_committed`` readers must see every outcome exactly once.

The dead producer's transaction is aborted by the broker only after ``transaction.timeout.ms``
(librdkafka's default is 60 s); until then ``read_committed`` readers stop at it and the new
worker's offset fetch waits for it. The workers here set 10 s (``STREAMJOBS_KAFKA``).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

import tests.integration.conftest as integration
from streamjobs import Producer, Settings, TaskState
from streamjobs.status import decode_status
from streamjobs.topics import queue_topics
from tests.fault.crash_handlers import Work
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.fault, pytest.mark.slow]

REGISTRY = "tests.fault.crash_handlers:registry"
TASKS = 500
TRANSACTION_TIMEOUT_MS = 10_000
# a commit whose EndTxn was already sent when the worker froze completes in milliseconds
SETTLE_S = 0.2


@pytest.fixture
def settings(kafka_bootstrap: str, unique_prefix: str) -> Settings:
    return integration.build_settings(kafka_bootstrap, unique_prefix)


@pytest.fixture
def worker_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[integration.WorkerProcesses]:
    """Worker subprocesses whose transactions time out after 10 s instead of 60 s."""
    plain_env = integration.worker_env

    def env(settings: Settings) -> dict[str, str]:
        values = plain_env(settings)
        kafka = json.loads(values.get("STREAMJOBS_KAFKA", "{}"))
        kafka["transaction.timeout.ms"] = TRANSACTION_TIMEOUT_MS
        values["STREAMJOBS_KAFKA"] = json.dumps(kafka)
        return values

    monkeypatch.setattr(integration, "worker_env", env)
    procs = integration.WorkerProcesses(tmp_path)
    yield procs
    procs.stop_all()


class StatusTopic:
    """The status topic as ``read_committed`` and ``read_uncommitted`` readers see it."""

    def __init__(self, settings: Settings) -> None:
        self.topic = queue_topics(settings).status
        self.partitions = range(settings.partitions)
        self._readers = {
            isolation: Consumer(
                {
                    "bootstrap.servers": settings.bootstrap_servers,
                    "group.id": f"test-eos-{uuid.uuid4().hex[:8]}",
                    "isolation.level": isolation,
                    "enable.auto.commit": False,
                    "enable.partition.eof": False,
                }
            )
            for isolation in ("read_committed", "read_uncommitted")
        }

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()

    def _ends(self, isolation: str) -> dict[int, int]:
        reader = self._readers[isolation]
        return {
            p: reader.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10.0)[1]
            for p in self.partitions
        }

    def open_transaction(self) -> bool:
        """Records past the last stable offset: a transaction is open on some partition."""
        stable = self._ends("read_committed")
        return any(end > stable[p] for p, end in self._ends("read_uncommitted").items())

    def counts(self, isolation: str, timeout: float = 20.0) -> Counter[tuple[str, str]]:
        """Status records per (task id, state) up to the end this reader can see."""
        reader = self._readers[isolation]
        ends = {p: end for p, end in self._ends(isolation).items() if end > 0}
        reader.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in ends])
        counts: Counter[tuple[str, str]] = Counter()

        def read_to_end() -> bool:
            for message in reader.consume(500, timeout=0.2):
                value = message.value()
                if message.error() is None and value is not None:
                    view = decode_status(value)
                    counts[(view.task_id, view.state.value)] += 1
            for position in reader.position([TopicPartition(self.topic, p) for p in list(ends)]):
                if position.offset >= ends[position.partition]:
                    del ends[position.partition]
            return not ends

        try:
            wait_for(read_to_end, timeout, interval=0, message=f"{isolation} read of {self.topic}")
        finally:
            reader.unassign()
        return counts


@pytest.fixture
def status_topic(settings: Settings) -> Iterator[StatusTopic]:
    topic = StatusTopic(settings)
    yield topic
    topic.close()


def _succeeded(settings: Settings, task_ids: list[str]) -> int:
    views = integration.statuses(settings)
    return sum(
        1 for t in task_ids if (v := views.get(t)) is not None and v.state is TaskState.SUCCEEDED
    )


def _kill_inside_a_transaction(proc: subprocess.Popen[bytes], status: StatusTopic) -> int:
    """SIGKILL ``proc`` while one of its transactions is open; returns the attempts it took."""
    attempts = 0
    while True:
        attempts += 1
        wait_for(status.open_transaction, 30.0, interval=0, message="an open transaction")
        proc.send_signal(signal.SIGSTOP)
        # deadline polling on the LSO: frozen, the worker cannot commit what it has not sent
        deadline = time.monotonic() + SETTLE_S
        while status.open_transaction() and time.monotonic() < deadline:
            pass
        if status.open_transaction():
            proc.send_signal(signal.SIGKILL)
            proc.wait(10.0)
            return attempts
        proc.send_signal(signal.SIGCONT)  # the commit was already on its way: try the next one


def test_sigkill_during_a_transaction_leaves_each_status_exactly_once_for_read_committed(
    settings: Settings,
    worker_process: integration.WorkerProcesses,
    status_topic: StatusTopic,
) -> None:
    main = queue_topics(settings).main
    first = worker_process.start(settings, REGISTRY, "--exactly-once", concurrency=2)
    tasks = [Work(n=n, ms=40) for n in range(TASKS)]
    with Producer(settings) as producer:
        handles = producer.submit_many(tasks, keys=[f"key-{n % 50}" for n in range(TASKS)])
    task_ids = [h.task_id for h in handles]
    wait_for(
        lambda: _succeeded(settings, task_ids) >= 50,
        60.0,
        interval=0.2,
        message="a first part of the tasks to succeed",
    )

    attempts = _kill_inside_a_transaction(first, status_topic)
    assert first.returncode == -signal.SIGKILL
    done_at_kill = _succeeded(settings, task_ids)
    assert done_at_kill < TASKS, "the kill did not land mid-run"

    killed_at = time.monotonic()
    second = worker_process.start(settings, REGISTRY, "--exactly-once", concurrency=4)
    wait_for(
        lambda: _succeeded(settings, task_ids) == TASKS,
        90.0,
        interval=0.5,
        message="every task to end succeeded",
    )
    recovery_s = time.monotonic() - killed_at
    assert second.poll() is None, worker_process.log_of(second)

    committed = status_topic.counts("read_committed")
    succeeded = Counter({t: n for (t, s), n in committed.items() if s == "succeeded"})
    duplicated = {t: n for t, n in succeeded.items() if n != 1}
    assert set(succeeded) == set(task_ids)
    assert duplicated == {}, f"{len(duplicated)} tasks have several committed succeeded records"
    assert all(s != "dead_lettered" for _, s in committed)
    ends: dict[int, int] = {}
    for handle in handles:
        ends[handle.partition] = max(ends.get(handle.partition, 0), handle.offset + 1)
    committed_offsets = integration.committed_offsets(settings, main)
    assert {p: committed_offsets[p] for p in ends} == ends

    # the kill did land inside a transaction: its records are on the log, aborted, and only a
    # read_uncommitted reader sees them (with the handler reruns they caused)
    everything = status_topic.counts("read_uncommitted")
    aborted = everything - committed
    reruns = sum(n - 1 for (_, s), n in everything.items() if s == "succeeded" and n > 1)
    facts: dict[str, Any] = {
        "kill_attempts": attempts,
        "succeeded_at_kill": done_at_kill,
        "aborted_records": sum(aborted.values()),
        "rerun_handlers": reruns,
        "recovery_s": round(recovery_s, 1),
    }
    assert aborted, facts
