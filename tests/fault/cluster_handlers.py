"""The task run by ``streamjobs consume`` subprocesses in the broker-fault tests.

Loaded as ``tests.fault.cluster_handlers:registry``. Each run appends ``<time> <key> <seq>`` to
the file the task names (one short ``O_APPEND`` write per run, so lines from two worker
processes never interleave): the test reads the order in which each key's tasks ran, and how
often each ran, from it.
"""

from __future__ import annotations

import time

from streamjobs import Task, TaskRegistry


class Step(Task):
    """One step of a key's sequence; ``runs`` is the file every run is appended to."""

    key: str
    seq: int
    runs: str


registry = TaskRegistry()


@registry.handler(Step)
def step(task: Step) -> int:
    with open(task.runs, "a", encoding="ascii") as runs:
        runs.write(f"{time.time():.3f} {task.key} {task.seq}\n")
    return task.seq
