"""The index database: an embedded SQLite file, its tables, and applying changes to it.

Owns the schema (tasks with their latest status, every status record seen as history, dead
letters, redrive ledger entries, counts by state, per-10-second outcome counts for charts, an
FTS5 table over error text when the SQLite build has FTS5, else a LIKE scan) and
:meth:`IndexStore.apply`: a batch of changes *and* the Kafka offsets they came from are written
in one SQLite transaction, so after a crash the index resumes exactly after what it applied.
A batch re-checks the stored offsets inside its transaction and skips what another writer (a
dashboard and an ``inspect`` sharing the file) has applied meanwhile.

Does not read Kafka (:mod:`streamjobs.index.follower`) or answer questions
(:mod:`streamjobs.index.queries`). The file is a cache: delete it and the follower rebuilds it
from the topics.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from streamjobs.index.rows import Change, DeadLetterRow, Redriven, StatusRow, TaskGone

#: Outcome counts are kept per bucket of this many milliseconds (charts sum them up).
BUCKET_MS = 10_000
_COUNTED = ("succeeded", "retry_scheduled", "dead_lettered")

_TASK_COLUMNS = (
    "task_id", "task", "queue", "state", "version", "attempt", "generation", "updated_at_ms",
    "key", "result", "error_type", "error", "reason", "topic", "partition", "offset",
    "worker_id", "trace_id", "not_before_ms", "submitted_at_ms", "note",
)  # fmt: skip
_HISTORY_COLUMNS = (*_TASK_COLUMNS, "src_partition", "src_offset")  # StatusRow's, in order
_TASK_WIDTH = len(_TASK_COLUMNS)
_DEAD_COLUMNS = (
    "queue", "partition", "offset", "timestamp_ms", "reason", "task_id", "task", "error_type",
    "error", "attempts", "generation", "worker_id", "failed_at_ms", "origin_topic",
    "origin_partition", "origin_offset",
)  # fmt: skip


def _quoted(columns: Iterable[str]) -> str:
    return ", ".join(f'"{c}"' for c in columns)


_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS offsets (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY, task TEXT NOT NULL, queue TEXT NOT NULL, state TEXT NOT NULL,
    version INTEGER NOT NULL, attempt INTEGER, generation INTEGER, updated_at_ms INTEGER,
    key TEXT, result TEXT, error_type TEXT, error TEXT, reason TEXT, topic TEXT,
    partition INTEGER, "offset" INTEGER, worker_id TEXT, trace_id TEXT, not_before_ms INTEGER,
    submitted_at_ms INTEGER, note TEXT);
CREATE INDEX IF NOT EXISTS tasks_by_state ON tasks (queue, state, updated_at_ms);
CREATE INDEX IF NOT EXISTS tasks_by_type ON tasks (task, updated_at_ms);
CREATE INDEX IF NOT EXISTS tasks_by_key ON tasks (key, updated_at_ms);
CREATE INDEX IF NOT EXISTS tasks_by_time ON tasks (updated_at_ms);
CREATE TABLE IF NOT EXISTS history ({_quoted(_HISTORY_COLUMNS)});
CREATE INDEX IF NOT EXISTS history_by_task ON history (task_id);
CREATE TABLE IF NOT EXISTS state_counts (
    queue TEXT NOT NULL, state TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (queue, state)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outcomes (
    bucket_ms INTEGER NOT NULL, queue TEXT NOT NULL, state TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (bucket_ms, queue, state)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters ({_quoted(_DEAD_COLUMNS)},
    PRIMARY KEY (queue, partition, "offset"));
CREATE INDEX IF NOT EXISTS dead_by_reason ON dead_letters (queue, reason, failed_at_ms);
CREATE INDEX IF NOT EXISTS dead_by_task ON dead_letters (task_id);
CREATE INDEX IF NOT EXISTS dead_by_time ON dead_letters (queue, failed_at_ms);
CREATE TABLE IF NOT EXISTS redrives (
    queue TEXT NOT NULL, partition INTEGER NOT NULL, "offset" INTEGER NOT NULL, note TEXT,
    PRIMARY KEY (queue, partition, "offset")) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS count_insert AFTER INSERT ON tasks BEGIN
    INSERT INTO state_counts VALUES (new.queue, new.state, 1)
        ON CONFLICT DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS count_delete AFTER DELETE ON tasks BEGIN
    UPDATE state_counts SET n = n - 1 WHERE queue = old.queue AND state = old.state;
END;
CREATE TRIGGER IF NOT EXISTS count_update AFTER UPDATE OF state ON tasks
    WHEN old.state IS NOT new.state OR old.queue IS NOT new.queue BEGIN
    UPDATE state_counts SET n = n - 1 WHERE queue = old.queue AND state = old.state;
    INSERT INTO state_counts VALUES (new.queue, new.state, 1)
        ON CONFLICT DO UPDATE SET n = n + 1;
END;
"""

# External-content FTS5 over the tasks' error columns: the text lives once, in `tasks`.
_FTS_SCHEMA = """
CREATE VIRTUAL TABLE IF NOT EXISTS tasks_fts USING fts5(
    error_type, error, content='tasks', content_rowid='rowid');
CREATE TRIGGER IF NOT EXISTS fts_insert AFTER INSERT ON tasks WHEN new.error IS NOT NULL BEGIN
    INSERT INTO tasks_fts (rowid, error_type, error) VALUES (new.rowid, new.error_type, new.error);
END;
CREATE TRIGGER IF NOT EXISTS fts_delete AFTER DELETE ON tasks WHEN old.error IS NOT NULL BEGIN
    INSERT INTO tasks_fts (tasks_fts, rowid, error_type, error)
        VALUES ('delete', old.rowid, old.error_type, old.error);
END;
CREATE TRIGGER IF NOT EXISTS fts_update AFTER UPDATE ON tasks
    WHEN old.error IS NOT new.error OR old.error_type IS NOT new.error_type BEGIN
    INSERT INTO tasks_fts (tasks_fts, rowid, error_type, error)
        SELECT 'delete', old.rowid, old.error_type, old.error WHERE old.error IS NOT NULL;
    INSERT INTO tasks_fts (rowid, error_type, error)
        SELECT new.rowid, new.error_type, new.error WHERE new.error IS NOT NULL;
END;
"""

_UPSERT_TASK = (
    f"INSERT INTO tasks ({_quoted(_TASK_COLUMNS)}) VALUES ({', '.join('?' * len(_TASK_COLUMNS))})"
    " ON CONFLICT (task_id) DO UPDATE SET "
    + ", ".join(f'"{c}" = excluded."{c}"' for c in _TASK_COLUMNS[1:])
    + " WHERE excluded.version >= tasks.version"
)
_INSERT_HISTORY = (
    f"INSERT INTO history ({_quoted(_HISTORY_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_HISTORY_COLUMNS))})"
)
_INSERT_DEAD = (
    f"INSERT OR REPLACE INTO dead_letters ({_quoted(_DEAD_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_DEAD_COLUMNS))})"
)


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL journal."""
    if readonly:
        db = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA busy_timeout=10000")
    db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints, never corrupt
    db.execute("PRAGMA cache_size=-65536")  # 64 MiB: the B-trees' upper levels stay in memory
    return db


def has_fts(db: sqlite3.Connection) -> bool:
    found = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'tasks_fts'").fetchone()
    return found is not None


@dataclass(frozen=True, slots=True)
class Applied:
    """One partition's records of a batch: their changes and the next offset to read."""

    topic: str
    partition: int
    first_offset: int
    next_offset: int
    changes: Sequence[tuple[int, list[Change]]]  # (offset, changes) in offset order


class IndexStore:
    """The writable index file. One per process; not shared across threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = connect(path)
        self.db.executescript(_SCHEMA)
        # an SQLite built without FTS5: error search falls back to LIKE
        with contextlib.suppress(sqlite3.OperationalError):
            self.db.executescript(_FTS_SCHEMA)
        self.db.execute("CREATE INDEX IF NOT EXISTS tasks_by_error ON tasks (error_type)")

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
            writer = _Writer(self.db)
            for part in batch:
                stored = self._stored(part.topic, part.partition)
                fresh = [(o, c) for o, c in part.changes if o >= stored]
                for offset, changes in fresh:
                    writer.add(part.partition, offset, changes)
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
    per kind (a tombstone deletes what came before it; rows after it come back)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.tasks: dict[str, StatusRow] = {}
        self.history: list[StatusRow] = []
        self.outcomes: Counter[tuple[int, str, str]] = Counter()

    def add(self, partition: int, offset: int, changes: list[Change]) -> None:
        for change in changes:
            if isinstance(change, StatusRow):
                self._status(change)
            elif isinstance(change, TaskGone):
                self.flush()
                self.db.execute("DELETE FROM tasks WHERE task_id = ?", (change.task_id,))
                self.db.execute("DELETE FROM history WHERE task_id = ?", (change.task_id,))
            elif isinstance(change, DeadLetterRow):
                self.db.execute(_INSERT_DEAD, tuple(getattr(change, c) for c in _DEAD_COLUMNS))
            elif isinstance(change, Redriven):
                self._redriven(change)

    def _status(self, row: StatusRow) -> None:
        # only the highest version of a task in a batch reaches `tasks` (a worker writes queued,
        # running and the outcome within milliseconds: one upsert instead of three)
        current = self.tasks.get(row.task_id)
        if current is None or row.version >= current.version:
            self.tasks[row.task_id] = row
        self.history.append(row)
        if row.state in _COUNTED:
            bucket = row.updated_at_ms - row.updated_at_ms % BUCKET_MS
            self.outcomes[(bucket, row.queue, row.state)] += 1

    def _redriven(self, change: Redriven) -> None:
        key = (change.queue, change.partition, change.offset)
        if change.done:
            self.db.execute(
                "INSERT OR REPLACE INTO redrives VALUES (?, ?, ?, ?)", (*key, change.note)
            )
        else:
            self.db.execute(
                'DELETE FROM redrives WHERE queue = ? AND partition = ? AND "offset" = ?', key
            )

    def flush(self) -> None:
        if self.tasks:
            self.db.executemany(_UPSERT_TASK, [row[:_TASK_WIDTH] for row in self.tasks.values()])
            self.db.executemany(_INSERT_HISTORY, self.history)
            self.tasks.clear()
            self.history.clear()
        if self.outcomes:
            self.db.executemany(
                "INSERT INTO outcomes VALUES (?, ?, ?, ?) "
                "ON CONFLICT DO UPDATE SET n = n + excluded.n",
                [(*key, n) for key, n in self.outcomes.items()],
            )
            self.outcomes.clear()
