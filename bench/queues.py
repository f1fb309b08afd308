"""The cost of serving several queues in one worker, on the no-op throughput bench.

    python bench/queues.py [--tasks 10000] [--rounds 3]
    python bench/queues.py --in-memory [--tasks 20000] [--rounds 6] [--profile strict]

One worker process drains ``--tasks`` no-op tasks (6 partitions, 500 keys) that are all in one
queue, ``default``, while it serves:
  * ``one``: that queue alone (the single-queue worker, no priority machinery);
  * ``strict``: ``critical``, ``default``, ``low`` in strict order (the other two idle: every
    task pays for the per-queue bookkeeping, the ranked executor and the backlog measure);
  * ``weighted``: ``critical=6``, ``default=3``, ``low=1``;
and raw confluent-kafka reads the same records (one consumer, async commits every 200 ms) as the
other benches' reference. The configurations take turns, round after round, so a change in the
shared machine's load falls on all of them; prints each round, the medians of tasks/s and of the
worker process's CPU time per task (steadier than tasks/s on a shared machine), and the overhead
of ``strict`` and ``weighted`` against ``one`` (target: under 10%).
Uses KAFKA_BOOTSTRAP_SERVERS if set, else starts the local broker (streamjobs.dev.kafka).

``--in-memory`` runs the same three configurations on the in-memory fake Kafka of
``bench/worker_cpu.py`` (no broker, no librdkafka): the worker's Python path only, so what the
multi-queue machinery adds per task shows without the broker's noise; ``--profile KIND`` runs one
configuration under cProfile on every thread and prints the top functions by own time.

Diagnosis of the broker runs (not for timed figures): ``BENCH_CALLS=1`` prints each worker's
consumer calls (consumes, records, pauses, resumes, cached ends, commits) and its CPU per task by
thread (the poll thread, the executor's, librdkafka's); ``BENCH_PROFILE=1`` profiles every thread
of the worker process.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import throughput  # the no-op task, its handler and the raw baseline (bench/throughput.py)

from streamjobs import Producer, Settings, Worker, topics
from streamjobs.dev.kafka import given_or_local

SERVED = {
    "one": ["default"],
    "strict": ["critical", "default", "low"],
    "weighted": ["critical=6", "default=3", "low=1"],
}


def _settings(bootstrap: str, prefix: str, queues: list[str]) -> Settings:
    """One queue as ``queue`` (the plain single-queue worker), several as ``queues``."""
    served = {"queue": queues[0]} if len(queues) == 1 else {"queues": queues}
    return Settings(bootstrap_servers=bootstrap, topic_prefix=prefix, partitions=6, **served)


def worker_process(
    bootstrap: str, prefix: str, queues: list[str], expect: int, out: mp.Queue
) -> None:
    """One streamjobs worker serving ``queues``; reports when ``expect`` tasks finished."""
    calls = _count_consumer_calls() if os.environ.get("BENCH_CALLS") else None
    profiles = _ThreadProfiles() if os.environ.get("BENCH_PROFILE") else None
    worker = Worker(_settings(bootstrap, prefix, queues), throughput.registry)
    throughput._state["expect"] = expect
    thread = threading.Thread(target=worker.run)
    thread.start()
    worker.assigned.wait(30)
    cpu, threads = time.process_time(), _thread_cpu()
    out.put("ready")
    throughput._finished.wait(600)  # no polling: a waking thread would share the cores
    throughput._state["cpu"] = time.process_time() - cpu  # every thread of the worker process
    after = _thread_cpu()
    rdk = sum(
        t - threads.get(tid, (name, 0.0))[1]
        for tid, (name, t) in after.items()
        if name.startswith("rdk:")
    )
    throughput._state["rdk_cpu"] = rdk
    if profiles is not None:
        print(f"{queues}: profile of every thread", file=sys.stderr, flush=True)
        profiles.report(sys.stderr)
    if calls is not None:
        print(f"{queues}: consumer calls {dict(calls)}", file=sys.stderr, flush=True)
        by_thread: dict[str, float] = {}
        for tid, (name, t) in after.items():
            kind = name.rstrip("0123456789").rstrip("-:")
            by_thread[kind] = by_thread.get(kind, 0.0) + t - threads.get(tid, (name, 0.0))[1]
        per_task = {k: round(v / expect * 1e6, 1) for k, v in sorted(by_thread.items()) if v}
        print(f"{queues}: CPU us/task by thread {per_task}", file=sys.stderr, flush=True)
    worker.stop()
    thread.join()
    out.put(json.dumps(throughput._state))


def _count_consumer_calls() -> dict[str, int]:
    """Counts of the worker consumer's calls (and records consumed, partitions paused and
    resumed), by wrapping :class:`streamjobs.client.KafkaConsumer` in this process
    (``BENCH_CALLS=1``: a diagnosis, not for timed runs)."""
    from collections import Counter

    from streamjobs.client import KafkaConsumer

    calls: Counter[str] = Counter()

    def counted(name: str) -> None:
        original = getattr(KafkaConsumer, name)

        def wrapper(self: KafkaConsumer, *args: object, **kwargs: object) -> object:
            calls[name] += 1
            if name in ("pause", "resume"):
                calls[f"{name}d_partitions"] += len(args[0])  # type: ignore[arg-type]
            found = original(self, *args, **kwargs)
            if name == "consume":
                calls["records"] += len(found)
            return found

        setattr(KafkaConsumer, name, wrapper)

    for name in ("consume", "pause", "resume", "seek", "cached_end", "committed", "commit"):
        counted(name)
    return calls


def _thread_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds per thread of this process (Linux /proc), with the thread's name: librdkafka
    names its threads ``rdk:...``, Python's threads keep the process name."""
    ticks = os.sysconf("SC_CLK_TCK")
    named = {t.native_id: t.name for t in threading.enumerate()}
    found = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        tid = int(task.name)
        name = named.get(tid, name)  # a Python thread: its Python name
        found[tid] = (name, (int(fields[11]) + int(fields[12])) / ticks)
    return found


def bench_served(bootstrap: str, n: int, kind: str) -> tuple[float, float, float]:
    """Tasks/s draining ``n`` tasks of ``default`` with a worker serving ``SERVED[kind]``, the
    worker process's CPU time per task in microseconds, and the part of it in librdkafka's
    threads."""
    prefix = f"q{uuid.uuid4().hex[:6]}"
    queues = SERVED[kind]
    for name in ("critical", "default", "low"):
        topics.ensure(_settings(bootstrap, prefix, [name]))
    default = _settings(bootstrap, prefix, ["default"])
    out: mp.Queue = mp.Queue()
    with Producer(default) as producer:
        warmup = producer.submit(throughput.Noop(n=-1), key="warmup")
        for chunk in range(0, n, 2000):
            size = min(2000, n - chunk)
            producer.submit_many(
                [throughput.Noop(n=i) for i in range(chunk, chunk + size)],
                keys=[f"k{i % 500}" for i in range(chunk, chunk + size)],
            )
        proc = mp.Process(target=worker_process, args=(bootstrap, prefix, queues, n, out))
        proc.start()
        throughput._await_ready(out)
        warmup.wait(60)
        result = json.loads(out.get(timeout=600))
    proc.join()
    _delete_topics(bootstrap, prefix)  # the broker is shared: leave no topics behind
    rate = n / (result["last"] - result["first"])
    return rate, result["cpu"] / n * 1e6, result["rdk_cpu"] / n * 1e6


def _delete_topics(bootstrap: str, prefix: str) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [t for t in admin.list_topics(timeout=30).topics if t.startswith(f"{prefix}.")]
    for future in admin.delete_topics(names, operation_timeout=60).values():
        future.result()


def run_in_memory(n: int, kind: str, profile: bool = False, batch: int = 0) -> float:
    """Worker CPU us per task draining ``n`` tasks of ``default`` on the fake Kafka while it
    serves ``SERVED[kind]`` (every served queue's main and tier partitions assigned); each
    consume returns at most ``batch`` records (0: as many as asked), as a broker's fetches do."""
    import worker_cpu  # the fake Kafka's lean consumer, the no-op task (bench/worker_cpu.py)

    settings = _settings("fake:9092", "bench", SERVED[kind])
    kafka = worker_cpu._LeanKafka()
    worker = Worker(settings, worker_cpu.registry, worker_id="w", clients=kafka)
    records = worker_cpu._records(settings.for_queue("default"), n)
    worker_cpu._done.update(count=0, expect=n)
    worker_cpu._finished.clear()
    profiler = _ThreadProfiles() if profile else None
    thread = threading.Thread(target=worker.run)
    thread.start()
    while kafka.consumer is None:
        time.sleep(0.01)
    consumer = kafka.consumer
    if batch:
        consumer.consume = _limited(consumer.consume, batch)  # type: ignore[method-assign]
    served = [t for q, _ in settings.served_queues for t in _task_topics(settings, q)]
    consumer.rebalance("assign", *((topic, p) for topic in served for p in range(6)))
    worker.assigned.wait(10)
    cpu = time.process_time()
    consumer.queue.extend(records)
    worker_cpu._finished.wait(600)
    spent = time.process_time() - cpu
    worker.stop()
    thread.join()
    if profiler is not None:
        profiler.report()
    return spent / n * 1e6


def _limited(consume: Callable[[int, float], list], most: int) -> Callable[[int, float], list]:
    def limited(count: int, timeout: float) -> list:
        return consume(min(count, most), timeout)

    return limited


def _task_topics(settings: Settings, queue: str) -> list[str]:
    return topics.queue_topics(settings.for_queue(queue)).task_topics


class _ThreadProfiles:
    """cProfile on every thread started while it is installed (the worker's poll thread, its
    executor threads, its delivery thread)."""

    def __init__(self) -> None:
        import cProfile

        self.profiles: list[cProfile.Profile] = []
        self._original = threading.Thread.run
        profiles, original = self.profiles, self._original

        def profiled(thread: threading.Thread) -> None:
            prof = cProfile.Profile()
            profiles.append(prof)
            prof.enable()
            try:
                original(thread)
            finally:
                prof.disable()

        threading.Thread.run = profiled  # type: ignore[method-assign]

    def report(self, to: Any = None) -> None:
        import io
        import pstats

        threading.Thread.run = self._original  # type: ignore[method-assign]
        out = io.StringIO()
        stats = pstats.Stats(self.profiles[0], stream=out)
        for prof in self.profiles[1:]:
            stats.add(prof)
        stats.sort_stats("tottime").print_stats(int(os.environ.get("TOP", "40")))
        print(out.getvalue(), file=to or sys.stdout)


def main_in_memory(n: int, rounds: int, profile: str | None, batch: int) -> None:
    run_in_memory(2000, "strict")  # warm-up: imports, first-use caches
    if profile:
        run_in_memory(n, profile, profile=True, batch=batch)
        return
    cpu: dict[str, list[float]] = {kind: [] for kind in SERVED}
    for round_ in range(1, rounds + 1):
        kinds = list(SERVED) if round_ % 2 else list(reversed(SERVED))
        for kind in kinds:
            cpu[kind].append(run_in_memory(n, kind, batch=batch))
        used = ", ".join(f"{k} {v[-1]:.1f}" for k, v in cpu.items())
        print(f"round {round_}: worker CPU us/task: {used}", flush=True)
    per_task = {k: statistics.median(v) for k, v in cpu.items()}
    print("median worker CPU us/task: " + ", ".join(f"{k} {v:.1f}" for k, v in per_task.items()))
    for kind in ("strict", "weighted"):
        print(f"{kind} vs one queue: {per_task[kind] / per_task['one'] - 1:+.1%} CPU per task")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--in-memory", action="store_true", help="the fake Kafka, no broker")
    parser.add_argument("--profile", choices=list(SERVED), help="with --in-memory: cProfile")
    parser.add_argument(
        "--batch", type=int, default=0, help="with --in-memory: records per consume at most"
    )
    args = parser.parse_args()
    if args.in_memory:
        main_in_memory(args.tasks, args.rounds, args.profile, args.batch)
        return
    with given_or_local(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")) as bootstrap:
        value, _ = throughput._sample_records()
        n = args.tasks
        print(f"broker {bootstrap}; drain {n} no-op tasks of one queue, 6 partitions, 500 keys")
        throughput.bench_raw(bootstrap, 20_000, value, drain=False)  # warm the broker, untimed
        bench_served(bootstrap, min(n, 2000), "one")
        rates: dict[str, list[float]] = {kind: [] for kind in ("raw", *SERVED)}
        cpu: dict[str, list[float]] = {kind: [] for kind in SERVED}
        rdk: dict[str, list[float]] = {kind: [] for kind in SERVED}
        for round_ in range(1, args.rounds + 1):
            rates["raw"].append(throughput.bench_raw(bootstrap, n, value, drain=True))
            for kind in SERVED:
                rate, per_task, in_rdk = bench_served(bootstrap, n, kind)
                rates[kind].append(rate)
                cpu[kind].append(per_task)
                rdk[kind].append(in_rdk)
            now = ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in rates.items())
            used = ", ".join(f"{k} {v[-1]:.0f} ({rdk[k][-1]:.0f})" for k, v in cpu.items())
            print(f"round {round_}: {now}; worker CPU us/task (librdkafka): {used}", flush=True)
        rate = {k: statistics.median(v) for k, v in rates.items()}
        per_task = {k: statistics.median(v) for k, v in cpu.items()}
        print("median tasks/s: " + ", ".join(f"{k} {v:,.0f}" for k, v in rate.items()))
        used = ", ".join(
            f"{k} {v:.1f} ({statistics.median(rdk[k]):.1f})" for k, v in per_task.items()
        )
        print(f"median worker CPU us/task (of which librdkafka's threads): {used}")
        for kind in ("strict", "weighted"):
            slower = 1 - rate[kind] / rate["one"]
            costlier = per_task[kind] / per_task["one"] - 1
            print(
                f"{kind} (3 queues, traffic in one) vs one queue: {slower:+.1%} tasks/s slower,"
                f" {costlier:+.1%} CPU per task"
            )
        print(f"one queue vs raw confluent-kafka: {rate['one'] / rate['raw']:.2f}x")


if __name__ == "__main__":
    main()
