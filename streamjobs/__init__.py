"""streamjobs: background jobs on an Apache Kafka event log.

The public API is what ``__all__`` lists; everything else is internal and may change.
"""

from streamjobs.aio import AsyncProducer, AsyncTaskHandle
from streamjobs.cancels import CancelResult
from streamjobs.errors import (
    BadInput,
    Cancelled,
    Discard,
    DuplicateTask,
    Retry,
    StreamJobsError,
    SubmitError,
    TaskCancelled,
    TaskFailed,
    TaskTimeout,
)
from streamjobs.models import Task, TaskState
from streamjobs.producer import Producer
from streamjobs.registry import TaskRegistry
from streamjobs.settings import Settings
from streamjobs.status import StatusView
from streamjobs.taskcontext import CurrentTask, current_task
from streamjobs.taskhandle import TaskHandle
from streamjobs.worker.loop import Worker

__all__ = [
    "AsyncProducer",
    "AsyncTaskHandle",
    "BadInput",
    "CancelResult",
    "Cancelled",
    "CurrentTask",
    "Discard",
    "DuplicateTask",
    "Producer",
    "Retry",
    "Settings",
    "StatusView",
    "StreamJobsError",
    "SubmitError",
    "Task",
    "TaskCancelled",
    "TaskFailed",
    "TaskHandle",
    "TaskRegistry",
    "TaskState",
    "TaskTimeout",
    "Worker",
    "current_task",
]
