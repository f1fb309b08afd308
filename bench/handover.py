"""Handovers under load: re-executed tasks when workers leave gracefully, and per SIGKILL.

    python bench/handover.py [--tasks 5000] [--workers 3] [--every 2] [--task-ms 15]

Two runs against ``streamjobs consume`` subprocesses (the ``Logged`` handler of
``tests/fault/handlers.py``, which logs every execution's start and end to a file):

- storm: every ``--every`` seconds one worker is stopped with SIGTERM and a new one starts,
  while ``--tasks`` tasks flow; a graceful handover should re-run nothing;
- churn: the same with SIGKILL; re-executions per kill should stay within what was running at
  the kill plus outcomes written but not yet acknowledged.

Prints tasks lost, re-executions and the per-stop / per-kill figures. Uses
KAFKA_BOOTSTRAP_SERVERS if set, else starts the local broker.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamjobs.dev.kafka import given_or_local
from tests.fault.churn import Churn, run_churn
from tests.integration.conftest import WorkerProcesses, build_settings


def run(bootstrap: str, plan: Churn, label: str, commit_interval: str, keep: bool) -> None:
    settings = build_settings(
        bootstrap, f"hand{uuid.uuid4().hex[:6]}", partitions=6, commit_interval=commit_interval
    )
    with tempfile.TemporaryDirectory(prefix="handover-") as scratch:
        tmp = tempfile.mkdtemp(prefix="handover-") if keep else scratch
        procs = WorkerProcesses(Path(tmp))
        began = time.monotonic()
        try:
            outcome = run_churn(settings, procs, Path(tmp) / "executions.log", plan)
        finally:
            procs.stop_all()
        print(f"{label}: {outcome.summary()} in {time.monotonic() - began:.0f}s", flush=True)
        for line in outcome.commit_warnings[:10]:
            print(f"  {line}")
        late = outcome.figures.unexplained_reruns(outcome.kills, 1_000_000_000)
        for line in late[:10]:
            print(f"  not explained by a kill: {line}")
        if keep:
            print(f"  execution log and worker logs kept in {tmp}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--every", type=float, default=2.0)
    parser.add_argument("--task-ms", type=int, default=15)
    parser.add_argument("--flow", type=float, default=10.0, help="seconds the tasks flow for")
    parser.add_argument("--changes", type=int, default=10, help="workers stopped or killed")
    parser.add_argument("--only", choices=["storm", "churn"])
    parser.add_argument("--keep", action="store_true", help="keep the logs")
    parser.add_argument("--commit-interval", default="20ms", help="the workers' setting")
    args = parser.parse_args()
    with given_or_local(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")) as bootstrap:
        common = dict(
            workers=args.workers,
            tasks=args.tasks,
            task_ms=args.task_ms,
            flow_s=args.flow,
            every_s=args.every,
            changes=args.changes,
        )
        if args.only != "churn":
            storm = Churn(**common, concurrency=4)
            run(bootstrap, storm, "storm (SIGTERM)", args.commit_interval, args.keep)
        if args.only != "storm":
            churn = Churn(**common, kill=True, concurrency=1)
            run(bootstrap, churn, "churn (SIGKILL)", args.commit_interval, args.keep)


if __name__ == "__main__":
    main()
