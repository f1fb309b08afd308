"""Cancel requests: the record on ``<prefix>.cancels``, and asking for one.

Owns the cancel request's wire form (``schemas/task_cancel.avsc``, keyed by task id on the
compacted cancels topic, so the latest request per task survives compaction), what a cancel did
(:class:`CancelResult`), the pure decision from a task's latest status (:func:`decide`: unknown
and finished tasks are left alone, nothing is written), and :func:`request`, which reads the
status, decides and writes the request, returning only once Kafka confirmed it. The request
names the task's generation: a later replay or redrive of the task runs.

Does not stop anything itself: every worker follows the topic and acts on it
(:mod:`streamjobs.worker.cancels`): a task that has not started never does and ends
``cancelled``; a running async handler is cancelled; a running sync handler sees
``current_task().cancelled`` (:mod:`streamjobs.taskcontext`).
"""

from __future__ import annotations

import enum
import os
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass

from streamjobs import client, status, statusreads
from streamjobs.codec import builtin
from streamjobs.models import TaskState
from streamjobs.settings import Settings
from streamjobs.topics import queue_topics

_CODEC = builtin("task_cancel")

#: Writes one record (topic, key, value) and returns once Kafka confirmed it, else raises.
Write = Callable[[str, bytes, bytes], None]


class CancelOutcome(enum.StrEnum):
    """What a cancel did."""

    #: written: the task will not start, or a running handler is told (see the README)
    REQUESTED = "requested"
    #: the task already ended ``cancelled``: nothing written
    ALREADY_CANCELLED = "already_cancelled"
    #: the task already succeeded or was dead-lettered: nothing written, nothing changed
    FINISHED = "finished"
    #: no status record for this id (never submitted, or purged): nothing written
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class CancelResult:
    """The answer to ``cancel(task_id)``: its outcome and the task's state when asked."""

    task_id: str
    outcome: CancelOutcome
    state: TaskState | None = None

    @property
    def requested(self) -> bool:
        """True when the cancel was written (only then can the task's course change)."""
        return self.outcome is CancelOutcome.REQUESTED

    def describe(self) -> str:
        """One line for people, e.g. ``abc: cancel requested (was queued)``."""
        was = f" (was {self.state.value})" if self.state is not None else ""
        text = {
            CancelOutcome.REQUESTED: f"cancel requested{was}",
            CancelOutcome.ALREADY_CANCELLED: "already cancelled, nothing changed",
            CancelOutcome.FINISHED: f"already finished{was}, nothing changed",
            CancelOutcome.UNKNOWN: "unknown (no status record for this id), nothing changed",
        }[self.outcome]
        return f"{self.task_id}: {text}"

    def as_dict(self) -> dict[str, str | None]:
        state = None if self.state is None else self.state.value
        return {"task_id": self.task_id, "outcome": self.outcome.value, "state": state}


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """One cancel on the wire: task ``task_id`` of ``queue``, up to ``generation``."""

    task_id: str
    task: str
    queue: str
    generation: int
    requested_at_ms: int
    requested_by: str | None = None

    def applies_to(self, generation: int) -> bool:
        """A replay or redrive after the cancel (a newer generation) is not cancelled."""
        return generation <= self.generation


def encode_cancel(request: CancelRequest) -> bytes:
    return _CODEC.encode(asdict(request))


def decode_cancel(value: bytes) -> CancelRequest:
    """A cancel request from its framed bytes; DecodeError for anything else."""
    return CancelRequest(**_CODEC.decode(value))


def decide(view: status.StatusView | None) -> CancelOutcome:
    """Whether a cancel is to be written for a task whose latest status is ``view``. Pure."""
    if view is None:
        return CancelOutcome.UNKNOWN
    if view.state is TaskState.CANCELLED:
        return CancelOutcome.ALREADY_CANCELLED
    if view.state.final:
        return CancelOutcome.FINISHED
    return CancelOutcome.REQUESTED


def request(settings: Settings, task_id: str, write: Write, *, timeout: float) -> CancelResult:
    """Cancel ``task_id``: read its status, and unless it is unknown or finished, write the
    request with ``write``. KafkaUnavailable when the status cannot be read, the error of
    ``write`` when the request cannot be confirmed."""
    view = statusreads.latest(settings, task_id, timeout=timeout)
    outcome = decide(view)
    if view is not None and outcome is CancelOutcome.REQUESTED:
        cancel = CancelRequest(
            task_id=task_id,
            task=view.task,
            queue=view.queue,
            generation=view.generation,
            requested_at_ms=status.now_ms(),
            requested_by=f"{socket.gethostname()}:{os.getpid()}",
        )
        write(queue_topics(settings).cancels, task_id.encode(), encode_cancel(cancel))
    return CancelResult(task_id, outcome, None if view is None else view.state)


def own_producer_write(settings: Settings, timeout: float) -> Write:
    """A :data:`Write` through a producer of its own, made at its first write, for callers
    without a Producer (a ``TaskHandle``, the CLI): a connection per use, fine for an operation
    this rare."""
    made: list[client.KafkaProducer] = []

    def write(topic: str, key: bytes, value: bytes) -> None:
        if not made:
            made.append(client.new_producer(settings))
        client.produce_confirmed(made[0], topic, [(key, value)], timeout)

    return write
