"""The Kafka-native schema registry: task payload schemas on a compacted topic.

Owns publishing a task type's writer schema (keyed by its fingerprint) before the first task of
that type is produced, and resolving a fingerprint a worker has not seen to that writer schema, so
a reader with a newer model can decode tasks queued before the change. Needs no extra server.
Does not decide compatibility (:func:`streamjobs.tasktypes.check_compatible`).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from streamjobs import client
from streamjobs.codec import builtin, parse, schema_fingerprint
from streamjobs.errors import BadInput, DecodeError
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

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
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
        ranges = client.ranges_to_end(self._settings, self._topic, {0: None})
        for record in client.read_range(self._settings, self._topic, ranges, idle_timeout=10.0):
            self._absorb(record)

    def _absorb(self, message: client.Record) -> None:
        value = message.value
        if value is None:
            return
        try:
            record = _CODEC.decode(value)
            loaded = json.loads(record["schema"])
            check_safe(loaded)
            parsed = parse(loaded)
            fingerprint = schema_fingerprint(loaded)
        except (BadInput, ValueError, RecursionError):  # a hostile or broken record is ignored
            return
        if fingerprint.hex() != record["fingerprint"]:
            return  # a record may not claim another schema's fingerprint
        self._known[fingerprint] = parsed
