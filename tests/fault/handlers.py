"""Task types and the registry run by ``streamjobs consume`` subprocesses in the fault tests.

Loaded by the worker process as ``tests.fault.handlers:registry`` (named on its command line).
Handlers sleep as their work, so a test can kill a worker while tasks are in flight.
"""

from __future__ import annotations

import os
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


class Logged(Task):
    """A short task that appends its start and end to the file ``log`` (shared by every worker
    process), so a test counts executions, per-key order and overlaps across processes."""

    key: str
    seq: int
    ms: int = 5
    log: str


@registry.handler(Logged)
def logged(task: Logged) -> int:
    # one O_APPEND write per line: lines of concurrent processes never interleave
    fd = os.open(task.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"S {task.key} {task.seq} {os.getpid()} {time.monotonic_ns()}\n".encode())
        time.sleep(task.ms / 1000)
        os.write(fd, f"E {task.key} {task.seq} {os.getpid()} {time.monotonic_ns()}\n".encode())
    finally:
        os.close(fd)
    return task.seq
