"""Task types and the registry of ``streamjobs consume`` subprocesses that must die on purpose.

Loaded by the worker process as ``tests.fault.crash_handlers:registry``. ``Poison`` kills its
worker the way a segfault or the OOM killer would (``os._exit``: no ``finally``, no commit, no
leaving the group); ``Work`` is an ordinary task that sleeps ``ms`` milliseconds and returns ``n``;
``FailOnce`` fails its first run in any worker process (a marker file remembers it) and succeeds
after, so it goes to a retry tier exactly once.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from streamjobs import Task, TaskRegistry


class Poison(Task):
    """A task that kills the worker process running it, with exit status ``exit_code``."""

    exit_code: int = 3


class Work(Task):
    """An ordinary task: ``ms`` milliseconds of work; returns ``n``."""

    n: int
    ms: int = 0


class FailOnce(Task):
    """Fails the first time any worker runs it (it creates ``marker``); returns ``n`` after."""

    marker: str
    n: int = 0


registry = TaskRegistry()


@registry.handler(Poison)
def poison(task: Poison) -> None:
    os._exit(task.exit_code)


@registry.handler(Work)
def work(task: Work) -> int:
    time.sleep(task.ms / 1000)
    return task.n


@registry.handler(FailOnce)
def fail_once(task: FailOnce) -> int:
    try:
        Path(task.marker).touch(exist_ok=False)  # atomic: only one run finds it missing
    except FileExistsError:
        return task.n
    raise ConnectionError("the first run fails")
