"""The cost of serving several queues in one worker, on the no-op throughput bench.

    python bench/queues.py [--tasks 10000] [--rounds 3] [--mode drain|e2e]

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
from pathlib import Path

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
    worker = Worker(_settings(bootstrap, prefix, queues), throughput.registry)
    throughput._state["expect"] = expect
    thread = threading.Thread(target=worker.run)
    thread.start()
    worker.assigned.wait(30)
    cpu = time.process_time()
    out.put("ready")
    throughput._finished.wait(600)  # no polling: a waking thread would share the cores
    throughput._state["cpu"] = time.process_time() - cpu  # every thread of the worker process
    worker.stop()
    thread.join()
    out.put(json.dumps(throughput._state))


def bench_served(bootstrap: str, n: int, kind: str) -> tuple[float, float]:
    """Tasks/s draining ``n`` tasks of ``default`` with a worker serving ``SERVED[kind]``, and
    the worker process's CPU time per task in microseconds."""
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
    return n / (result["last"] - result["first"]), result["cpu"] / n * 1e6


def _delete_topics(bootstrap: str, prefix: str) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [t for t in admin.list_topics(timeout=30).topics if t.startswith(f"{prefix}.")]
    for future in admin.delete_topics(names, operation_timeout=60).values():
        future.result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with given_or_local(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")) as bootstrap:
        value, _ = throughput._sample_records()
        n = args.tasks
        print(f"broker {bootstrap}; drain {n} no-op tasks of one queue, 6 partitions, 500 keys")
        throughput.bench_raw(bootstrap, 20_000, value, drain=False)  # warm the broker, untimed
        bench_served(bootstrap, min(n, 2000), "one")
        rates: dict[str, list[float]] = {kind: [] for kind in ("raw", *SERVED)}
        cpu: dict[str, list[float]] = {kind: [] for kind in SERVED}
        for round_ in range(1, args.rounds + 1):
            rates["raw"].append(throughput.bench_raw(bootstrap, n, value, drain=True))
            for kind in SERVED:
                rate, per_task = bench_served(bootstrap, n, kind)
                rates[kind].append(rate)
                cpu[kind].append(per_task)
            now = ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in rates.items())
            used = ", ".join(f"{k} {v[-1]:.0f}" for k, v in cpu.items())
            print(f"round {round_}: {now}; worker CPU us/task: {used}", flush=True)
        rate = {k: statistics.median(v) for k, v in rates.items()}
        per_task = {k: statistics.median(v) for k, v in cpu.items()}
        print("median tasks/s: " + ", ".join(f"{k} {v:,.0f}" for k, v in rate.items()))
        used = ", ".join(f"{k} {v:.1f}" for k, v in per_task.items())
        print(f"median worker CPU us/task: {used}")
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
