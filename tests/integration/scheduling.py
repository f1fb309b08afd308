"""Helpers of the scheduler tests: fires and schedule states read back from Kafka."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

from streamjobs import Settings
from streamjobs.envelope import decode_envelope
from streamjobs.scheduler.manage import read_book
from streamjobs.scheduler.state import State, due_of, schedule_of
from streamjobs.topics import queue_topics
from tests.integration.conftest import read_topic


def fire_ids(settings: Settings, schedule: str) -> list[str]:
    """Task ids of ``schedule``'s fires on the main topic (committed records only), in order."""
    ids = []
    for record in read_topic(settings, queue_topics(settings).main):
        assert record.value is not None
        task_id = decode_envelope(record.value).task_id
        if schedule_of(task_id) == schedule:
            ids.append(task_id)
    return ids


def due_times(task_ids: list[str]) -> list[datetime]:
    return sorted(d for t in task_ids if (d := due_of(t)) is not None)


def gaps(dues: list[datetime], step: timedelta) -> list[tuple[datetime, datetime]]:
    """Consecutive due times further apart than ``step``: missed fires."""
    return [(a, b) for a, b in itertools.pairwise(dues) if b - a != step]


def state_of(settings: Settings, name: str) -> State | None:
    entry = read_book(settings).get(settings.queue, name)
    return entry.state if entry else None
