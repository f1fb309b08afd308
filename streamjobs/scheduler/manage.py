"""Managing schedules at run time: what ``streamjobs schedules ...`` reads and writes.

Owns reading the schedules topic into a :class:`~streamjobs.scheduler.book.Book` (to its current
end, ``read_committed``), the summaries ``list`` and ``show`` print, and the operator's writes:
a definition (``add``), its removal, the pause switch and a trigger request. Each write is one
confirmed record; the running leader reads it within its next poll and acts on it (a trigger is
fired and tombstoned in one transaction). Never writes a schedule's state: only the leader does.
Does not parse command lines (:mod:`streamjobs.cli.schedules`).
"""

from __future__ import annotations

import getpass
import os
import socket
from dataclasses import dataclass
from datetime import datetime

from streamjobs import client, status, statusreads
from streamjobs.errors import ConfigError
from streamjobs.scheduler.book import Book, Entry
from streamjobs.scheduler.state import (
    Control,
    Definition,
    Fire,
    check_name,
    definition_key,
    encode_control,
    encode_definition,
    pause_key,
    trigger_key,
    trigger_task_id,
)
from streamjobs.scheduler.timing import from_ms
from streamjobs.settings import Settings
from streamjobs.topics import queue_topics


def read_book(settings: Settings, timeout: float = 10.0) -> Book:
    """Everything the schedules topic holds now."""
    topic = queue_topics(settings).schedules
    book = Book()
    clients = client.KafkaClients(settings)
    ranges = client.ranges_to_end(clients, topic, {0: None}, timeout)
    for record in client.read_range(clients, topic, ranges, idle_timeout=timeout):
        book.apply(record.key, record.value)
    return book


@dataclass(frozen=True, slots=True)
class Summary:
    """One line of ``schedules list``."""

    name: str
    task: str
    cadence: str
    catch_up: str
    paused: bool
    next_due: datetime | None
    last_fire: Fire | None
    owner: str | None
    fires: int
    skipped: int
    pending_triggers: int
    source: str
    error: str | None

    def as_dict(self) -> dict[str, object]:
        last = self.last_fire
        return {
            "name": self.name,
            "task": self.task,
            "cadence": self.cadence,
            "catch_up": self.catch_up,
            "paused": self.paused,
            "next_due": self.next_due.isoformat() if self.next_due else None,
            "last_fire": None
            if last is None
            else {
                "due": from_ms(last.due_ms).isoformat(),
                "fired_at": from_ms(last.fired_at_ms).isoformat(),
                "lateness_ms": last.lateness_ms,
                "task_id": last.task_id,
                "triggered": last.triggered,
            },
            "owner": self.owner,
            "fires": self.fires,
            "skipped": self.skipped,
            "pending_triggers": self.pending_triggers,
            "source": self.source,
            "error": self.error,
        }


def summarize(entry: Entry) -> Summary | None:
    """The entry as ``list`` shows it; None for a removed schedule (no definition)."""
    definition = entry.definition
    if definition is None:
        return None
    state = entry.state
    return Summary(
        name=definition.name,
        task=definition.task,
        cadence=definition.cadence.describe(),
        catch_up=definition.catch_up,
        paused=entry.paused,
        next_due=entry.next_due(),
        last_fire=state.last_fire if state else None,
        owner=state.owner if state else None,
        fires=state.fires if state else 0,
        skipped=state.skipped if state else 0,
        pending_triggers=len(entry.triggers),
        source=definition.source,
        error=state.error if state else None,
    )


def summaries(settings: Settings) -> list[Summary]:
    found = (summarize(e) for e in read_book(settings).of_queue(settings.queue))
    return [s for s in found if s is not None]


def entry(settings: Settings, name: str) -> Entry:
    found = read_book(settings).get(settings.queue, check_name(name))
    if found is None or found.definition is None:
        raise ConfigError(f"no schedule {name!r} on queue {settings.queue!r}")
    return found


def recent_states(settings: Settings, fires: list[Fire]) -> dict[str, str]:
    """The current state of each fire's task (``unknown`` when its status expired)."""
    views = {f.task_id: statusreads.latest(settings, f.task_id) for f in fires}
    return {tid: view.state.value if view else "unknown" for tid, view in views.items()}


# -- writes -----------------------------------------------------------------------------------


def _write(settings: Settings, key: bytes, value: bytes | None) -> None:
    producer = client.new_producer(settings)
    client.produce_confirmed(producer, queue_topics(settings).schedules, [(key, value)])


def add(settings: Settings, definition: Definition, *, replace: bool = False) -> None:
    """Publish ``definition``; ConfigError if the name exists and ``replace`` is False."""
    existing = read_book(settings).get(settings.queue, definition.name)
    if existing is not None and existing.definition is not None and not replace:
        raise ConfigError(f"schedule {definition.name!r} exists (use --replace to change it)")
    _write(settings, definition_key(settings.queue, definition.name), encode_definition(definition))


def remove(settings: Settings, name: str) -> None:
    """Delete the definition and pause switch; the leader deletes the state and lapses triggers.

    A schedule declared in code comes back when a worker running that code next takes the lead.
    """
    entry(settings, name)
    _write(settings, pause_key(settings.queue, name), None)
    _write(settings, definition_key(settings.queue, name), None)


def set_paused(settings: Settings, name: str, paused: bool) -> None:
    """Pause, or resume: due times that pass while paused are never owed."""
    entry(settings, name)
    control = Control(name, settings.queue, status.now_ms(), paused=paused, requested_by=_who())
    _write(settings, pause_key(settings.queue, name), encode_control(control))


def trigger(settings: Settings, name: str) -> str:
    """Ask the leader to fire ``name`` once now (paused or not); returns the task id it gets."""
    entry(settings, name)
    request = os.urandom(6).hex()
    control = Control(name, settings.queue, status.now_ms(), requested_by=_who())
    _write(settings, trigger_key(settings.queue, name, request), encode_control(control))
    return trigger_task_id(settings.queue, name, request)


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER: a bare container
        user = "unknown"
    return f"{user}@{socket.gethostname()}"
