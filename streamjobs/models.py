"""The nouns of streamjobs: task types, task states and status versions.

Owns the ``Task`` base class users subclass, the ``TaskState`` wire values and the pure rules of
status ordering. Does not encode anything (:mod:`streamjobs.codec`) or touch Kafka.
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class Task(BaseModel):
    """Base class of task types: the fields are the task's arguments.

    The type name on the wire is ``task_name`` (default: the class name). Changing it orphans
    queued tasks; adding a field with a default is always safe (``streamjobs schemas check``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    task_name: ClassVar[str] = ""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if "task_name" not in cls.__dict__:
            cls.task_name = cls.__name__


class TaskState(enum.StrEnum):
    """Where a task stands. Unknown ids have no state at all (never a fake ``queued``)."""

    QUEUED = "queued"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    RETRY_SCHEDULED = "retry_scheduled"
    SUCCEEDED = "succeeded"
    DEAD_LETTERED = "dead_lettered"
    #: stopped by ``cancel``: never started, or an async handler interrupted (final)
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (TaskState.SUCCEEDED, TaskState.DEAD_LETTERED, TaskState.CANCELLED)


_RANK = {
    TaskState.QUEUED: 0,
    TaskState.SCHEDULED: 0,
    TaskState.RUNNING: 1,
    TaskState.RETRY_SCHEDULED: 2,
    TaskState.SUCCEEDED: 2,
    TaskState.DEAD_LETTERED: 2,
    TaskState.CANCELLED: 2,
}


def status_version(generation: int, attempt: int, state: TaskState) -> int:
    """Monotonic order of a task's status records: generation, then attempt, then state rank.

    Readers of the status topic keep the highest version per task id, so a late write from a
    zombie worker (an older attempt) can never hide a newer outcome.
    """
    return (generation << 32) | (max(0, min(attempt, 0xFFFFFF)) << 4) | _RANK[state]
