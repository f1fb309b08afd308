"""Task types for the rate-limit tests: ``Limited`` (a rate limit) and ``Free`` (none).

Each handler appends ``<task type> <start time>`` to the file its task names, so that workers in
threads and in ``streamjobs consume`` subprocesses report their starts the same way (one short
``O_APPEND`` write per start: lines from several processes never interleave).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from streamjobs import Task, TaskRegistry


class Limited(Task):
    log: str
    n: int


class Free(Task):
    log: str
    n: int


def _record(kind: str, log: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{kind} {time.time():.6f}\n".encode())
    finally:
        os.close(fd)


def make_registry(limit: str) -> TaskRegistry:
    """A registry whose ``Limited`` tasks start at most ``limit`` over the group."""
    built = TaskRegistry()

    @built.handler(Limited, rate_limit=limit)
    def limited(task: Limited) -> None:
        _record("Limited", task.log)

    @built.handler(Free)
    def free(task: Free) -> None:
        _record("Free", task.log)

    return built


def starts(log: Path, kind: str) -> list[float]:
    """The start times (Unix seconds) of ``kind`` tasks recorded in ``log``, sorted."""
    if not log.exists():
        return []
    found = []
    for line in log.read_text().splitlines():
        name, _, at = line.partition(" ")
        if name == kind and at:
            found.append(float(at))
    return sorted(found)


registry = make_registry("20/s")  # for `streamjobs consume tests.integration.rate_tasks:registry`
