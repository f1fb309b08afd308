"""Handovers under load, with ``streamjobs consume`` processes: a graceful one (SIGTERM, or a
revoke as workers join) re-runs nothing; a SIGKILL re-runs only what was running or finishing.

Every execution is logged by the ``Logged`` handler (``tests/fault/handlers.py``) to one file
shared by the processes; the figures are printed (``pytest -s``). ``bench/handover.py`` runs
the same at a larger size.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fault.churn import Churn, run_churn
from tests.integration.conftest import WorkerProcesses, build_settings

pytestmark = [pytest.mark.integration, pytest.mark.fault, pytest.mark.slow]

# a task that finished just before a SIGKILL may run again: its outcome was not acknowledged
# yet, or its commit (every 20 ms) not sent or not acknowledged. On a loaded 2-core machine
# acknowledgements took up to ~350 ms; before commit metadata, tasks finished seconds before
# the kill ran again
FINISHING_WINDOW_NS = 1_000_000_000


@pytest.fixture
def worker_process(tmp_path: Path) -> Iterator[WorkerProcesses]:
    procs = WorkerProcesses(tmp_path)
    yield procs
    procs.stop_all()


def test_workers_stopping_and_joining_every_two_seconds_rerun_no_task(
    kafka_bootstrap: str, unique_prefix: str, worker_process: WorkerProcesses, tmp_path: Path
) -> None:
    settings = build_settings(kafka_bootstrap, unique_prefix, partitions=6)
    # submitted faster than three workers run them: each stop leaves queued tasks behind
    # finished ones of other keys, which the next owner must not run again
    plan = Churn(
        workers=3, tasks=2400, task_ms=10, flow_s=4.0, every_s=2.0, changes=4, concurrency=4
    )

    outcome = run_churn(settings, worker_process, tmp_path / "executions.log", plan)

    print(f"\nrebalance storm: {outcome.summary()}")
    assert outcome.changes >= 2, "the tasks ran out before the storm"
    assert not outcome.lost
    assert outcome.figures.order_violations() == []
    assert outcome.figures.overlaps() == []
    assert outcome.exit_codes == [0] * outcome.changes
    reruns = {task: n for task, n in outcome.figures.runs.items() if n > 1}
    assert outcome.figures.reruns == 0, f"ran more than once: {sorted(reruns)[:10]}"


def test_sigkill_churn_reruns_only_what_was_running_or_just_finished_at_each_kill(
    kafka_bootstrap: str, unique_prefix: str, worker_process: WorkerProcesses, tmp_path: Path
) -> None:
    settings = build_settings(kafka_bootstrap, unique_prefix, partitions=6, commit_interval="20ms")
    plan = Churn(workers=3, tasks=1500, task_ms=15, flow_s=4.0, every_s=2.5, changes=5, kill=True)

    outcome = run_churn(settings, worker_process, tmp_path / "executions.log", plan)

    print(f"\nSIGKILL churn: {outcome.summary()}")
    assert outcome.changes >= 3, "the tasks ran out before the churn"
    assert not outcome.lost
    assert outcome.figures.order_violations() == []
    late = outcome.figures.unexplained_reruns(outcome.kills, FINISHING_WINDOW_NS)
    assert late == [], f"{outcome.summary()}: {late[:10]}"
