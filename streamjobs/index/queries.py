"""Questions the index answers: a task, its history, searches, counts and chart series.

Owns :class:`IndexReader` (a read-only connection to the index file) and the typed filters and
answers of the dashboard and the CLI: a task's latest :class:`~streamjobs.status.StatusView`
and every status record seen for it, a filtered and paged task search (state, task type, key,
queue, time range, error text through FTS5 or LIKE), counts by state, outcomes per time bucket,
dead letters by filter and by reason, workers live or lost (from their stored heartbeats, judged
at read time), the queue's schedules and a task's pending cancel. Every query is served by an
index of the schema in :mod:`streamjobs.index.schema`; none scans the tasks table.

Does not write, follow Kafka, or render anything.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamjobs.errors import BadInput, DecodeError
from streamjobs.index.rows import unpack_history
from streamjobs.index.schema import connect, has_fts
from streamjobs.index.store import BUCKET_MS
from streamjobs.metrics.heartbeat import WorkerView, classify, decode_report
from streamjobs.models import TaskState
from streamjobs.scheduler.book import Book
from streamjobs.scheduler.manage import Summary, summarize
from streamjobs.status import StatusView, status_values

_VIEW_COLUMNS = (
    "task_id", "task", "queue", "state", "version", "attempt", "generation", "updated_at_ms",
    "key", "result", "error_type", "error", "reason", "topic", "partition", "offset",
    "worker_id", "trace_id", "not_before_ms", "submitted_at_ms", "note",
)  # fmt: skip
#: How long ``<prefix>.workers`` keeps a report (its retention, streamjobs.topics).
WORKERS_KEPT_MS = 86_400_000
_SELECT_VIEW = ", ".join(f'"{c}"' for c in _VIEW_COLUMNS)


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """A task search; every field left None matches everything."""

    queue: str | None = None
    state: str | None = None
    task: str | None = None
    key: str | None = None
    text: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    """Dead letters of ``queue`` (one name, or several: a dashboard serving several queues)."""

    queue: str | tuple[str, ...]
    reason: str | None = None
    task: str | None = None
    task_id: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None


@dataclass(frozen=True, slots=True)
class DeadLetterEntry:
    """A dead letter as the index knows it, with its redrive ledger entry if any."""

    queue: str
    partition: int
    offset: int
    timestamp_ms: int
    reason: str
    task_id: str | None
    task: str | None
    error_type: str | None
    error: str | None
    attempts: int
    generation: int
    worker_id: str | None
    failed_at_ms: int
    origin_topic: str | None
    origin_partition: int | None
    origin_offset: int | None
    redriven: bool
    redrive_note: str | None

    @property
    def ref(self) -> str:
        return f"{self.partition}:{self.offset}"


@dataclass(frozen=True, slots=True)
class PendingCancel:
    """A cancel requested for a task that no worker has reached yet."""

    generation: int
    requested_at_ms: int
    requested_by: str | None


@dataclass(frozen=True, slots=True)
class Bucket:
    """Outcomes written in one time bucket, per state."""

    start_ms: int
    counts: dict[str, int]


def _view(row: Sequence[Any]) -> StatusView:
    values = dict(zip(_VIEW_COLUMNS, row, strict=True))
    values["state"] = TaskState(values["state"])
    values["result_json"] = values.pop("result")
    return StatusView(**values)


Queues = str | Sequence[str] | None


def queue_clause(column: str, queues: Queues) -> tuple[str, list[Any]]:
    """An SQL condition on ``column`` for one queue, any of several, or (None) every queue."""
    if queues is None:
        return "1", []
    names = [queues] if isinstance(queues, str) else list(queues)
    if len(names) == 1:
        return f"{column} = ?", names
    return f"{column} IN ({', '.join('?' * len(names))})", names


def fts_query(text: str) -> str:
    """User text as an FTS5 query: every word must appear (each quoted, so no syntax leaks)."""
    words = [w.replace('"', '""') for w in text.split() if w]
    return " ".join(f'"{w}"' for w in words)


class IndexReader:
    """A read-only view of the index file; cheap to open, one per request or command."""

    def __init__(self, path: Path) -> None:
        self.db = connect(path, readonly=True)
        self.fts = has_fts(self.db)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> IndexReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def task(self, task_id: str) -> StatusView | None:
        row = self.db.execute(
            f"SELECT {_SELECT_VIEW} FROM tasks WHERE task_id = ?", (task_id,)
        ).fetchone()
        return None if row is None else _view(row)

    def history(self, task_id: str) -> list[StatusView]:
        """Every status record of ``task_id`` the index has seen, oldest version first."""
        rows = self.db.execute("SELECT entry FROM history WHERE task_id = ?", (task_id,))
        seen = []
        for (entry,) in rows.fetchall():
            for partition, offset, value in unpack_history(entry):
                with contextlib.suppress(DecodeError, BadInput):  # its head decoded, its body not
                    values = status_values(value)
                    seen.append(((values[4], values[7], partition, offset), values))
        seen.sort(key=lambda found: found[0])  # version, updated_at_ms, where it was read
        return [_view(values) for _, values in seen]

    def search(self, where: TaskFilter, *, limit: int = 50, offset: int = 0) -> list[StatusView]:
        """Tasks matching ``where``, most recently updated first."""
        clauses, params = self._task_clauses(where)
        sql = f"SELECT {_SELECT_VIEW} FROM tasks"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY updated_at_ms DESC LIMIT ? OFFSET ?"
        rows = self.db.execute(sql, (*params, limit, offset)).fetchall()
        return [_view(r) for r in rows]

    def _task_clauses(self, where: TaskFilter) -> tuple[list[str], list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for column in ("queue", "state", "task", "key"):
            value = getattr(where, column)
            if value:
                clauses.append(f"{column} = ?")
                params.append(value)
        if where.since_ms is not None:
            clauses.append("updated_at_ms >= ?")
            params.append(where.since_ms)
        if where.until_ms is not None:
            clauses.append("updated_at_ms < ?")
            params.append(where.until_ms)
        if where.text and where.text.strip():
            if self.fts:
                clauses.append("rowid IN (SELECT rowid FROM tasks_fts WHERE tasks_fts MATCH ?)")
                params.append(fts_query(where.text))
            else:
                clauses.append("(error LIKE ? OR error_type LIKE ?)")
                params += [f"%{where.text.strip()}%"] * 2
        return clauses, params

    def state_counts(self, queue: Queues = None) -> dict[str, int]:
        """Tasks per latest state, of one queue, several, or (None) all."""
        where, params = queue_clause("queue", queue)
        rows = self.db.execute(
            f"SELECT state, sum(n) FROM state_counts WHERE {where} GROUP BY state "
            "HAVING sum(n) > 0",
            params,
        ).fetchall()
        return {state: int(n) for state, n in sorted(rows)}

    def states_by_queue(self) -> dict[str, dict[str, int]]:
        """Tasks per latest state, per queue (every queue the status topic has named)."""
        found: dict[str, dict[str, int]] = {}
        rows = self.db.execute("SELECT queue, state, n FROM state_counts WHERE n > 0 ORDER BY 1, 2")
        for queue, state, n in rows.fetchall():
            found.setdefault(queue, {})[state] = int(n)
        return found

    def succeeded_since(self, queue: str, since_ms: int) -> int:
        """Tasks of ``queue`` whose latest status is ``succeeded``, updated at or after."""
        row = self.db.execute(
            "SELECT count(*) FROM tasks WHERE queue = ? AND state = 'succeeded' "
            "AND updated_at_ms >= ?",
            (queue, since_ms),
        ).fetchone()
        return int(row[0])

    def outcomes(
        self, queue: Queues, since_ms: int, until_ms: int, bucket_ms: int = 60_000
    ) -> list[Bucket]:
        """Outcomes written per ``bucket_ms`` (a multiple of the stored 10 s), oldest first,
        every bucket of the range present (zero counts included) so a chart has no holes."""
        bucket_ms = max(BUCKET_MS, bucket_ms - bucket_ms % BUCKET_MS)
        first = since_ms - since_ms % bucket_ms
        sql = (
            "SELECT bucket_ms - bucket_ms % ?, state, sum(n) FROM outcomes "
            "WHERE bucket_ms >= ? AND bucket_ms < ?"
        )
        where, names = queue_clause("queue", queue)
        sql += f" AND {where}"
        params: list[Any] = [bucket_ms, first, until_ms, *names]
        found: dict[int, dict[str, int]] = {}
        for start, state, n in self.db.execute(sql + " GROUP BY 1, 2", params):
            found.setdefault(int(start), {})[state] = int(n)
        return [Bucket(s, found.get(s, {})) for s in range(first, until_ms, bucket_ms)]

    def dead_letters(
        self, where: DeadLetterFilter, *, limit: int = 50, offset: int = 0
    ) -> list[DeadLetterEntry]:
        """Dead letters matching ``where``, newest first."""
        first, params = queue_clause("d.queue", where.queue)
        clauses = [first]
        for column in ("reason", "task", "task_id"):
            value = getattr(where, column)
            if value:
                clauses.append(f"d.{column} = ?")
                params.append(value)
        if where.since_ms is not None:
            clauses.append("d.failed_at_ms >= ?")
            params.append(where.since_ms)
        if where.until_ms is not None:
            clauses.append("d.failed_at_ms < ?")
            params.append(where.until_ms)
        rows = self.db.execute(
            "SELECT d.*, r.queue IS NOT NULL, r.note FROM dead_letters d LEFT JOIN redrives r "
            'ON r.queue = d.queue AND r.partition = d.partition AND r."offset" = d."offset" '
            f"WHERE {' AND '.join(clauses)} ORDER BY d.failed_at_ms DESC LIMIT ? OFFSET ?",
            (*params, limit, offset),
        ).fetchall()
        return [_dead(r) for r in rows]

    def dead_letter(self, queue: str, partition: int, offset: int) -> DeadLetterEntry | None:
        row = self.db.execute(
            "SELECT d.*, r.queue IS NOT NULL, r.note FROM dead_letters d LEFT JOIN redrives r "
            'ON r.queue = d.queue AND r.partition = d.partition AND r."offset" = d."offset" '
            'WHERE d.queue = ? AND d.partition = ? AND d."offset" = ?',
            (queue, partition, offset),
        ).fetchone()
        return None if row is None else _dead(row)

    def dead_letter_reasons(self, queue: Queues) -> dict[str, int]:
        """Dead letters per reason, of one queue, several, or (None) all."""
        where, params = queue_clause("queue", queue)
        rows = self.db.execute(
            f"SELECT reason, count(*) FROM dead_letters WHERE {where} GROUP BY reason", params
        ).fetchall()
        return {reason: int(n) for reason, n in sorted(rows)}

    def dead_letters_by_queue(self) -> dict[str, tuple[int, int]]:
        """Per queue: (dead letters, of which re-driven)."""
        rows = self.db.execute(
            "SELECT d.queue, count(*), count(r.queue) FROM dead_letters d LEFT JOIN redrives r "
            'ON r.queue = d.queue AND r.partition = d.partition AND r."offset" = d."offset" '
            "GROUP BY d.queue"
        ).fetchall()
        return {queue: (int(n), int(redriven)) for queue, n, redriven in rows}

    def redriven_count(self, queue: str) -> int:
        row = self.db.execute("SELECT count(*) FROM redrives WHERE queue = ?", (queue,))
        return int(row.fetchone()[0])

    def workers(self, now_ms: int) -> list[WorkerView]:
        """Every worker's latest heartbeat (of every queue of the prefix), judged live or lost
        as of ``now_ms``. A worker that stopped gracefully left with its tombstone; a killed
        one stays, lost, for as long as the topic keeps its report (a day: retention deletes
        without a tombstone, so the index stops showing it by age)."""
        reports = []
        rows = self.db.execute(
            "SELECT report FROM workers WHERE reported_at_ms >= ?", (now_ms - WORKERS_KEPT_MS,)
        )
        for (value,) in rows.fetchall():
            with contextlib.suppress(DecodeError, BadInput, TypeError):
                reports.append(decode_report(value))
        return classify(reports, now_ms)

    def schedules(self, queue: str) -> list[Summary]:
        """The schedules of ``queue`` as ``streamjobs schedules list`` shows them, folded from
        the stored records by the scheduler's own :class:`~streamjobs.scheduler.book.Book`."""
        book = Book()
        rows = self.db.execute(
            "SELECT key, value FROM schedule_records WHERE queue = ? ORDER BY key", (queue,)
        )
        for key, value in rows.fetchall():
            book.apply(bytes(key), bytes(value))
        found = (summarize(entry) for entry in book.of_queue(queue))
        return [summary for summary in found if summary is not None]

    def pending_cancel(self, task: StatusView) -> PendingCancel | None:
        """The cancel request covering ``task`` while its state is not final: the task shows
        the state its workers wrote (``queued``, say) until one reaches its record and writes
        ``cancelled``; this says a cancel is on its way. None for a finished task, or one whose
        generation is newer than the request (a replay after the cancel runs)."""
        if task.state.final:
            return None
        row = self.db.execute(
            "SELECT generation, requested_at_ms, requested_by FROM cancels WHERE task_id = ?",
            (task.task_id,),
        ).fetchone()
        if row is None or task.generation > row[0]:
            return None
        return PendingCancel(int(row[0]), int(row[1]), row[2])

    def applied_offsets(self) -> dict[tuple[str, int], int]:
        rows = self.db.execute("SELECT topic, partition, next_offset FROM offsets").fetchall()
        return {(t, int(p)): int(o) for t, p, o in rows}


def _dead(row: sqlite3.Row | tuple[Any, ...]) -> DeadLetterEntry:
    values = list(row)
    values[-2] = bool(values[-2])
    return DeadLetterEntry(*values)
