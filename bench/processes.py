"""CPU-bound throughput: one worker process vs ``streamjobs consume --processes N``.

    python bench/processes.py [--tasks 3000] [--processes 2]

Each task spins 2 ms of pure Python (the GIL holds it, so threads cannot help: only processes
can). For 1 and for ``--processes`` worker processes, fills a fresh queue (12 partitions, 48
keys chosen 4 to a partition, so each process gets the same share of the work: with keys
``k0``..``k47`` the murmur2 hash put 3-7 keys on ten partitions and none on two, and the process
holding more keys set the pace), runs ``streamjobs consume`` with that many processes until
every task ran, and prints tasks/s measured from the first task's start to the last task's end
(as the handlers log them, so process start-up and the group join are not counted), and the
speed-up. Uses
KAFKA_BOOTSTRAP_SERVERS if set, else starts the local broker.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamjobs import Producer, Settings, Task, TaskRegistry, topics  # noqa: E402
from streamjobs.client.partitioner import murmur2_partition  # noqa: E402
from streamjobs.dev.kafka import given_or_local  # noqa: E402

SPIN_S = 0.002
PARTITIONS = 12
KEYS_PER_PARTITION = 4


class Crunch(Task):
    n: int
    log: str


registry = TaskRegistry()


@registry.handler(Crunch)
def crunch(task: Crunch) -> None:
    began = time.perf_counter()
    total = 0
    while time.perf_counter() - began < SPIN_S:  # the work under test: pure Python on the GIL
        total += sum(range(50))
    with open(task.log, "a", encoding="ascii") as log:
        log.write(f"{time.time() - (time.perf_counter() - began):.6f} {time.time():.6f}\n")


def run(bootstrap: str, tasks: int, processes: int) -> float:
    settings = Settings(
        bootstrap_servers=bootstrap,
        topic_prefix=f"proc{uuid.uuid4().hex[:6]}",
        partitions=PARTITIONS,
    )
    keys = even_keys(PARTITIONS, KEYS_PER_PARTITION)
    topics.ensure(settings)
    log = Path(tempfile.mkdtemp(prefix="bench-processes-")) / "runs.txt"
    log.touch()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OTEL_SDK_DISABLED": "true"}
    command = [sys.executable, "-m", "streamjobs.cli", "consume", "bench.processes:registry"]
    command += ["--bootstrap-servers", bootstrap, "--topic-prefix", settings.topic_prefix]
    command += ["--processes", str(processes), "--log-level", "WARNING"]
    worker = subprocess.Popen(command, env=env, cwd=ROOT)
    try:
        # every process in the group first: a late joiner would take partitions mid-run
        _await_members(settings, processes)
        with Producer(settings) as producer:
            producer.submit_many(
                [Crunch(n=i, log=str(log)) for i in range(tasks)],
                keys=[keys[i % len(keys)] for i in range(tasks)],
            )
        deadline = time.monotonic() + 600
        while len(log.read_text().splitlines()) < tasks:
            if time.monotonic() > deadline or worker.poll() is not None:
                raise SystemExit("the workers did not finish")
            time.sleep(0.5)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    spans = [tuple(map(float, line.split())) for line in log.read_text().splitlines()]
    elapsed = max(end for _, end in spans) - min(start for start, _ in spans)
    return tasks / elapsed


def even_keys(partitions: int, per_partition: int) -> list[str]:
    """Keys ``k<n>``, ``per_partition`` of them hashing to each partition (murmur2, as the
    producer partitions)."""
    chosen: dict[int, list[str]] = {p: [] for p in range(partitions)}
    for n in itertools.count():
        key = f"k{n}"
        slot = chosen[murmur2_partition(key.encode(), partitions)]
        if len(slot) < per_partition:
            slot.append(key)
        if all(len(keys) == per_partition for keys in chosen.values()):
            return [key for p in range(partitions) for key in chosen[p]]
    raise AssertionError("unreachable")


def _await_members(settings: Settings, count: int) -> None:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            group = admin.describe_consumer_groups([settings.group])[settings.group].result(10)
            if len([m for m in group.members if m.assignment.topic_partitions]) == count:
                return
        except (KafkaException, TimeoutError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"{count} workers did not join {settings.group}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=4000)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    with given_or_local(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")) as bootstrap:
        one = run(bootstrap, args.tasks, 1)
        print(f"1 process: {one:.0f} tasks/s (ideal {1 / SPIN_S:.0f})")
        many = run(bootstrap, args.tasks, args.processes)
        print(f"{args.processes} processes: {many:.0f} tasks/s, speed-up {many / one:.2f}x")


if __name__ == "__main__":
    main()
