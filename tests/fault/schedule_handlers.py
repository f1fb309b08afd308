"""A registry with a recurring task, run by ``streamjobs consume`` subprocesses (and threads) in
the scheduler tests: ``tests.fault.schedule_handlers:registry``.

``tick`` fires every 2 s with ``catch_up="all"``, so across a leader's death every due time must
still fire exactly once.
"""

from __future__ import annotations

from datetime import timedelta

from streamjobs import Task, TaskRegistry


class Tick(Task):
    note: str = "tick"


registry = TaskRegistry()


@registry.handler(Tick)
def tick(task: Tick) -> str:
    return task.note


registry.schedule("tick", every=timedelta(seconds=2), task=Tick(), catch_up="all")

#: The same task type with no schedule declared in code: for schedules added from the CLI.
plain = TaskRegistry()
plain.handler(Tick)(tick)
