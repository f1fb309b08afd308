"""Replay throughput: re-submission in chunks against the old one-record-at-a-time write.

    python bench/replay.py [--tasks 20000] [--sample 1000] [--chunk 500] [--runs 3]

Per run, on a fresh queue (6 partitions, 500 keys; a replay's cost is reading the range and
the confirmed writes, not running tasks), submits N no-op tasks with submit_many, then
times, in records/s:
  * replay, chunked: ``streamjobs.replay.replay`` of the whole main topic (N records) in chunks
    of --chunk, from the call to its return (status snapshot, reading, decoding, writes);
  * replay, dry run: the same range read and decided, nothing written (the ceiling of reading);
  * replay, one at a time: ``replay(..., chunk_size=1)`` of about --sample records (the first
    offsets of each partition), one confirmed two-phase write per record as before chunking;
  * Producer.resubmit loop: the same records (read, and the producer connected, before the
    clock starts) re-submitted with one ``Producer.resubmit`` each: the old write path alone.
No worker runs, and no tracing provider is installed (``streamjobs replay`` installs none).
Prints the median of --runs runs, every run, and the chunked replay's speed-up over both
one-at-a-time figures. Uses KAFKA_BOOTSTRAP_SERVERS if set, else starts the local broker
(streamjobs.dev.kafka).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamjobs import Producer, Settings, Task, topics
from streamjobs.client import KafkaClients, read_range
from streamjobs.dev.kafka import given_or_local
from streamjobs.envelope import Envelope, decode_envelope
from streamjobs.ops.replay import plan_ranges, replay

PARTITIONS = 6


class Noop(Task):
    n: int = 0


def _fresh_queue(bootstrap: str, tasks: int) -> Settings:
    settings = Settings(
        bootstrap_servers=bootstrap,
        topic_prefix=f"rp{uuid.uuid4().hex[:6]}",
        partitions=PARTITIONS,
    )
    topics.ensure(settings)
    with Producer(settings) as producer:
        for start in range(0, tasks, 2000):
            numbers = range(start, min(start + 2000, tasks))
            producer.submit_many(
                [Noop(n=i) for i in numbers], keys=[f"k{i % 500}" for i in numbers]
            )
    return settings


def _timed_replay(settings: Settings, **kwargs: Any) -> tuple[int, float]:
    """Records replayed and records/s, from the call to its return; none may fail."""
    start = time.perf_counter()
    summary = replay(settings, topic=topics.queue_topics(settings).main, **kwargs)
    elapsed = time.perf_counter() - start
    if summary.failed or summary.skipped or not summary.replayed:
        raise RuntimeError(f"replay: {summary.replayed} replayed, {summary.failed} failed")
    return summary.replayed, summary.replayed / elapsed


def _first_offsets(sample: int) -> dict[str, Any]:
    """The first offsets of every partition, about ``sample`` records in all (500 keys spread
    over 6 partitions fill them evenly)."""
    return {"from_offset": 0, "to_offset": -(-sample // PARTITIONS) - 1}


def _first_envelopes(settings: Settings, sample: int) -> list[Envelope]:
    """The envelopes the one-at-a-time replay reads, while the topic holds only the N."""
    main = topics.queue_topics(settings).main
    ranges = plan_ranges(settings, main, **_first_offsets(sample))
    with contextlib.closing(read_range(KafkaClients(settings), main, ranges)) as records:
        return [decode_envelope(record.value or b"") for record in records]


def _resubmit_loop(settings: Settings, envelopes: list[Envelope]) -> tuple[int, float]:
    """``envelopes`` re-submitted one by one with ``Producer.resubmit``, after one untimed
    resubmit (of the last, once more) has connected the producer."""
    with Producer(settings) as producer:

        def resubmit(envelope: Envelope) -> None:
            again = replace(envelope, generation=envelope.generation + 2)
            producer.resubmit(again, note="bench", origin=None)

        resubmit(envelopes[-1])
        start = time.perf_counter()
        for envelope in envelopes:
            resubmit(envelope)
        return len(envelopes), len(envelopes) / (time.perf_counter() - start)


def _after_now() -> datetime:
    """Now, once the millisecond has turned: records stamped before it are before this."""
    now = datetime.now(UTC)
    while datetime.now(UTC) - now < timedelta(milliseconds=2):
        time.sleep(0.001)  # waiting out a clock tick, not synchronising with the broker
    return now + timedelta(milliseconds=1)


def one_run(bootstrap: str, tasks: int, sample: int, chunk: int) -> dict[str, tuple[int, float]]:
    settings = _fresh_queue(bootstrap, tasks)
    # exactly the N submitted records, whatever the replays below add to the topic
    submitted = {"from_offset": 0, "to_time": _after_now()}
    sample_envelopes = _first_envelopes(settings, sample)
    # the dry run first (it writes nothing), then one at a time: both read what chunked reads
    figures = {"dry run": _timed_replay(settings, dry_run=True, **submitted)}
    figures["one at a time"] = _timed_replay(settings, chunk_size=1, **_first_offsets(sample))
    figures["chunked"] = _timed_replay(settings, chunk_size=chunk, **submitted)
    figures["resubmit loop"] = _resubmit_loop(settings, sample_envelopes)
    if figures["chunked"][0] != tasks:
        raise RuntimeError(f"replayed {figures['chunked'][0]} of {tasks} tasks")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=20000, help="tasks replayed in chunks")
    parser.add_argument("--sample", type=int, default=1000, help="records re-submitted singly")
    parser.add_argument("--chunk", type=int, default=500, help="re-submissions per write")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure; the median counts")
    args = parser.parse_args()
    with given_or_local(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")) as bootstrap:
        print(
            f"broker {bootstrap}; {args.tasks} tasks, 6 partitions, 500 keys, no worker; "
            f"chunks of {args.chunk}; one at a time: ~{args.sample}; median of {args.runs} runs"
        )
        runs = [one_run(bootstrap, args.tasks, args.sample, args.chunk) for _ in range(args.runs)]
        rows = (
            (f"replay, chunks of {args.chunk}", "chunked"),
            ("replay, dry run (read only)", "dry run"),
            ("replay, one at a time", "one at a time"),
            ("Producer.resubmit loop", "resubmit loop"),
        )
        print(f"{'':32}{'records/s':>12}{'records':>10}   (all runs)")
        for label, name in rows:
            rates = [run[name][1] for run in runs]
            spread = " ".join(f"{v:,.0f}" for v in rates)
            count = runs[0][name][0]
            print(f"{label:32}{statistics.median(rates):>12,.0f}{count:>10}   ({spread})")
        chunked = statistics.median(run["chunked"][1] for run in runs)
        for name in ("one at a time", "resubmit loop"):
            singly = statistics.median(run[name][1] for run in runs)
            print(f"{f'chunked / {name}':32}{chunked / singly:>11.1f}x")


if __name__ == "__main__":
    main()
