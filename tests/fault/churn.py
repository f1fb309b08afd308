"""Group churn under load: ``streamjobs consume`` processes come and go while tasks flow.

Drives the handover fault tests and ``bench/handover.py``: submits ``Logged`` tasks at a steady
pace while, every ``every_s``, one worker process leaves (SIGTERM: a graceful handover, or
SIGKILL: a crash) and a new one starts. Returns what the execution log says happened.
"""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from streamjobs import Producer, Settings
from tests.fault.executions import Figures, read_executions
from tests.fault.handlers import Logged
from tests.integration.conftest import WorkerProcesses, all_succeeded
from tests.support import wait_for

REGISTRY = "tests.fault.handlers:registry"


@dataclass
class Churn:
    workers: int = 3  # processes running at any time
    tasks: int = 1000
    keys: int = 40
    task_ms: int = 10
    flow_s: float = 10.0  # tasks are submitted evenly over this long
    every_s: float = 2.0  # one worker leaves (and one starts) this often while tasks flow
    changes: int = 5  # at most this many leave, while tasks are left to run
    kill: bool = False  # SIGKILL instead of SIGTERM
    concurrency: int = 1


@dataclass
class Outcome:
    figures: Figures
    expected: set[tuple[str, int]]
    changes: int  # workers stopped or killed
    at_kill: int  # executions cut short by a SIGKILL (started, never finished)
    kills: dict[int, int]  # pid -> when it was killed (time.monotonic_ns, as the handlers log)
    exit_codes: list[int | None]  # of the workers stopped with SIGTERM
    kill: bool
    commit_warnings: list[str]  # WARNING lines of the workers' logs about commits

    @property
    def lost(self) -> set[tuple[str, int]]:
        return self.figures.lost(self.expected)

    def summary(self) -> str:
        per = self.figures.reruns / self.changes if self.changes else 0.0
        if self.kill:
            lag = self.figures.finish_to_kill_ms(self.kills)
            changes = (
                f"kills {self.changes} ({per:.1f} re-executions each), running at a kill "
                f"{self.at_kill}, re-run after finishing at most {lag:.0f} ms before a kill"
            )
        else:
            changes = f"stops {self.changes} ({per:.1f} re-executions each)"
        return (
            f"tasks {len(self.expected)}, executions {len(self.figures.executions)}, "
            f"lost {len(self.lost)}, re-executions {self.figures.reruns}, {changes}, "
            f"order violations {len(self.figures.order_violations())}, "
            f"same-key overlaps {len(self.figures.overlaps())}, "
            f"commit warnings {len(self.commit_warnings)}"
        )


def run_churn(settings: Settings, procs: WorkerProcesses, log: Path, plan: Churn) -> Outcome:
    def start() -> subprocess.Popen[bytes]:
        return procs.start(settings, REGISTRY, concurrency=plan.concurrency)

    running = [start() for _ in range(plan.workers)]
    tasks = _tasks(plan, log)
    submitted: list[str] = []
    flowing = threading.Event()
    flowing.set()

    def submit() -> None:
        batches = max(1, int(plan.flow_s / 0.1))
        size = -(-len(tasks) // batches)
        with Producer(settings) as producer:
            began = time.monotonic()
            for i in range(0, len(tasks), size):
                batch = tasks[i : i + size]
                handles = producer.submit_many(batch, keys=[t.key for t in batch])
                submitted.extend(h.task_id for h in handles)
                pause = began + (i // size + 1) * 0.1 - time.monotonic()
                if pause > 0:
                    time.sleep(pause)  # pacing the flow, not synchronising
        flowing.clear()

    submitter = threading.Thread(target=submit, name="submitter", daemon=True)
    # the first workers are in the group before the flow starts
    wait_for(lambda: log.exists() or _members_up(procs, running), 60.0, message="workers up")
    submitter.start()
    expected = {(t.key, t.seq) for t in tasks}
    kills: dict[int, int] = {}
    gone = _churn(plan, running, start, log, expected, flowing, kills)
    submitter.join(60.0)
    wait_for(
        lambda: not read_executions(log).lost(expected),
        120.0,
        interval=0.5,
        message="every task to finish an execution",
    )
    wait_for(
        lambda: all_succeeded(settings, submitted),
        60.0,
        interval=0.5,
        message="every task to be succeeded on the status topic",
    )
    exit_codes = [] if plan.kill else [_exit_code(proc) for proc in gone]
    figures = read_executions(log)
    at_kill = sum(1 for e in figures.executions if e.end_ns is None and e.pid in kills)
    warnings = [
        line
        for proc in [*gone, *running]
        for line in procs.log_of(proc).splitlines()
        if "WARNING" in line and "commit" in line
    ]
    return Outcome(figures, expected, len(gone), at_kill, kills, exit_codes, plan.kill, warnings)


def _tasks(plan: Churn, log: Path) -> list[Logged]:
    """Keys drawn with a skew (a few keys hold most tasks), as in real queues: per-key turns in
    the executor then finish later offsets of the light keys before earlier ones of the heavy
    keys, so much is done past each partition's contiguous commit."""
    rng = random.Random(plan.tasks)
    seqs: dict[str, int] = {}
    tasks = []
    for _ in range(plan.tasks):
        key = f"key-{int(plan.keys * rng.random() ** 2)}"
        seqs[key] = seqs.get(key, -1) + 1
        tasks.append(Logged(key=key, seq=seqs[key], ms=plan.task_ms, log=str(log)))
    return tasks


def _churn(
    plan: Churn,
    running: list[subprocess.Popen[bytes]],
    start: Callable[[], subprocess.Popen[bytes]],
    log: Path,
    expected: set[tuple[str, int]],
    flowing: threading.Event,
    kills: dict[int, int],
) -> list[subprocess.Popen[bytes]]:
    """Every ``every_s``, the oldest worker leaves and a new one starts, while tasks are left
    to run (up to ``plan.changes`` times); returns the workers that left and notes in ``kills``
    when each killed one was."""
    gone: list[subprocess.Popen[bytes]] = []
    while len(gone) < plan.changes:
        time.sleep(plan.every_s)  # the churn pace
        if not flowing.is_set() and not read_executions(log).lost(expected):
            break
        leaving = running.pop(0)
        if plan.kill:
            kills[leaving.pid] = time.monotonic_ns()
            leaving.send_signal(signal.SIGKILL)
            leaving.wait(10.0)
        else:
            leaving.send_signal(signal.SIGTERM)
        gone.append(leaving)
        running.append(start())
    return gone


def _exit_code(proc: subprocess.Popen[bytes]) -> int | None:
    try:
        return proc.wait(30.0)
    except subprocess.TimeoutExpired:
        return None


def _members_up(procs: WorkerProcesses, running: list[subprocess.Popen[bytes]]) -> bool:
    """Each worker has logged that it runs (``consume`` prints its id once started)."""
    return all("worker " in procs.log_of(p) for p in running)
