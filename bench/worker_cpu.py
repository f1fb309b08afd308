"""The worker's own CPU per task without a broker: plain vs observed, A/B rounds, or a profile.

    python bench/worker_cpu.py [--tasks 20000] [--rounds 6] [--profile plain|observed]

Runs N no-op tasks through one ``Worker`` whose Kafka clients are the unit tests' in-memory fake
(``tests/unit/fake_kafka.py``, with a leaner consumer), so what is measured is the worker's
Python path only: routing, the attempt, middleware, status encoding, settling, commits. Two
variants, in alternating order each round: **plain** (the default middleware, tracing only,
logging configured as ``streamjobs consume`` does) and **observed** (``Monitor.middleware``:
tracing, the task log at the default INFO level, metrics; no heartbeats or endpoint: those run
on their own threads, per interval, not per task). Prints the process CPU time per task of each
run (all threads) and the medians. ``--profile`` runs one variant under cProfile on every
thread and prints the top functions by own time. A fake's costs are the same in both variants;
the absolute figures are below a real worker's (no librdkafka).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import pstats
import statistics
import sys
import threading
import time
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamjobs import Settings, Task, TaskRegistry, Worker
from streamjobs.client import Record
from streamjobs.metrics import logs
from streamjobs.metrics.monitor import Monitor
from streamjobs.metrics.prometheus import new_registry
from tests.unit.fake_kafka import FakeConsumer, FakeKafka, task_record


class Noop(Task):
    n: int = 0


registry = TaskRegistry()
_done = {"count": 0, "expect": 0}
_finished = threading.Event()


@registry.handler(Noop)
def noop(task: Noop) -> None:
    _done["count"] += 1
    if _done["count"] == _done["expect"]:
        _finished.set()


class _LeanConsumer(FakeConsumer):
    """Hands out queued records in order, without the fake's per-consume scan."""

    def __init__(self, kafka: FakeKafka, on_commit: object) -> None:
        super().__init__(kafka, on_commit)  # type: ignore[arg-type]
        self.queue: deque[Record] = deque()

    def consume(self, count: int, timeout: float) -> list[Record]:
        taken = super().consume(0, 0.0) if self._events else []  # rebalances, commit reports
        while self.queue and len(taken) < count:
            taken.append(self.queue.popleft())
        if not taken:
            time.sleep(timeout)
        return taken


class _LeanKafka(FakeKafka):
    def worker_consumer(self, on_commit: object) -> _LeanConsumer:  # type: ignore[override]
        self.consumer = _LeanConsumer(self, on_commit)
        return self.consumer

    def log(self, kind: str, what: object) -> None:
        pass  # nobody reads the events here


def _records(settings: Settings, n: int) -> list[Record]:
    main = f"{settings.topic_prefix}.{settings.queue}"
    # contiguous offsets in each partition, as a real topic has (gaps would make every commit
    # hand over runs of offsets "done ahead", a cost a real worker does not have)
    return [
        task_record(Noop(n=i), topic=main, offset=i // 6, partition=i % 6, key=f"k{i % 500}")
        for i in range(n)
    ]


def run(n: int, observed: bool, profile: bool = False) -> float:
    """Worker CPU us per task of one run."""
    settings = Settings(topic_prefix="bench", partitions=6)
    kafka = _LeanKafka()
    monitor = Monitor(settings, registry=new_registry(), heartbeats=False) if observed else None
    worker = Worker(
        settings,
        registry,
        worker_id="w",
        clients=kafka,
        middleware=monitor.middleware if monitor is not None else None,
    )
    if monitor is not None:
        monitor.metrics.watch(worker)
    profiles: list[cProfile.Profile] = []
    original_run = threading.Thread.run
    if profile:

        def profiled(self: threading.Thread) -> None:
            prof = cProfile.Profile()
            profiles.append(prof)
            prof.enable()
            try:
                original_run(self)
            finally:
                prof.disable()

        threading.Thread.run = profiled  # type: ignore[method-assign]
    records = _records(settings, n)
    _done.update(count=0, expect=n)
    _finished.clear()
    thread = threading.Thread(target=worker.run)
    thread.start()
    while kafka.consumer is None:
        time.sleep(0.01)
    consumer = kafka.consumer
    assert isinstance(consumer, _LeanConsumer)
    main = f"{settings.topic_prefix}.{settings.queue}"
    consumer.rebalance("assign", *((main, p) for p in range(6)))
    worker.assigned.wait(10)
    cpu = time.process_time()
    consumer.queue.extend(records)
    _finished.wait(600)
    spent = time.process_time() - cpu
    worker.stop()
    thread.join()
    threading.Thread.run = original_run  # type: ignore[method-assign]
    if profile:
        out = io.StringIO()
        stats = pstats.Stats(profiles[0], stream=out)
        for prof in profiles[1:]:
            stats.add(prof)
        stats.sort_stats("tottime").print_stats(45)
        print(out.getvalue())
        out = io.StringIO()
        stats.stream = out  # type: ignore[attr-defined]
        stats.sort_stats("cumulative").print_stats(60)
        print(out.getvalue())
    return spent / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--profile", choices=("plain", "observed"))
    args = parser.parse_args()
    logs.configure("INFO", "text")  # as `streamjobs consume` does, in both variants
    logging.getLogger("streamjobs").setLevel(logging.INFO)
    run(2000, observed=True)  # warm-up: imports, first-use caches
    if args.profile:
        run(args.tasks, observed=args.profile == "observed", profile=True)
        return
    cpus: dict[bool, list[float]] = {False: [], True: []}
    for round_no in range(args.rounds):
        for observed in (False, True) if round_no % 2 == 0 else (True, False):
            cpus[observed].append(run(args.tasks, observed))
        print(f"round {round_no + 1}: plain {cpus[False][-1]:.1f} us CPU/task,"
              f" observed {cpus[True][-1]:.1f} us CPU/task", flush=True)  # fmt: skip
    plain, observed = (statistics.median(cpus[k]) for k in (False, True))
    print(f"median worker CPU per task: plain {plain:.1f} us, observed {observed:.1f} us"
          f" (+{100 * (observed / plain - 1):.1f}%)")  # fmt: skip


if __name__ == "__main__":
    main()
