"""Task types and the registry run by ``streamjobs consume`` subprocesses in the fault tests.

Loaded by the worker process as ``tests.fault.handlers:registry`` (named on its command line).
Handlers sleep as their work, so a test can kill a worker while tasks are in flight.
"""

from __future__ import annotations

import time

from streamjobs import Task, TaskRegistry


class Sleepy(Task):
    """A short task: ``ms`` milliseconds of work; returns its sequence number."""

    key: str
    seq: int
    ms: int = 5


class Slow(Task):
    """A long task, for stopping a worker while it runs."""

    seconds: float


registry = TaskRegistry()


@registry.handler(Sleepy)
def sleepy(task: Sleepy) -> int:
    time.sleep(task.ms / 1000)
    return task.seq


@registry.handler(Slow)
def slow(task: Slow) -> str:
    time.sleep(task.seconds)
    return "finished"
