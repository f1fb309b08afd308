"""Recurring tasks: fire lateness on a loaded worker, and failover time after a SIGKILL.

    python bench/schedules.py [--schedules 10] [--seconds 30] [--load 200] [--kills 2]

Lateness: ``--schedules`` schedules fire every second for ``--seconds`` seconds on one worker
that also runs a stream of ``--load`` tasks/s (each sleeps 5 ms, concurrency 8). For every fire
it reports two latenesses, p50/p99/max: *fired* (the task record's timestamp, taken inside the
fire's transaction, minus the due time) and *visible* (when a ``read_committed`` reader outside
the worker received the task, minus the due time: what a user sees).

Failover: three ``streamjobs consume`` processes run the ``failover`` schedule (every second,
``catch_up="all"``); the leader is killed with SIGKILL ``--kills`` times. It reports, per kill,
the seconds until the first fire by another worker, and whether any due time was duplicated or
missed. Under KIP-848 the broker's ``group.consumer.session.timeout.ms`` bounds this from below
(10 s on the local broker). Uses KAFKA_BOOTSTRAP_SERVERS if set, else starts the local broker.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamjobs import Producer, Settings, Task, TaskRegistry, Worker, client, topics
from streamjobs.envelope import decode_envelope
from streamjobs.scheduler import Scheduler
from streamjobs.scheduler.manage import read_book
from streamjobs.scheduler.state import due_of, schedule_of
from streamjobs.topics import queue_topics

ROOT = Path(__file__).resolve().parents[1]


class Beat(Task):
    n: int = 0


class Work(Task):
    n: int


registry = TaskRegistry()  # the failover processes load this: bench.schedules:registry


@registry.handler(Beat)
def beat(task: Beat) -> int:
    return task.n


@registry.handler(Work)
def work(task: Work) -> None:
    time.sleep(0.005)


registry.schedule("failover", every=timedelta(seconds=1), task=Beat(), catch_up="all")


def _percentiles(label: str, values_ms: list[float]) -> str:
    if not values_ms:
        return f"{label:>8} lateness ms: no fires"
    ordered = sorted(values_ms)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"{label:>8} lateness ms: p50 {statistics.median(ordered):7.1f}  p99 {p99:7.1f}  "
        f"max {ordered[-1]:7.1f}  ({len(ordered)} fires)"
    )


class FireWatch:
    """A read_committed reader of the main topic: when each fire became visible."""

    def __init__(self, settings: Settings) -> None:
        self.seen: dict[str, tuple[float, float]] = {}  # task_id -> (visible, record ts) s
        self._settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        topic = queue_topics(self._settings).main
        consumer = client.new_reader(self._settings)
        parts = consumer.partition_ids(topic)
        consumer.assign([client.TopicPartition(topic, p, client.OFFSET_END) for p in parts])
        try:
            while not self._stop.is_set():
                for record in consumer.consume(500, 0.1):
                    now = time.time()
                    assert record.value is not None
                    task_id = decode_envelope(record.value).task_id
                    if schedule_of(task_id) is not None:
                        self.seen[task_id] = (now, record.timestamp_ms / 1000)
        finally:
            consumer.close()


def lateness(bootstrap: str, schedules: int, seconds: float, load: int) -> None:
    settings = Settings(
        bootstrap_servers=bootstrap,
        topic_prefix=f"sched{uuid.uuid4().hex[:6]}",
        partitions=6,
        concurrency=8,
    )
    topics.ensure(settings)
    tasks = TaskRegistry()
    tasks.handler(Beat)(beat)
    tasks.handler(Work)(work)
    for i in range(schedules):
        tasks.schedule(f"s{i}", every=timedelta(seconds=1), task=Beat(n=i), catch_up="all")
    watch = FireWatch(settings)
    watch.start()
    worker = Worker(settings, tasks)
    scheduler = Scheduler(settings, tasks, owner="bench", on_failure=worker.fail)
    runner = threading.Thread(target=worker.run, daemon=True)
    runner.start()
    scheduler.start()
    stop_load = threading.Event()
    loader = threading.Thread(target=_load, args=(settings, load, stop_load), daemon=True)
    loader.start()
    # the first seconds include joining the groups and publishing the schedules
    time.sleep(5 + seconds)  # the measurement window
    stop_load.set()
    loader.join()
    scheduler.stop()
    worker.stop()
    runner.join()
    watch.stop()
    fired, visible = [], []
    start = time.time() - seconds - 1
    for task_id, (seen_at, created) in watch.seen.items():
        due = due_of(task_id)
        if due is None or due.timestamp() < start:
            continue
        fired.append((created - due.timestamp()) * 1000)
        visible.append((seen_at - due.timestamp()) * 1000)
    print(f"lateness: {schedules} schedules every 1s for {seconds:.0f}s, load {load} tasks/s")
    print(_percentiles("fired", fired))
    print(_percentiles("visible", visible))
    print(f"worker ran {worker.stats.succeeded} tasks")
    _drop_topics(settings)


def _load(settings: Settings, rate: int, stop: threading.Event) -> None:
    """Submit ``rate`` Work tasks per second in batches of a tenth of a second."""
    if rate <= 0:
        return
    batch = max(1, rate // 10)
    n = 0
    with Producer(settings) as producer:
        while not stop.is_set():
            began = time.monotonic()
            producer.submit_many([Work(n=n + i) for i in range(batch)])
            n += batch
            stop.wait(max(0.0, 0.1 - (time.monotonic() - began)))


def failover(bootstrap: str, kills: int, workers: int) -> None:
    settings = Settings(
        bootstrap_servers=bootstrap, topic_prefix=f"fail{uuid.uuid4().hex[:6]}", partitions=3
    )
    topics.ensure(settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMJOBS_")}
    env.update({"PYTHONPATH": str(ROOT), "OTEL_SDK_DISABLED": "true"})
    command = [sys.executable, "-m", "streamjobs.cli", "consume", "bench.schedules:registry"]
    command += ["-b", bootstrap, "--topic-prefix", settings.topic_prefix, "--log-level", "WARNING"]
    procs = [
        subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
        for _ in range(workers)
    ]
    try:
        owner = _wait_owner(settings, None, 60.0)
        for _ in range(kills):
            victim = _by_owner(procs, owner)
            victim.send_signal(signal.SIGKILL)
            killed = time.time()
            victim.wait()
            procs.remove(victim)
            # a replacement keeps the group at its size, as a supervisor would
            procs.append(subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.DEVNULL))
            new_owner = _wait_owner(settings, owner, 90.0)
            first = _first_fire_after(settings, killed)
            print(f"failover after SIGKILL: first fire by another worker {first - killed:.1f}s")
            owner = new_owner
        time.sleep(3)
        ids = _fire_ids(settings)
        dues = sorted(d for t in ids if (d := due_of(t)) is not None)
        steps = Counter(round((b - a).total_seconds()) for a, b in itertools.pairwise(dues))
        duplicated = sum(n - 1 for n in Counter(ids).values() if n > 1)
        print(
            f"failover fires: {len(ids)}, duplicated {duplicated}, "
            f"gaps {sum(n for s, n in steps.items() if s != 1)}"
        )
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(30)
        _drop_topics(settings)


def _drop_topics(settings: Settings) -> None:
    """A shared broker keeps no benchmark topics behind."""
    admin = client.new_admin(settings)
    names = [s.name for s in topics.topic_specs(settings)]
    admin.delete_topics(names)


def _state(settings: Settings) -> object:
    entry = read_book(settings).get(settings.queue, "failover")
    return entry.state if entry else None


def _wait_owner(settings: Settings, not_this: str | None, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _state(settings)
        owner = getattr(state, "owner", None)
        if owner is not None and owner != not_this:
            return str(owner)
        time.sleep(0.2)
    raise SystemExit(f"no fire by a new leader within {timeout}s")


def _first_fire_after(settings: Settings, killed: float) -> float:
    """When the first fire after the kill happened (the new leader's catch-up fires are in the
    state's recent fires, read right after the owner changed)."""
    recent = getattr(_state(settings), "recent", ())
    after = [f.fired_at_ms / 1000 for f in recent if f.fired_at_ms / 1000 > killed]
    return min(after) if after else time.time()


def _by_owner(procs: list[subprocess.Popen[bytes]], owner: str) -> subprocess.Popen[bytes]:
    pid = int(owner.rsplit("-", 2)[1])
    return next(p for p in procs if p.pid == pid)


def _fire_ids(settings: Settings) -> list[str]:
    topic = queue_topics(settings).main
    consumer = client.new_reader(settings)
    try:
        parts = consumer.partition_ids(topic)
    finally:
        consumer.close()
    clients = client.KafkaClients(settings)
    ranges = client.ranges_to_end(clients, topic, dict.fromkeys(parts))
    ids = []
    for record in client.read_range(clients, topic, ranges):
        assert record.value is not None
        task_id = decode_envelope(record.value).task_id
        if schedule_of(task_id) == "failover":
            ids.append(task_id)
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--schedules", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--load", type=int, default=200, help="background tasks per second")
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args()
    from streamjobs.dev.kafka import given_or_local

    with given_or_local(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")) as bootstrap:
        lateness(bootstrap, args.schedules, args.seconds, args.load)
        if args.kills:
            failover(bootstrap, args.kills, args.workers)
    print(json.dumps({"done": True}))


if __name__ == "__main__":
    main()
