"""The index file's schema: its tables, indexes and triggers, its version, and opening it.

Owns the SQL of the index (tasks with their latest status, every status record seen as history (the
records' bytes, one row per task and batch), dead letters, redrive ledger entries, counts by state,
per-10-second outcome counts for charts, workers' latest heartbeats, schedule records, cancel
requests, the applied Kafka offsets, and an external-content FTS5 table over error text when the
SQLite build has FTS5), :data:`VERSION` (a file written by another version is emptied and rebuilt
from Kafka: the file is a cache) and :func:`connect` (WAL journal, ``synchronous=NORMAL``: a crash
may lose the last transactions, never corrupt the file, and what it lost is re-read from Kafka
because the offsets are in the same transactions).

Does not write rows (:mod:`streamjobs.index.store`) or answer questions
(:mod:`streamjobs.index.queries`).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable
from pathlib import Path

#: Bumped whenever a table changes shape: an older file is dropped and rebuilt from Kafka.
VERSION = 3

TASK_COLUMNS = (
    "task_id", "task", "queue", "state", "version", "attempt", "generation", "updated_at_ms",
    "key", "result", "error_type", "error", "reason", "topic", "partition", "offset",
    "worker_id", "trace_id", "not_before_ms", "submitted_at_ms", "note",
)  # fmt: skip
DEAD_COLUMNS = (
    "queue", "partition", "offset", "timestamp_ms", "reason", "task_id", "task", "error_type",
    "error", "attempts", "generation", "worker_id", "failed_at_ms", "origin_topic",
    "origin_partition", "origin_offset",
)  # fmt: skip


def quoted(columns: Iterable[str]) -> str:
    return ", ".join(f'"{c}"' for c in columns)


# Every index below is written on every task upsert: each one is there for a query of
# streamjobs.index.queries (state+queue, task type, key, time; error text through FTS).
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
CREATE INDEX IF NOT EXISTS tasks_by_key ON tasks (key, updated_at_ms) WHERE key IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_by_time ON tasks (updated_at_ms);
CREATE TABLE IF NOT EXISTS history (task_id TEXT NOT NULL, entry BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS history_by_task ON history (task_id);
CREATE TABLE IF NOT EXISTS state_counts (
    queue TEXT NOT NULL, state TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (queue, state)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outcomes (
    bucket_ms INTEGER NOT NULL, queue TEXT NOT NULL, state TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (bucket_ms, queue, state)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters ({quoted(DEAD_COLUMNS)},
    PRIMARY KEY (queue, partition, "offset"));
CREATE INDEX IF NOT EXISTS dead_by_reason ON dead_letters (queue, reason, failed_at_ms);
CREATE INDEX IF NOT EXISTS dead_by_task ON dead_letters (task_id);
CREATE INDEX IF NOT EXISTS dead_by_time ON dead_letters (queue, failed_at_ms);
CREATE TABLE IF NOT EXISTS redrives (
    queue TEXT NOT NULL, partition INTEGER NOT NULL, "offset" INTEGER NOT NULL, note TEXT,
    PRIMARY KEY (queue, partition, "offset")) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS workers (
    worker_id TEXT PRIMARY KEY, queue TEXT NOT NULL, host TEXT NOT NULL,
    reported_at_ms INTEGER NOT NULL, interval_ms INTEGER NOT NULL, report BLOB NOT NULL
    ) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS schedule_records (
    key BLOB PRIMARY KEY, queue TEXT NOT NULL, name TEXT NOT NULL, kind TEXT NOT NULL,
    value BLOB NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS schedules_by_queue ON schedule_records (queue, name);
CREATE TABLE IF NOT EXISTS cancels (
    task_id TEXT PRIMARY KEY, generation INTEGER NOT NULL, requested_at_ms INTEGER NOT NULL,
    requested_by TEXT) WITHOUT ROWID;
"""

# External-content FTS5 over the tasks' error columns: the text lives once, in `tasks`, and
# only rows with error text are indexed (most tasks succeed and cost the FTS table nothing).
# No triggers keep it (or state_counts) in step: streamjobs.index.latest does, per batch.
_FTS_SCHEMA = """
CREATE VIRTUAL TABLE IF NOT EXISTS tasks_fts USING fts5(
    error_type, error, content='tasks', content_rowid='rowid');
"""


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
    db.execute("PRAGMA temp_store=MEMORY")
    return db


def has_fts(db: sqlite3.Connection) -> bool:
    found = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'tasks_fts'").fetchone()
    return found is not None


def create(db: sqlite3.Connection) -> None:
    """Make the tables of this :data:`VERSION`, first dropping those of another version (their
    offsets go with them: the follower rebuilds the file from Kafka). One transaction, under the
    write lock, so two processes opening an old file migrate it once."""
    db.execute("BEGIN IMMEDIATE")
    try:
        found = db.execute("PRAGMA user_version").fetchone()[0]
        if found != VERSION:
            _drop_all(db)
            _create(db)
            db.execute(f"PRAGMA user_version = {VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _create(db: sqlite3.Connection) -> None:
    for statement in _statements(_SCHEMA):
        db.execute(statement)
    # an SQLite built without FTS5: error search falls back to LIKE
    with contextlib.suppress(sqlite3.OperationalError):
        for statement in _statements(_FTS_SCHEMA):
            db.execute(statement)


def _statements(script: str) -> list[str]:
    """``script`` split into statements (executescript would commit the open transaction)."""
    found, current = [], ""
    for line in script.strip().splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            found.append(current.strip())
            current = ""
    return found


def _drop_all(db: sqlite3.Connection) -> None:
    db.execute("DROP TABLE IF EXISTS tasks_fts")  # its shadow tables go with it
    rows = db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    ).fetchall()
    for (name,) in rows:
        db.execute(f'DROP TABLE IF EXISTS "{name}"')
