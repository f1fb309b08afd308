"""The records of one fire: the task and its ``queued`` status, and the schedule's new state.

Owns turning a schedule definition and a due time into what the fire's transaction writes: the
task built from the definition's JSON fields with the task model (found in the worker's registry
or among the schedules declared in code), encoded by :meth:`streamjobs.Producer.encode` exactly as
``submit`` would, under the producer's submit middleware (tracing: the PRODUCER span, inside a
``fire`` span; the hooks wrap the encoding, since the record itself is written later in the
round's transaction), with a deterministic ``task_id`` and a ``streamjobs-schedule`` header; and
the schedule state that settles the due time (its record is written once per round by
:mod:`streamjobs.scheduler.rounds`). Does not decide which due times to fire or write anything.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pydantic import ValidationError

from streamjobs import tracing
from streamjobs.errors import StreamJobsError
from streamjobs.middleware import SCHEDULE_HEADER
from streamjobs.models import Task
from streamjobs.producer import Producer
from streamjobs.registry import TaskRegistry
from streamjobs.scheduler.state import Definition, Fire, State
from streamjobs.scheduler.transaction import Out
from streamjobs.topics import QueueTopics

_log = logging.getLogger(__name__)


class CannotFire(StreamJobsError):
    """The definition cannot produce a task here (unknown type, invalid fields, too large)."""


@dataclass(frozen=True, slots=True)
class FireRecords:
    """The task record and its ``queued`` status, and the schedule's state after the fire."""

    records: list[Out]
    state: State


class FireBuilder:
    """Builds fire records with the task models a worker knows."""

    def __init__(self, producer: Producer, registry: TaskRegistry, topics: QueueTopics) -> None:
        self._producer = producer
        self._topics = topics
        self._models: dict[str, type[Task]] = {
            declared.task.task_name: type(declared.task) for declared in registry.schedules
        }
        for handler in registry:
            model = handler.task_type.model
            if isinstance(model, type) and issubclass(model, Task):
                self._models[handler.name] = model

    def task(self, definition: Definition) -> Task:
        model = self._models.get(definition.task)
        if model is None:
            raise CannotFire(f"task type {definition.task!r} has no model on this worker")
        try:
            return model.model_validate_json(definition.args_json)
        except ValidationError as exc:
            raise CannotFire(f"{definition.task}: {exc.error_count()} invalid field(s)") from exc

    def build(self, definition: Definition, state: State, fire: Fire, *, owner: str) -> FireRecords:
        """The fire's records; raises CannotFire (or PayloadTooLarge) before anything is made."""
        task = self.task(definition)
        # the producer's submit middleware (tracing: the PRODUCER span) runs inside the fire span
        with tracing.fire_span(definition.name, fire.due_ms, fire.lateness_ms):
            encoded = self._producer.encode(task, task_id=fire.task_id, key=definition.key)
        headers = [*encoded.headers, (SCHEDULE_HEADER, definition.name.encode())]
        new_state = state.fired(fire, owner=owner)
        records = [
            Out(
                self._topics.status,
                encoded.task_id.encode(),
                encoded.queued_status,
                encoded.status_headers,
            ),
            Out(encoded.topic, encoded.record_key, encoded.value, headers),
        ]
        return FireRecords(records, new_state)
