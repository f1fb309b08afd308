"""The Python work per task that any worker of this design must do, timed without Kafka.

    python bench/floor.py [--tasks 100000]

Times, per no-op task, the steps a worker cannot skip and still keep streamjobs' contract:
decode the Avro envelope (framed, every byte checked), decode the payload and validate it into
the pydantic task model, encode the ``running`` and ``succeeded`` status records, and hand those
two records to librdkafka (queued only: no broker, nothing is sent). Their sum bounds what one
worker process can run per second on one core, before consuming, acknowledgements, offset
tracking, commits or the handler itself. ``bench/throughput.py`` measures the real thing.
"""

from __future__ import annotations

import argparse
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import SAMPLE_WHERE, _sample_records, registry  # the same task and records

from streamjobs import status
from streamjobs.envelope import decode_envelope
from streamjobs.models import TaskState
from streamjobs.worker.handler_call import result_json


def steps() -> list[tuple[str, Callable[[], Any]]]:
    from confluent_kafka import Producer

    value, statuses = _sample_records()
    envelope = decode_envelope(value)
    handler = registry.get("Noop")
    # nothing listens on port 1 and the linger outlasts the run: records are only queued
    producer = Producer(
        {
            "bootstrap.servers": "127.0.0.1:1",
            "linger.ms": 200_000,  # under message.timeout.ms (300 s)
            "queue.buffering.max.messages": 2_000_000,
            "queue.buffering.max.kbytes": 2_000_000,
            "log_level": 0,
        }
    )

    def on_delivery(_error: Any, _message: Any) -> None:
        return None

    def encode_statuses() -> None:
        run = status.AttemptStatuses(envelope, SAMPLE_WHERE)
        run.encode(TaskState.RUNNING)
        run.encode(TaskState.SUCCEEDED, result_json(None))

    def produce_two() -> None:
        producer.produce("t", statuses[1], b"k", on_delivery=on_delivery)
        producer.produce("t", statuses[2], b"k", on_delivery=on_delivery)

    return [
        ("decode envelope", lambda: decode_envelope(value)),
        ("decode + validate payload", lambda: handler.load(envelope.payload)),
        ("encode running + succeeded", encode_statuses),
        ("queue 2 records (no I/O)", produce_two),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000, help="calls per step and run")
    args = parser.parse_args()
    total = 0.0
    for label, step in steps():
        micros = min(timeit.repeat(step, number=args.tasks, repeat=3)) / args.tasks * 1e6
        total += micros
        print(f"{label:30}{micros:8.2f} us")
    print(f"{'total per task':30}{total:8.2f} us")
    print(f"{'at most, one core':30}{1e6 / total:8,.0f} tasks/s")


if __name__ == "__main__":
    main()
