"""I/O-bound throughput by per-worker concurrency: tasks that sleep 50 ms, 64 keys.

    python bench/concurrency.py [--tasks 640] [--levels 1,8,64]

For each concurrency level, drains a pre-filled queue of ``--tasks`` tasks (each sleeps 50 ms,
like an HTTP call) through one worker and prints tasks/s and the ratio to the ideal
``min(concurrency, keys) / 0.05 s``. Same-key tasks still run one at a time, so 64 keys cap the
useful concurrency at 64. Uses KAFKA_BOOTSTRAP_SERVERS if set, else starts the local broker.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamjobs import Producer, Settings, Task, TaskRegistry, Worker, topics
from streamjobs.dev.kafka import given_or_local

SLEEP_S = 0.05
KEYS = 64


class Fetch(Task):
    n: int


registry = TaskRegistry()
done = {"count": 0, "first": 0.0, "last": 0.0}
lock = threading.Lock()


@registry.handler(Fetch)
def fetch(task: Fetch) -> None:
    time.sleep(SLEEP_S)  # the work under test: an I/O wait
    with lock:
        if done["count"] == 0:
            done["first"] = time.time() - SLEEP_S
        done["count"] += 1
        done["last"] = time.time()


def run_level(bootstrap: str, tasks: int, concurrency: int) -> float:
    settings = Settings(
        bootstrap_servers=bootstrap,
        topic_prefix=f"conc{uuid.uuid4().hex[:6]}",
        partitions=6,
        concurrency=concurrency,
    )
    topics.ensure(settings)
    with Producer(settings) as producer:
        producer.submit_many(
            [Fetch(n=i) for i in range(tasks)], keys=[f"k{i % KEYS}" for i in range(tasks)]
        )
    done.update(count=0, first=0.0, last=0.0)
    worker = Worker(settings, registry)
    thread = threading.Thread(target=worker.run)
    thread.start()
    deadline = time.time() + 600
    while done["count"] < tasks and time.time() < deadline:
        time.sleep(0.01)  # benchmark bookkeeping only
    worker.stop()
    thread.join()
    return tasks / (done["last"] - done["first"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=640)
    parser.add_argument("--levels", default="1,8,64")
    args = parser.parse_args()
    with given_or_local(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")) as bootstrap:
        print(f"{args.tasks} tasks sleeping {SLEEP_S * 1000:.0f} ms over {KEYS} keys, 1 worker")
        print(f"{'concurrency':>12}{'tasks/s':>10}{'ideal':>10}{'ratio':>8}")
        for level in (int(x) for x in args.levels.split(",")):
            tasks = args.tasks if level > 1 else max(40, args.tasks // 16)
            rate = run_level(bootstrap, tasks, level)
            ideal = min(level, KEYS) / SLEEP_S
            print(f"{level:>12}{rate:>10,.0f}{ideal:>10,.0f}{rate / ideal:>8.2f}")


if __name__ == "__main__":
    main()
