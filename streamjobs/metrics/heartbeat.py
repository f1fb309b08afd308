"""Worker heartbeats: who is working, on what, as reports on the compacted ``<prefix>.workers``.

Owns the report a worker publishes every ``heartbeat_interval`` (id, host, pid, version, queue,
group, concurrency, start time, partitions, in-flight and parked counts, the attempts running
now with their start times, totals; Avro ``schemas/worker_report.avsc``, keyed by worker id), the
tombstone it writes when it stops gracefully, and reading the topic back: the latest report per
worker, each judged ``live`` or ``lost`` (no report for ``lost_after`` of its own intervals) by
the pure :func:`classify`. A killed worker's last report stays, marked lost, until the topic's
one-day retention deletes it. Does not serve HTTP or count attempts
(:mod:`streamjobs.metrics.prometheus`), and never stops a worker: a report that cannot be written
is a warning.
"""

from __future__ import annotations

import enum
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from importlib import metadata
from typing import Any

from streamjobs import client
from streamjobs.codec import builtin
from streamjobs.errors import DecodeError, StreamJobsError
from streamjobs.metrics.running import RunningTask, snapshot
from streamjobs.settings import Settings
from streamjobs.topics import queue_topics
from streamjobs.worker.loop import Worker

_CODEC = builtin("worker_report")
_log = logging.getLogger(__name__)
MAX_RUNNING = 50  # running attempts listed in one report (the in-flight count has them all)
LOST_AFTER = 3  # missed intervals before a worker is shown as lost


def version() -> str:
    try:
        return metadata.version("streamjobs")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


@dataclass(frozen=True, slots=True)
class WorkerReport:
    """One heartbeat; times are Unix milliseconds."""

    worker_id: str
    host: str
    pid: int
    version: str
    queue: str
    group: str
    concurrency: int
    started_at_ms: int
    reported_at_ms: int
    interval_ms: int
    partitions: int
    in_flight: int
    parked: int
    started: int
    succeeded: int
    retried: int
    dead_lettered: int
    running: tuple[RunningTask, ...] = ()


def encode_report(report: WorkerReport) -> bytes:
    record: dict[str, Any] = {
        name: getattr(report, name) for name in WorkerReport.__dataclass_fields__
    }
    record["running"] = [
        {
            "task_id": r.task_id,
            "task": r.task,
            "key": r.key,
            "attempt": r.attempt,
            "started_at_ms": int(r.started_at * 1000),
        }
        for r in report.running[:MAX_RUNNING]
    ]
    return _CODEC.encode(record)


def decode_report(value: bytes) -> WorkerReport:
    """A report from its framed bytes; DecodeError for anything else."""
    record = _CODEC.decode(value)
    running = tuple(
        RunningTask(r["task_id"], r["task"], r["key"], int(r["attempt"]), r["started_at_ms"] / 1000)
        for r in record.pop("running")
    )
    return WorkerReport(**record, running=running)


class Liveness(enum.StrEnum):
    LIVE = "live"
    LOST = "lost"


@dataclass(frozen=True, slots=True)
class WorkerView:
    """A worker as ``streamjobs workers`` shows it: its latest report and how old that is."""

    report: WorkerReport
    state: Liveness
    age_ms: int


def classify(
    reports: Iterable[WorkerReport], now_ms: int, lost_after: int = LOST_AFTER
) -> list[WorkerView]:
    """Judge each worker by the age of its latest report against its own interval: older than
    ``lost_after`` intervals is lost. Live workers first, then by queue and id. Pure."""
    views = []
    for report in reports:
        age = max(0, now_ms - report.reported_at_ms)
        lost = age > lost_after * report.interval_ms
        views.append(WorkerView(report, Liveness.LOST if lost else Liveness.LIVE, age))
    views.sort(key=lambda v: (v.state is Liveness.LOST, v.report.queue, v.report.worker_id))
    return views


def latest_reports(records: Iterable[tuple[bytes | None, bytes | None]]) -> list[WorkerReport]:
    """The latest report per worker id from ``(key, value)`` records in topic order; a
    tombstone removes its worker and an undecodable value is skipped. Pure."""
    latest: dict[bytes, WorkerReport] = {}
    for key, value in records:
        if key is None:
            continue
        if value is None:
            latest.pop(key, None)
            continue
        try:
            latest[key] = decode_report(value)
        except DecodeError as exc:
            _log.warning("skipping a record on the workers topic: %s", exc)
    return list(latest.values())


def read_reports(settings: Settings, timeout: float = 30.0) -> list[WorkerReport]:
    """Read ``<prefix>.workers`` to its current end: the latest report of every worker that
    has not stopped gracefully."""
    topic = queue_topics(settings).workers
    clients = client.KafkaClients(settings)
    reader = clients.reader()
    try:
        partitions = reader.partition_ids(topic)
    finally:
        reader.close()
    ranges = client.ranges_to_end(clients, topic, dict.fromkeys(partitions))
    records = client.read_range(clients, topic, ranges, idle_timeout=timeout)
    return latest_reports((r.key, r.value) for r in records)


class Heartbeat:
    """Publishes a worker's report every ``settings.heartbeat_interval`` from its own thread,
    and a tombstone on :meth:`stop`. Use as a context manager around ``worker.run()``."""

    def __init__(self, settings: Settings, worker: Worker) -> None:
        self._settings = settings
        self._worker = worker
        self._topic = queue_topics(settings).workers
        self._key = worker.worker_id.encode()
        self._started_at_ms = int(time.time() * 1000)
        self._interval = settings.heartbeat_interval.total_seconds()
        self._template = WorkerReport(
            worker_id=worker.worker_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            version=version(),
            queue=",".join(worker.queues),  # every queue it serves, highest first
            group=settings.group,
            concurrency=settings.concurrency,
            started_at_ms=self._started_at_ms,
            reported_at_ms=0,
            interval_ms=int(self._interval * 1000),
            partitions=0,
            in_flight=0,
            parked=0,
            started=0,
            succeeded=0,
            retried=0,
            dead_lettered=0,
        )
        self._producer = client.new_producer(settings)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="streamjobs-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def report(self) -> WorkerReport:
        """The report as of now."""
        worker, stats = self._worker, self._worker.stats
        return replace(
            self._template,
            reported_at_ms=int(time.time() * 1000),
            partitions=len(stats.partitions),
            in_flight=worker.in_flight,
            parked=worker.parked,
            started=stats.started,
            succeeded=stats.succeeded,
            retried=stats.retried,
            dead_lettered=stats.dead_lettered,
            running=tuple(snapshot(worker.running_tasks())[:MAX_RUNNING]),
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, *, tombstone: bool = True) -> None:
        """Stop reporting; with ``tombstone`` the worker leaves ``streamjobs workers`` at once."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self._interval + 10.0)
        if tombstone:
            self._write(None)
        self._producer.flush(10.0)

    def _run(self) -> None:
        while True:
            try:
                self._write(encode_report(self.report()))
            except Exception:  # a heartbeat never stops the worker; the next one may work
                _log.warning("heartbeat report failed", exc_info=True)
            if self._stop.wait(self._interval):
                return

    def _write(self, value: bytes | None) -> None:
        try:
            client.produce_confirmed(self._producer, self._topic, [(self._key, value)], 10.0)
        except StreamJobsError as exc:
            _log.warning("heartbeat not written: %s", exc)
