"""The index and the dashboard at size: apply rate, restart catch-up, page renders, inspect.

    python bench/dashboard.py [--kafka-records 150000] [--tasks 1000000] [--runs 15]

1. apply, no Kafka: status records (queued, running, outcome per task) decoded, mapped and
   written to a fresh index file, records/s;
2. apply from Kafka: ``--kafka-records`` status records produced to a real status topic, then
   one ``Follower.catch_up`` from an empty index, records/s from the first read to the commit;
   then 3,000 more records and a *new* follower on the same file (a restart): how many it
   applies (must be exactly the 3,000) and how long that takes;
3. at ``--tasks`` tasks (default 1,000,000): an index file filled directly from generated
   status rows (two per task, 10% failed with error text), then the server-side render time
   of a task page, a filtered search (state + error text), a key search and the overview
   through the ASGI app in-process (Starlette's TestClient, no network), median of ``--runs``;
4. ``inspect`` with that index configured (Kafka for lag and tiers, the index for counts).

Uses KAFKA_BOOTSTRAP_SERVERS if set, else starts the local broker. Deletes its topics.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydantic import SecretStr
from starlette.testclient import TestClient

from streamjobs import Settings, client, topics
from streamjobs.codec import builtin
from streamjobs.dashboard.app import create_app
from streamjobs.dashboard.live import Backlog
from streamjobs.dashboard.pages import Dashboard
from streamjobs.dev.kafka import given_or_local
from streamjobs.envelope import Envelope
from streamjobs.index.follower import BATCH, Follower
from streamjobs.index.rows import StatusSeen, status_changes
from streamjobs.index.store import Applied, IndexStore
from streamjobs.models import TaskState, status_version
from streamjobs.ops.inspect import inspect
from streamjobs.status import encode_status, now_ms

STATES = (TaskState.QUEUED, TaskState.RUNNING, TaskState.SUCCEEDED)
WORDS = ("gateway", "timeout", "refused", "quota", "invalid", "missing", "locked", "overflow")


def _status_values(count: int, start: int = 0) -> list[tuple[bytes, bytes]]:
    """(key, value) of ``count`` status records: three per task, like a worker writes."""
    out = []
    for n in range(start, start + count):
        task, state = divmod(n, 3)
        envelope = Envelope(
            task_id=f"task-{task:08d}", task="Resize", queue="default", key=f"k{task % 500}",
            payload=b"", payload_schema=bytes(8), submitted_at_ms=now_ms(),
        )  # fmt: skip
        value = encode_status(envelope, STATES[state], worker_id="w-1", topic="q", partition=0)
        out.append((envelope.task_id.encode(), value))
    return out


def apply_without_kafka(count: int) -> tuple[float, float]:
    records = [client.BareRecord(0, i, 0, k, v) for i, (k, v) in enumerate(_status_values(count))]
    with tempfile.TemporaryDirectory() as folder:
        store = IndexStore(Path(folder) / "index.db")
        began, cpu = time.perf_counter(), time.process_time()
        for first in range(0, count, BATCH):
            chunk = records[first : first + BATCH]
            changes = [(r.offset, status_changes(r)) for r in chunk]
            store.apply([Applied("s", 0, chunk[0].offset, chunk[-1].offset + 1, changes)])
        elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
        store.close()
    return count / elapsed, count / cpu


def apply_from_kafka(settings: Settings, count: int, path: Path) -> dict[str, float]:
    status_topic = topics.queue_topics(settings).status
    producer = client.new_producer(settings, **{"linger.ms": 20})
    client.produce_confirmed(producer, status_topic, _status_values(count), timeout=300)
    began, cpu = time.perf_counter(), time.process_time()
    with Follower(settings) as follower:
        first = follower.catch_up(timeout=60)
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
    client.produce_confirmed(producer, status_topic, _status_values(3000, start=count))
    began = time.perf_counter()
    with Follower(settings) as restarted:
        second = restarted.catch_up(timeout=60)
    restart = time.perf_counter() - began
    return {
        "applied": first.applied[status_topic],
        "rate": first.applied[status_topic] / elapsed,
        "cpu_rate": first.applied[status_topic] / cpu,
        "restart_applied": second.applied[status_topic],
        "restart_s": restart,
    }


_STATUS = builtin("task_status")


def _row(n: int, state: TaskState, at: int, failed: bool, offset: int) -> StatusSeen:
    error = f"{WORDS[n % 8]} {WORDS[(n // 8) % 8]} at step {n % 97}" if failed else None
    fields = {
        "task_id": f"syn-{n:08d}", "task": ("Resize", "Email", "Charge")[n % 3],
        "queue": "default", "state": state.value, "version": status_version(0, 1, state),
        "attempt": 1, "generation": 0, "updated_at_ms": at, "key": f"k{n % 5000}",
        "result": None if failed else "1", "error_type": "ConnectionError" if failed else None,
        "error": error, "reason": "max_attempts" if failed else None, "topic": "q",
        "partition": n % 6, "offset": n, "worker_id": "w-1", "trace_id": None,
        "not_before_ms": None, "submitted_at_ms": at,
        "note": "Traceback ..." if failed else None,
    }  # fmt: skip
    head = [fields[name] for name in list(fields)[:8]]
    return StatusSeen(*head, _STATUS.encode(fields), 0, offset)


def fill_index(path: Path, tasks: int) -> float:
    """``tasks`` tasks over the last 24 hours, two status records each; seconds taken."""
    store = IndexStore(path)
    now = now_ms()
    began = time.perf_counter()
    offset = 0
    for first in range(0, tasks, 10_000):
        rows: list[tuple[int, list[Any]]] = []
        for n in range(first, min(first + 10_000, tasks)):
            at = now - 86_400_000 + n * 86_400_000 // tasks
            failed = n % 10 == 0
            final = TaskState.DEAD_LETTERED if failed else TaskState.SUCCEEDED
            rows.append((offset, [_row(n, TaskState.RUNNING, at - 50, False, offset)]))
            rows.append((offset + 1, [_row(n, final, at, failed, offset + 1)]))
            offset += 2
        store.apply([Applied("synthetic", 0, rows[0][0], rows[-1][0] + 1, rows)])
    store.close()
    return time.perf_counter() - began


def _median_ms(call: Callable[[], Any], runs: int) -> float:
    call()  # warm caches the way a running dashboard has them
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        response = call()
        times.append((time.perf_counter() - began) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
    return statistics.median(times)


def render_times(settings: Settings, path: Path, tasks: int, runs: int) -> dict[str, float]:
    board = Dashboard(settings, path, Backlog(settings), SecretStr("bench"))
    with TestClient(create_app(board, secret_key="bench")) as browser:
        token = browser.get("/login").text.split('name="csrf" value="')[1].split('"')[0]
        browser.post("/login", data={"csrf": token, "password": "bench"})
        middle = f"syn-{tasks // 2:08d}"
        return {
            "task page": _median_ms(lambda: browser.get(f"/tasks/{middle}"), runs),
            "search state+text": _median_ms(
                lambda: browser.get("/tasks?state=dead_lettered&text=gateway+quota"), runs
            ),
            "search key+since": _median_ms(lambda: browser.get("/tasks?key=k42&since=6h"), runs),
            "overview (1 h)": _median_ms(lambda: browser.get("/"), runs),
            "overview (24 h)": _median_ms(lambda: browser.get("/?hours=24"), runs),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kafka-records", type=int, default=150_000)
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    wall, cpu = apply_without_kafka(60_000)
    print(f"1. apply without Kafka: {wall:,.0f} status records/s ({cpu:,.0f} per CPU-second)")
    folder = Path(tempfile.mkdtemp(prefix="streamjobs-bench-index-"))
    with given_or_local(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")) as bootstrap:
        settings = Settings(
            bootstrap_servers=bootstrap,
            topic_prefix=f"bd{uuid.uuid4().hex[:6]}",
            index_path=folder / "kafka.db",
        )
        topics.ensure(settings)
        try:
            kafka = apply_from_kafka(settings, args.kafka_records, folder / "kafka.db")
            print(
                f"2. apply from Kafka: {kafka['applied']:,.0f} records at "
                f"{kafka['rate']:,.0f} records/s ({kafka['cpu_rate']:,.0f} per CPU-second of this "
                f"process); after a restart: {kafka['restart_applied']:,.0f}"
                f" records applied (3,000 new) in {kafka['restart_s']:.2f} s"
            )
            big = folder / "big.db"
            built = fill_index(big, args.tasks)
            size = sum(p.stat().st_size for p in folder.glob("big.db*")) / 1e6
            print(f"3. index of {args.tasks:,} tasks filled in {built:.0f} s ({size:,.0f} MB)")
            for page, ms in render_times(settings, big, args.tasks, args.runs).items():
                print(f"   {page:<20} {ms:7.1f} ms (median of {args.runs})")
            indexed = settings.model_copy(update={"index_path": big})
            began = time.perf_counter()
            inspect(indexed)  # applies the real status topic's records on top, once
            first_s = time.perf_counter() - began
            took = []
            for _ in range(3):
                began = time.perf_counter()
                report = inspect(indexed)
                took.append(time.perf_counter() - began)
            print(
                f"4. inspect with the index: {statistics.median(took):.2f} s caught up (median "
                f"of 3), {first_s:.2f} s the first time (it applied the Kafka topic's records); "
                f"{sum(report.states.values()):,} tasks"
            )
        finally:
            admin = client.new_admin(settings)
            names = [t for t in admin.topic_partitions() if t.startswith(settings.topic_prefix)]
            admin.delete_topics(names)
            for leftover in folder.glob("*"):
                leftover.unlink()
            folder.rmdir()


if __name__ == "__main__":
    main()
