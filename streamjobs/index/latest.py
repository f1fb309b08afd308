"""Writing a task's latest row, with the counts by state and the error-text search kept in step.

Owns :func:`write_latest` (a batch's highest version of each task upserted into ``tasks``; the
``state_counts`` moved from the old state to the new one; the external-content FTS5 entries of
the old error text deleted and of the new one added) and :func:`remove_task` (a tombstone). These
were SQLite triggers: a trigger on ``tasks`` cost more per row than the row itself, and the
stored rows of a batch's tasks are read once, 500 ids a query, to do the same in a few
``executemany`` calls. A stored row of a higher version wins (a late write of an older attempt
changes nothing): the rule of :mod:`streamjobs.status`.

Does not decide which record of a batch is a task's latest (:mod:`streamjobs.index.store`) or
define the tables (:mod:`streamjobs.index.schema`).
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Sequence
from typing import Any, NamedTuple

from streamjobs.index.rows import StatusRow, StatusSeen
from streamjobs.index.schema import TASK_COLUMNS, quoted

_WIDTH = len(TASK_COLUMNS)
_CHUNK = 500  # ids per lookup (SQLite allows 32,766 parameters; a statement per 500 is cheap)
_UPSERT = (
    f"INSERT INTO tasks ({quoted(TASK_COLUMNS)}) VALUES ({', '.join('?' * _WIDTH)})"
    " ON CONFLICT (task_id) DO UPDATE SET "
    + ", ".join(f'"{c}" = excluded."{c}"' for c in TASK_COLUMNS[1:])
    + " WHERE excluded.version >= tasks.version"
)
_COUNT = "INSERT INTO state_counts VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET n = n + excluded.n"
_FTS_DELETE = (
    "INSERT INTO tasks_fts (tasks_fts, rowid, error_type, error) VALUES ('delete', ?, ?, ?)"
)
_FTS_ADD = (
    "INSERT INTO tasks_fts (rowid, error_type, error) "
    "SELECT rowid, error_type, error FROM tasks WHERE task_id = ?"
)


class Stored(NamedTuple):
    """What ``tasks`` holds of a task before a batch."""

    task_id: str
    rowid: int
    queue: str
    state: str
    version: int
    error_type: str | None
    error: str | None


def stored(db: sqlite3.Connection, task_ids: Sequence[str]) -> dict[str, Stored]:
    found: dict[str, Stored] = {}
    for first in range(0, len(task_ids), _CHUNK):
        chunk = task_ids[first : first + _CHUNK]
        rows = db.execute(
            "SELECT task_id, rowid, queue, state, version, error_type, error FROM tasks "
            f"WHERE task_id IN ({', '.join('?' * len(chunk))})",
            chunk,
        )
        found.update((row[0], Stored._make(row)) for row in rows)
    return found


def write_latest(db: sqlite3.Connection, fts: bool, latest: Sequence[StatusSeen]) -> None:
    """Upsert each task's latest row where it is newer than the stored one, with its count and
    error-text entries."""
    before = stored(db, [seen.task_id for seen in latest])
    rows: list[StatusRow] = []
    for seen in latest:
        old = before.get(seen.task_id)
        if old is not None and seen.version < old.version:
            continue  # a late write of an older attempt: the stored row stays
        row = seen.row()
        if row is not None:
            rows.append(row)
    counts: Counter[tuple[str, str]] = Counter()
    for row in rows:
        counts[(row.queue, row.state)] += 1
    changed = [before[row.task_id] for row in rows if row.task_id in before]
    for old in changed:
        counts[(old.queue, old.state)] -= 1
    if fts:
        _fts_delete(db, changed)
    db.executemany(_UPSERT, [row[:_WIDTH] for row in rows])
    db.executemany(_COUNT, [(*key, n) for key, n in counts.items() if n])
    if fts:
        db.executemany(_FTS_ADD, [(row.task_id,) for row in rows if row.error is not None])


def remove_task(db: sqlite3.Connection, fts: bool, task_id: str) -> None:
    """The task, its count and its error text leave the index (its history is the store's)."""
    old = stored(db, [task_id]).get(task_id)
    if old is None:
        return
    if fts:
        _fts_delete(db, [old])
    db.execute(_COUNT, (old.queue, old.state, -1))
    db.execute("DELETE FROM tasks WHERE task_id = ?", (task_id,))


def _fts_delete(db: sqlite3.Connection, old: Sequence[Stored]) -> None:
    entries: list[tuple[Any, ...]] = [
        (s.rowid, s.error_type, s.error) for s in old if s.error is not None
    ]
    db.executemany(_FTS_DELETE, entries)
