"""The schedules topic folded into what holds now: per schedule its definition, state, pause
switch and pending triggers.

Owns :class:`Book`, fed record by record (keys and values as read from the compacted topic, in
offset order; a tombstone deletes). The leader keeps one to decide its fires, the CLI builds one
to list and show schedules. A record it cannot decode is logged and ignored: one bad record must
not stop every schedule. Does not read Kafka or decide fires.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from streamjobs.errors import DecodeError
from streamjobs.scheduler.state import (
    Control,
    Definition,
    State,
    decode_control,
    decode_definition,
    decode_state,
    parse_key,
)
from streamjobs.scheduler.timing import from_ms, next_due

_log = logging.getLogger(__name__)


@dataclass(slots=True)
class Entry:
    """Everything the topic says about one schedule."""

    queue: str
    name: str
    definition: Definition | None = None
    state: State | None = None
    pause: Control | None = None
    triggers: dict[str, Control] = field(default_factory=dict)

    @property
    def paused(self) -> bool:
        return self.pause is not None and self.pause.paused

    def owed_since_ms(self) -> int | None:
        """The due time after which fires are owed; None when the schedule must not fire
        (removed or paused). Never before its creation; a resumed schedule owes nothing that
        fell due while it was paused."""
        if self.definition is None or self.paused:
            return None
        since = self.definition.created_at_ms
        if self.state is not None and self.state.settled_due_ms is not None:
            since = max(since, self.state.settled_due_ms)
        if self.pause is not None:
            since = max(since, self.pause.requested_at_ms)
        return since

    def next_due(self) -> datetime | None:
        """The next due time of its cadence (None when it must not fire)."""
        since = self.owed_since_ms()
        if since is None or self.definition is None:
            return None
        return next_due(self.definition.cadence, from_ms(since))

    @property
    def empty(self) -> bool:
        return not (self.definition or self.state or self.pause or self.triggers)


class Book:
    """Current schedules of every queue on one schedules topic."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], Entry] = {}

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        parsed = parse_key(key)
        if parsed is None:
            return
        entry = self._entries.get((parsed.queue, parsed.name))
        if entry is None:
            entry = self._entries[(parsed.queue, parsed.name)] = Entry(parsed.queue, parsed.name)
        try:
            self._apply(entry, parsed.kind, parsed.request, value)
        except DecodeError as exc:
            _log.warning("schedules topic: ignoring record %r: %s", key, exc)
        if entry.empty:
            del self._entries[(parsed.queue, parsed.name)]

    @staticmethod
    def _apply(entry: Entry, kind: str, request: str | None, value: bytes | None) -> None:
        if kind == "definition":
            entry.definition = None if value is None else decode_definition(value)
        elif kind == "state":
            entry.state = None if value is None else decode_state(value)
        elif kind == "pause":
            entry.pause = None if value is None else decode_control(value)
        elif request is not None:
            if value is None:
                entry.triggers.pop(request, None)
            else:
                entry.triggers[request] = decode_control(value)

    def get(self, queue: str, name: str) -> Entry | None:
        return self._entries.get((queue, name))

    def of_queue(self, queue: str) -> Iterator[Entry]:
        """The queue's entries, by name."""
        for (entry_queue, _), entry in sorted(self._entries.items()):
            if entry_queue == queue:
                yield entry

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
