"""The Kafka-native schema registry: task payload schemas on a compacted topic.

Owns publishing a task type's writer schema (keyed by its fingerprint) before the first task of
that type is produced, and resolving a fingerprint a worker has not seen to that writer schema, so
a reader with a newer model can decode tasks queued before the change. Needs no extra server.
Also lists the published writer schemas and checks registered task types against them
(``streamjobs schemas check``), applying the rule of :mod:`streamjobs.evolution`, which decides
compatibility; this module only gathers the schemas.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from streamjobs import client
from streamjobs.codec import builtin, parse, schema_fingerprint
from streamjobs.errors import BadInput, DecodeError
from streamjobs.evolution import breaking_changes
from streamjobs.settings import Settings
from streamjobs.tasktypes import TaskType, check_safe
from streamjobs.topics import queue_topics

_CODEC = builtin("task_schema")


def schema_record(task_type: TaskType) -> tuple[bytes, bytes]:
    """(key, value) of the schema record announcing ``task_type``'s writer schema."""
    fingerprint = task_type.fingerprint.hex()
    value = _CODEC.encode(
        {
            "task": task_type.name,
            "fingerprint": fingerprint,
            "schema": json.dumps(task_type.codec.schema, sort_keys=True),
            "registered_at_ms": time.time_ns() // 1_000_000,
        }
    )
    return fingerprint.encode(), value


class SchemaStore:
    """Writer schemas by fingerprint: the local task types first, then the schemas topic."""

    def __init__(self, settings: Settings, clients: client.Clients | None = None) -> None:
        self._clients = clients or client.KafkaClients(settings)
        self._topic = queue_topics(settings).schemas
        self._known: dict[bytes, Any] = {}
        self._lock = threading.Lock()
        self._last_refresh = 0.0
        self._refreshed_at_ms = 0  # wall clock when the last refresh began

    def add(self, task_type: TaskType) -> None:
        self._known[task_type.fingerprint] = task_type.codec.parsed

    def writer(self, fingerprint: bytes, written_at_ms: int) -> Any:
        """The parsed writer schema for ``fingerprint`` of a record written at ``written_at_ms``;
        DecodeError(unknown_schema) only when a refresh begun after that moment lacks it.

        A producer announces (and confirms) a schema before its first task, so a refresh that
        starts after the task was written must see it; a miss before that is only a stale view.
        """
        found = self._known.get(fingerprint)
        if found is None:
            with self._lock:
                found = self._known.get(fingerprint)
                stale = self._refreshed_at_ms <= written_at_ms
                if found is None and (stale or time.monotonic() - self._last_refresh >= 1.0):
                    self._refresh()
                    found = self._known.get(fingerprint)
        if found is None:
            raise DecodeError(
                f"unknown payload schema fingerprint {fingerprint.hex()}", reason="unknown_schema"
            )
        return found

    def _refresh(self) -> None:
        """Read the whole (small, compacted, one-partition) schemas topic."""
        self._last_refresh = time.monotonic()
        self._refreshed_at_ms = time.time_ns() // 1_000_000
        for record in _schema_records(self._clients, self._topic):
            self._absorb(record)

    def _absorb(self, message: client.Record) -> None:
        found = _published(message.value)
        if found is None:
            return
        try:
            self._known[bytes.fromhex(found.fingerprint)] = parse(found.schema)
        except (ValueError, RecursionError):  # a schema fastavro refuses is ignored
            return


@dataclass(frozen=True, slots=True)
class PublishedSchema:
    """A writer schema announced on the schemas topic: its task type and fingerprint (hex)."""

    task: str
    fingerprint: str
    schema: dict[str, Any]


def published(settings: Settings) -> list[PublishedSchema]:
    """Every writer schema on the queue's schemas topic, oldest first; hostile or broken
    records are skipped as the worker skips them."""
    records = _schema_records(client.KafkaClients(settings), queue_topics(settings).schemas)
    found = (_published(record.value) for record in records)
    return [schema for schema in found if schema is not None]


@dataclass(frozen=True, slots=True)
class TypeCheck:
    """One registered task type checked against its writer schemas on the schemas topic."""

    task: str
    writers: int  # writer schemas of this type found on the topic
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def check_task_types(
    task_types: Iterable[TaskType], writers: Iterable[PublishedSchema]
) -> list[TypeCheck]:
    """Each task type against every published writer schema of the same name, in both
    directions (:func:`streamjobs.evolution.breaking_changes`); a problem is named once, with
    the first writer schema it was found against."""
    by_task: dict[str, list[PublishedSchema]] = {}
    for writer in writers:
        by_task.setdefault(writer.task, []).append(writer)
    checks = []
    for task_type in task_types:
        olds = [w for w in by_task.get(task_type.name, []) if w.schema != task_type.codec.schema]
        first_seen: dict[str, str] = {}  # problem -> the first writer fingerprint it breaks
        for old in olds:
            for problem in breaking_changes(task_type.codec.schema, old.schema):
                first_seen.setdefault(problem, old.fingerprint)
        problems = tuple(f"{p} (vs schema {fp[:16]})" for p, fp in first_seen.items())
        checks.append(TypeCheck(task_type.name, len(by_task.get(task_type.name, [])), problems))
    return checks


def check(settings: Settings, task_types: Iterable[TaskType]) -> list[TypeCheck]:
    """:func:`check_task_types` against the queue's schemas topic."""
    return check_task_types(task_types, published(settings))


def _schema_records(clients: client.Clients, topic: str) -> Iterable[client.Record]:
    ranges = client.ranges_to_end(clients, topic, {0: None})
    return client.read_range(clients, topic, ranges, idle_timeout=10.0)


def _published(value: bytes | None) -> PublishedSchema | None:
    """The schema a record announces, if it is safe and carries its own fingerprint."""
    if value is None:
        return None
    try:
        record = _CODEC.decode(value)
        loaded = json.loads(record["schema"])
        check_safe(loaded)
        fingerprint = schema_fingerprint(loaded).hex()
    except (BadInput, ValueError, RecursionError):  # a hostile or broken record is ignored
        return None
    if fingerprint != record["fingerprint"] or not isinstance(loaded, dict):
        return None  # a record may not claim another schema's fingerprint
    return PublishedSchema(str(record["task"]), fingerprint, loaded)
