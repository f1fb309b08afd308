"""The queue dimension of the dashboard: which queues it shows, a row per queue, refs that name
their queue.

Owns :func:`queue_rows` (per queue shown: tasks by latest state, dead letters and how many were
re-driven, main-topic lag and tier backlog from the live figures) and the dashboard's dead-letter
refs, ``QUEUE:PARTITION:OFFSET`` (:func:`letter_ref`, :func:`split_ref`; a bare
``PARTITION:OFFSET`` means the first queue, as before several queues were shown). Pure: the
pages (:mod:`streamjobs.dashboard.pages`) read the index and Kafka and call these.

Does not decide which queues a worker serves (the settings' ``queue``/``queues``: the dashboard
shows the same ones ``consume`` would serve with the same settings) or render anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from streamjobs.dashboard.live import BacklogFigures
from streamjobs.errors import ConfigError
from streamjobs.models import TaskState
from streamjobs.ops.deadletters import parse_ref

#: The states a queue row counts, in the order of a task's life.
STATE_ORDER = tuple(s.value for s in TaskState)


@dataclass(frozen=True, slots=True)
class QueueRow:
    """One queue on the overview: what the index counts and what Kafka says is left."""

    queue: str
    states: dict[str, int]
    dead_letters: int
    redriven: int
    lag: int | None  # None: not read from Kafka yet
    tier_backlog: int | None

    @property
    def tasks(self) -> int:
        return sum(self.states.values())


def queue_rows(
    queues: Sequence[str],
    states: Mapping[str, Mapping[str, int]],
    dead: Mapping[str, tuple[int, int]],
    live: BacklogFigures,
) -> list[QueueRow]:
    """A row per queue of ``queues``, in their order (highest priority first)."""
    rows = []
    for queue in queues:
        counts = states.get(queue, {})
        letters, redriven = dead.get(queue, (0, 0))
        figures = live.of(queue)
        rows.append(
            QueueRow(
                queue,
                {s: counts[s] for s in STATE_ORDER if counts.get(s)},
                letters,
                redriven,
                None if figures is None else figures.lag,
                None if figures is None else figures.tier_backlog,
            )
        )
    return rows


def state_columns(rows: Sequence[QueueRow]) -> list[str]:
    """The states any row has, in :data:`STATE_ORDER` (the overview's queue table columns)."""
    seen = {state for row in rows for state in row.states}
    return [s for s in STATE_ORDER if s in seen]


def letter_ref(queue: str, ref: str) -> str:
    """``QUEUE:PARTITION:OFFSET``: a dead letter of one of several queues."""
    return f"{queue}:{ref}"


def split_ref(text: str, queues: Sequence[str]) -> tuple[str, str]:
    """``(queue, "PARTITION:OFFSET")`` of a dashboard ref; ConfigError when it is not one or
    names a queue the dashboard does not show (it re-drives only those)."""
    parts = text.split(":")
    if len(parts) == 2:
        queue, ref = queues[0], text
    elif len(parts) == 3:
        queue, ref = parts[0], f"{parts[1]}:{parts[2]}"
    else:
        raise ConfigError(f"not a dead letter ref: {text!r} (QUEUE:PARTITION:OFFSET)")
    if queue not in queues:
        raise ConfigError(f"queue {queue!r} is not shown here (shown: {', '.join(queues)})")
    parse_ref(ref)
    return queue, ref


def by_queue(refs: Sequence[str], queues: Sequence[str]) -> dict[str, list[str]]:
    """Refs grouped per queue (in ``queues``' order), each as ``PARTITION:OFFSET``."""
    grouped: dict[str, list[str]] = {q: [] for q in queues}
    for text in refs:
        queue, ref = split_ref(text, queues)
        grouped[queue].append(ref)
    return {q: found for q, found in grouped.items() if found}
