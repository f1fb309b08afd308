"""Applying changes to the index file: rows and the Kafka offsets they came from, together.

Owns :class:`IndexStore` and :meth:`IndexStore.apply`: a batch of changes *and* the offsets
they came from are written in one SQLite transaction, so after a crash the index resumes exactly
after what it applied. A batch re-checks the stored offsets inside its transaction and skips
what another writer (a dashboard and an ``inspect`` sharing the file) has applied meanwhile.
Within a batch, rows are written with ``executemany`` per table, and only the highest version of
each task reaches ``tasks`` (one upsert, one full decode, instead of one per status record).

Does not define the schema (:mod:`streamjobs.index.schema`), read Kafka
(:mod:`streamjobs.index.follower`) or answer questions (:mod:`streamjobs.index.queries`). The
file is a cache: delete it and the follower rebuilds it from the topics.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamjobs.index import schema
from streamjobs.index.latest import remove_task, stored, write_latest
from streamjobs.index.rows import (
    SUBMITTED_VERSION,
    CancelRow,
    Change,
    DeadLetterRow,
    Redriven,
    ScheduleRecord,
    StatusSeen,
    SubmittedGone,
    TaskGone,
    WorkerGone,
    WorkerRow,
    history_part,
)
from streamjobs.index.schema import DEAD_COLUMNS, quoted

#: Outcome counts are kept per bucket of this many milliseconds (charts sum them up).
BUCKET_MS = 10_000
_COUNTED = frozenset(("succeeded", "retry_scheduled", "dead_lettered", "cancelled"))

_INSERT_HISTORY = "INSERT INTO history VALUES (?, ?)"
_INSERT_DEAD = (
    f"INSERT OR REPLACE INTO dead_letters ({quoted(DEAD_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(DEAD_COLUMNS))})"
)
_UPSERT_WORKER = (
    "INSERT INTO workers VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (worker_id) DO UPDATE SET "
    "queue = excluded.queue, host = excluded.host, reported_at_ms = excluded.reported_at_ms, "
    "interval_ms = excluded.interval_ms, report = excluded.report"
)
_UPSERT_SCHEDULE = "INSERT OR REPLACE INTO schedule_records VALUES (?, ?, ?, ?, ?)"


@dataclass(frozen=True, slots=True)
class Applied:
    """One partition's records of a batch: their changes and the next offset to read."""

    topic: str
    partition: int
    first_offset: int
    next_offset: int
    changes: Sequence[tuple[int, Sequence[Change]]]  # (offset, changes) in offset order


class IndexStore:
    """The writable index file. One per process; not shared across threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = schema.connect(path)
        schema.create(self.db)
        self.fts = schema.has_fts(self.db)

    def close(self) -> None:
        self.db.close()

    def offsets(self, topic: str) -> dict[int, int]:
        """The next offset to read per partition of ``topic`` (absent: nothing applied)."""
        rows = self.db.execute(
            "SELECT partition, next_offset FROM offsets WHERE topic = ?", (topic,)
        ).fetchall()
        return {int(p): int(o) for p, o in rows}

    def apply(self, batch: Sequence[Applied]) -> int:
        """Write the changes of ``batch`` and its offsets in one transaction; return how many
        records were applied (those another writer applied first are skipped)."""
        applied = 0
        self.db.execute("BEGIN IMMEDIATE")  # the write lock now: the offset check stays true
        try:
            writer = _Writer(self.db, self.fts)
            for part in batch:
                stored = self._stored(part.topic, part.partition)
                fresh = part.changes
                if stored > part.first_offset:
                    fresh = [(o, c) for o, c in fresh if o >= stored]
                for _, changes in fresh:
                    writer.add(changes)
                applied += len(fresh)
                if part.next_offset > stored:
                    self.db.execute(
                        "INSERT OR REPLACE INTO offsets VALUES (?, ?, ?)",
                        (part.topic, part.partition, part.next_offset),
                    )
            writer.flush()
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return applied

    def _stored(self, topic: str, partition: int) -> int:
        row = self.db.execute(
            "SELECT next_offset FROM offsets WHERE topic = ? AND partition = ?", (topic, partition)
        ).fetchone()
        return -1 if row is None else int(row[0])


class _Writer:
    """Collects one transaction's rows and writes them with ``executemany``, in record order
    per kind (a tombstone deletes what came before it; rows after it come back). Each change
    type has its writer in :attr:`_WRITERS`: a new followed topic adds one."""

    def __init__(self, db: sqlite3.Connection, fts: bool) -> None:
        self.db = db
        self.fts = fts
        # per task of the batch: its highest version (of equal ones the last read: the rule of
        # streamjobs.status) and its history entry so far. No list per task: lists stay tracked
        # by the garbage collector, and thousands of them per batch trigger full collections.
        self.latest: dict[str, StatusSeen] = {}
        self.history: dict[str, bytes] = {}
        self.outcomes: Counter[tuple[int, str, str]] = Counter()

    def add(self, changes: Sequence[Change]) -> None:
        for change in changes:
            _WRITERS[type(change)](self, change)

    def status(self, seen: StatusSeen) -> None:
        task_id = seen.task_id
        best = self.latest.get(task_id)
        if best is None or seen.version >= best.version:
            self.latest[task_id] = seen
        self.history[task_id] = self.history.get(task_id, b"") + history_part(seen)
        if seen.state in _COUNTED:
            at = seen.updated_at_ms
            self.outcomes[(at - at % BUCKET_MS, seen.queue, seen.state)] += 1

    def task_gone(self, change: TaskGone) -> None:
        self.flush()
        remove_task(self.db, self.fts, change.task_id)
        self.db.execute("DELETE FROM history WHERE task_id = ?", (change.task_id,))

    def submitted_gone(self, change: SubmittedGone) -> None:
        self.flush()
        old = stored(self.db, [change.task_id]).get(change.task_id)
        if old is not None and old.version == SUBMITTED_VERSION:  # no status has replaced it
            self.task_gone(TaskGone(change.task_id))

    def dead_letter(self, change: DeadLetterRow) -> None:
        self.db.execute(_INSERT_DEAD, tuple(getattr(change, c) for c in DEAD_COLUMNS))

    def redriven(self, change: Redriven) -> None:
        key = (change.queue, change.partition, change.offset)
        if change.done:
            self.db.execute(
                "INSERT OR REPLACE INTO redrives VALUES (?, ?, ?, ?)", (*key, change.note)
            )
        else:
            self.db.execute(
                'DELETE FROM redrives WHERE queue = ? AND partition = ? AND "offset" = ?', key
            )

    def worker(self, change: WorkerRow) -> None:
        row = (change.worker_id, change.queue, change.host, change.reported_at_ms)
        self.db.execute(_UPSERT_WORKER, (*row, change.interval_ms, change.report))

    def worker_gone(self, change: WorkerGone) -> None:
        self.db.execute("DELETE FROM workers WHERE worker_id = ?", (change.worker_id,))

    def schedule(self, change: ScheduleRecord) -> None:
        if change.value is None:
            self.db.execute("DELETE FROM schedule_records WHERE key = ?", (change.key,))
            return
        row = (change.key, change.queue, change.name, change.kind, change.value)
        self.db.execute(_UPSERT_SCHEDULE, row)

    def cancel(self, change: CancelRow) -> None:
        if change.requested_at_ms is None:
            self.db.execute("DELETE FROM cancels WHERE task_id = ?", (change.task_id,))
            return
        row = (change.task_id, change.generation, change.requested_at_ms, change.requested_by)
        self.db.execute("INSERT OR REPLACE INTO cancels VALUES (?, ?, ?, ?)", row)

    def flush(self) -> None:
        if self.latest:
            # only the highest version of a task in a batch reaches `tasks` (a worker writes
            # queued, running and the outcome within milliseconds: one decode and upsert
            # instead of three), and its records of the batch are one history row
            write_latest(self.db, self.fts, list(self.latest.values()))
            self.db.executemany(_INSERT_HISTORY, self.history.items())
            self.latest.clear()
            self.history.clear()
        if self.outcomes:
            self.db.executemany(
                "INSERT INTO outcomes VALUES (?, ?, ?, ?) "
                "ON CONFLICT DO UPDATE SET n = n + excluded.n",
                [(*key, n) for key, n in self.outcomes.items()],
            )
            self.outcomes.clear()


_WRITERS: dict[type, Callable[[_Writer, Any], None]] = {
    StatusSeen: _Writer.status,
    TaskGone: _Writer.task_gone,
    SubmittedGone: _Writer.submitted_gone,
    DeadLetterRow: _Writer.dead_letter,
    Redriven: _Writer.redriven,
    WorkerRow: _Writer.worker,
    WorkerGone: _Writer.worker_gone,
    ScheduleRecord: _Writer.schedule,
    CancelRow: _Writer.cancel,
}
