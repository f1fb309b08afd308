"""Throughput and latency of streamjobs against raw confluent-kafka, in one run, same broker.

    python bench/throughput.py [--tasks 20000] [--runs 3] [--paced 3000] [--rate 100] [--warm N]

Prints, for N no-op tasks with one worker process:
  * raw confluent-kafka: produce N records (the same encoded envelopes) while one consumer
    process reads and commits them; records/s end to end and draining a full topic;
  * raw confluent-kafka writing the records a streamjobs task needs and nothing else (a queued
    status and the task from the submitter, running and succeeded from the consumer,
    with no waits, decoding or bookkeeping): the ceiling of this design in Python here;
  * streamjobs: submit_many N tasks while one `Worker` process runs them (status writes,
    commit after outcome); tasks/s end to end and draining a full queue; ratios to both;
  * submit-to-start latency p50/p99 at a paced rate (one `submit()` per task), in two rounds
    taking turns with raw: the broker's first minute of paced traffic, then the steady state.
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamjobs import Producer, Settings, Task, TaskRegistry, Worker, topics
from streamjobs.dev.kafka import given_or_local


class Noop(Task):
    n: int = 0
    sent_ns: int = 0


registry = TaskRegistry()
_state: dict[str, object] = {}
_finished = threading.Event()  # set by the handler that completes the expected count
_counting = threading.Lock()


@registry.handler(Noop)
def noop(task: Noop) -> None:
    if task.n < 0:
        return  # warm-up: not counted
    if task.sent_ns:
        lat = _state.setdefault("latencies", [])
        assert isinstance(lat, list)
        lat.append((time.time_ns() - task.sent_ns) / 1e6)
    with _counting:  # several executor threads (concurrency > 1) count too
        count = _state.get("count", 0)
        assert isinstance(count, int)
        if count == 0:
            _state["first"] = time.time()
        _state["count"] = count + 1
        _state["last"] = time.time()
    if count + 1 == _state.get("expect"):
        _finished.set()


def _settings(bootstrap: str, prefix: str, **extra: object) -> Settings:
    return Settings(bootstrap_servers=bootstrap, topic_prefix=prefix, partitions=6, **extra)


def worker_process(
    bootstrap: str, prefix: str, expect: int, out: mp.Queue, exactly_once: bool = False
) -> None:
    """One streamjobs worker; reports when it has finished ``expect`` tasks."""
    worker = Worker(_settings(bootstrap, prefix, exactly_once=exactly_once), registry)
    _state["expect"] = expect
    thread = threading.Thread(target=worker.run)
    thread.start()
    worker.assigned.wait(30)
    out.put("ready")
    _finished.wait(600)  # no polling: a waking thread would share the cores being measured
    worker.stop()
    thread.join()
    out.put(json.dumps({k: v for k, v in _state.items()}))


def _raw_consumer(bootstrap: str, topic: str, group_prefix: str) -> Any:
    """A plain confluent-kafka consumer of ``topic`` in a new group, manual commits."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{group_prefix}-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    return consumer


def _final_commit(consumer: Any) -> None:
    """Commit what is left; nothing left (the last periodic commit took it all) is fine."""
    from confluent_kafka import KafkaError, KafkaException

    try:
        consumer.commit(asynchronous=False)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError._NO_OFFSET:
            raise


def raw_consumer_process(bootstrap: str, topic: str, expect: int, out: mp.Queue) -> None:
    """The baseline: one confluent-kafka consumer, manual async commits every 200 ms. Says
    "ready" once it has read the warm-up record, then counts ``expect`` more."""
    consumer = _raw_consumer(bootstrap, topic, "raw")
    count, first, last = _count_records(consumer, expect, out)
    _final_commit(consumer)
    consumer.close()
    out.put(json.dumps({"count": count, "first": first, "last": last}))


def _count_records(
    consumer: Any, expect: int, out: mp.Queue, on_batch: Callable[[list[Any]], None] | None = None
) -> tuple[int, float, float]:
    """Read until ``expect`` records after the warm-up one (saying "ready" on it), committing
    asynchronously every 200 ms; ``on_batch`` sees each batch read. Returns the count and the
    times of the first counted record and of the last batch."""
    count, first, last, last_commit = -1, 0.0, 0.0, time.time()  # -1: the warm-up record
    while count < expect:
        messages = consumer.consume(1000, timeout=0.05)
        for message in messages:
            if message.error():
                continue
            if count == -1:
                out.put("ready")
            elif count == 0:
                first = time.time()
            count += 1
        if messages:
            last = time.time()
            if on_batch is not None:
                on_batch(messages)
        if time.time() - last_commit > 0.2:
            consumer.commit(asynchronous=True)
            last_commit = time.time()
    return count, first, last


def _await_ready(out: mp.Queue) -> None:
    if out.get(timeout=60) != "ready":
        raise RuntimeError("consumer did not start")


def bench_raw(bootstrap: str, n: int, value: bytes, drain: bool) -> float:
    """Raw confluent-kafka with the durability a submit has (idempotent, acks=all) and
    librdkafka's default batching. Both clients are connected and warm before the clock
    starts: one record goes through first."""
    topic = topics.queue_topics(_new_queue(bootstrap, "raw")).main

    def produce_one(producer: Any, i: int) -> None:
        producer.produce(topic, value, f"k{i % 500}".encode())

    return _timed_raw(bootstrap, n, drain, produce_one, raw_consumer_process, (topic,))


def _new_queue(bootstrap: str, kind: str) -> Settings:
    settings = _settings(bootstrap, f"{kind}{uuid.uuid4().hex[:6]}")
    topics.ensure(settings)
    return settings


def _timed_raw(
    bootstrap: str,
    n: int,
    drain: bool,
    produce_one: Callable[[Any, int], None],
    consumer: Callable[..., None],
    consumer_args: tuple[Any, ...],
) -> float:
    """Records/s of a raw run: ``produce_one(producer, i)`` for each of ``n`` tasks while the
    ``consumer`` process (``consumer(bootstrap, *consumer_args, n, out)``) reads them; one task
    goes through first, untimed."""
    from confluent_kafka import Producer as RawProducer

    producer = RawProducer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"}
    )

    def produce(count: int) -> None:
        for i in range(count):
            while True:
                try:
                    produce_one(producer, i)
                    break
                except BufferError:
                    producer.poll(0.01)
            if i % 1000 == 0:
                producer.poll(0)
        producer.flush()

    out: mp.Queue = mp.Queue()
    produce(1)  # the warm-up record
    if drain:
        produce(n)
    proc = mp.Process(target=consumer, args=(bootstrap, *consumer_args, n, out))
    proc.start()
    _await_ready(out)
    start = time.time()
    if not drain:
        produce(n)
    result = json.loads(out.get(timeout=600))
    proc.join()
    begin = result["first"] if drain else start
    return n / (result["last"] - begin)


def records_consumer_process(
    bootstrap: str,
    topic: str,
    status_topic: str,
    statuses: tuple[bytes, bytes],
    expect: int,
    out: mp.Queue,
) -> None:
    """The ceiling's consumer: for each task record, the two status records a run writes
    (``running``, ``succeeded``), keyed per task, and an asynchronous commit every 200 ms. It
    never waits for those acks before committing, as commit-after-outcome must, and it decodes
    nothing, runs no handler and keeps no books: an upper bound, not an implementation."""
    from confluent_kafka import Producer as RawProducer

    consumer = _raw_consumer(bootstrap, topic, "ceil")
    producer = RawProducer(  # the worker's outcome producer settings
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 2}
    )
    running, succeeded = statuses

    def write_outcomes(messages: list[Any]) -> None:
        for message in messages:
            if message.error():
                continue
            task_id = b"%d:%d" % (message.partition(), message.offset())
            producer.produce(status_topic, running, task_id)
            producer.produce(status_topic, succeeded, task_id)
        producer.poll(0)

    count, first, _ = _count_records(consumer, expect, out, write_outcomes)
    producer.flush()
    last = time.time()  # every outcome is acknowledged
    _final_commit(consumer)
    consumer.close()
    out.put(json.dumps({"count": count, "first": first, "last": last}))


def bench_ceiling(
    bootstrap: str, n: int, value: bytes, statuses: tuple[bytes, bytes, bytes], drain: bool
) -> float:
    """Raw confluent-kafka writing the records a streamjobs task needs, and nothing else: per
    task a ``queued`` status and the task record from the submitter (pipelined: it does not
    wait for the status ack first, as a submit must), then ``running`` and ``succeeded`` from
    the consumer. What any Python implementation of this design could reach on this machine:
    a ceiling, so it takes every shortcut the design forbids."""
    names = topics.queue_topics(_new_queue(bootstrap, "ceil"))
    queued = statuses[0]

    def produce_one(producer: Any, i: int) -> None:
        producer.produce(names.status, queued, uuid.uuid4().hex.encode())
        producer.produce(names.main, value, f"k{i % 500}".encode())

    consumer_args = (names.main, names.status, statuses[1:])
    return _timed_raw(bootstrap, n, drain, produce_one, records_consumer_process, consumer_args)


def bench_streamjobs(bootstrap: str, n: int, drain: bool, exactly_once: bool = False) -> float:
    """Like :func:`bench_raw`: a warm-up task runs (and the producer is connected) before the
    clock starts."""
    prefix = f"sj{uuid.uuid4().hex[:6]}"
    settings = _settings(bootstrap, prefix)
    topics.ensure(settings)
    out: mp.Queue = mp.Queue()

    def submit_all(producer: Producer) -> None:
        for chunk in range(0, n, 2000):
            size = min(2000, n - chunk)
            producer.submit_many(
                [Noop(n=i) for i in range(chunk, chunk + size)],
                keys=[f"k{i % 500}" for i in range(chunk, chunk + size)],
            )

    with Producer(settings) as producer:
        warmup = producer.submit(Noop(n=-1), key="warmup")
        if drain:
            submit_all(producer)
        proc = mp.Process(target=worker_process, args=(bootstrap, prefix, n, out, exactly_once))
        proc.start()
        _await_ready(out)
        warmup.wait(60)
        start = time.time()
        if not drain:
            submit_all(producer)
        result = json.loads(out.get(timeout=600))
    proc.join()
    begin = result["first"] if drain else start
    return n / (result["last"] - begin)


def bench_latency(bootstrap: str, count: int, rate: float) -> list[float]:
    prefix = f"lat{uuid.uuid4().hex[:6]}"
    settings = _settings(bootstrap, prefix)
    topics.ensure(settings)
    out: mp.Queue = mp.Queue()
    proc = mp.Process(target=worker_process, args=(bootstrap, prefix, count, out))
    proc.start()
    _await_ready(out)
    with Producer(settings) as producer:
        # announces the schema and lets the worker finish joining before anything is timed
        producer.submit(Noop(n=-1), key="warmup").wait(60)
        for i in _paced(_warmup_count(rate), rate):
            producer.submit(Noop(n=-1), key=f"k{i % 50}")  # untimed: n < 0 is not counted
        for i in _paced(count, rate):
            producer.submit(Noop(n=i, sent_ns=time.time_ns()), key=f"k{i % 50}")
    result = json.loads(out.get(timeout=600))
    proc.join()
    return sorted(result["latencies"])


def raw_latency_consumer(bootstrap: str, topic: str, expect: int, out: mp.Queue) -> None:
    """Baseline consumer: records produce-to-receive latency from a timestamp in the value."""
    consumer = _raw_consumer(bootstrap, topic, "rawlat")
    latencies: list[float] = []
    ready_sent = False
    while len(latencies) < expect:
        message = consumer.poll(0.05)
        if not ready_sent and consumer.assignment():
            out.put("ready")
            ready_sent = True
        if message is not None and not message.error() and message.value() != b"warmup":
            latencies.append((time.time_ns() - int(message.value())) / 1e6)
    consumer.close()
    out.put(json.dumps({"latencies": latencies}))


def bench_raw_latency(bootstrap: str, count: int, rate: float) -> list[float]:
    """The same pacing with raw confluent-kafka: one acknowledged produce per record (acks=all,
    idempotent, like a submit's task write; a submit also waits for its status write first)."""
    from confluent_kafka import Producer as RawProducer

    settings = _settings(bootstrap, f"rawlat{uuid.uuid4().hex[:6]}")
    topics.ensure(settings)
    topic = topics.queue_topics(settings).main
    out: mp.Queue = mp.Queue()
    proc = mp.Process(target=raw_latency_consumer, args=(bootstrap, topic, count, out))
    proc.start()
    _await_ready(out)
    producer = RawProducer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 0,
        }
    )
    for i in _paced(_warmup_count(rate), rate):
        producer.produce(topic, b"warmup", f"k{i % 50}".encode())  # untimed
        producer.flush()
    for i in _paced(count, rate):
        producer.produce(topic, str(time.time_ns()).encode(), f"k{i % 50}".encode())
        producer.flush()
    result = json.loads(out.get(timeout=600))
    proc.join()
    return sorted(result["latencies"])


def _paced(count: int, rate: float) -> Iterator[int]:
    """Yields 0..count-1, each at its slot of a fixed ``rate`` per second."""
    interval = 1.0 / rate
    next_at = time.perf_counter()
    for i in range(count):
        next_at += interval
        while time.perf_counter() < next_at:
            time.sleep(max(0.0, next_at - time.perf_counter()))  # pacing, not synchronisation
        yield i


def _warmup_count(rate: float) -> int:
    """Two seconds of untimed traffic first: new topics' first appends and JIT warm-up are
    not what a steady queue sees."""
    return int(rate * 2)


def _percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))
    return sorted_values[index]


def _median_of(runs: int, measure: Callable[[], float]) -> tuple[float, list[float]]:
    figures = [measure() for _ in range(runs)]
    return statistics.median(figures), figures


# where a sample run took its record: names as long as the bench's (topic, worker id)
SAMPLE_WHERE: dict[str, Any] = {
    "topic": "sj000000.default",
    "partition": 0,
    "offset": 1,
    "worker_id": "host-1234-aaaaaa",
    "trace_id": None,
}


def _sample_records() -> tuple[bytes, tuple[bytes, bytes, bytes]]:
    """The bytes of a real no-op task record and of its ``queued``, ``running`` and
    ``succeeded`` status records, for the raw baselines."""
    from streamjobs import status
    from streamjobs.envelope import Envelope, encode_envelope
    from streamjobs.models import TaskState
    from streamjobs.tasktypes import TaskType

    task_type = TaskType(Noop, "Noop")
    envelope = Envelope(
        task_id=uuid.uuid4().hex,
        task="Noop",
        queue="default",
        key="k1",
        payload=task_type.encode(Noop(n=1)),
        payload_schema=task_type.fingerprint,
        submitted_at_ms=int(time.time() * 1000),
    )
    run = status.AttemptStatuses(envelope, SAMPLE_WHERE)
    return encode_envelope(envelope), (
        status.encode_status(envelope, TaskState.QUEUED, topic=SAMPLE_WHERE["topic"]),
        run.encode(TaskState.RUNNING),
        run.encode(TaskState.SUCCEEDED, "null"),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3, help="runs per figure; the median counts")
    parser.add_argument("--paced", type=int, default=3000, help="tasks for the latency run")
    parser.add_argument("--rate", type=float, default=100.0, help="paced submits per second")
    parser.add_argument(
        "--warm", type=int, default=100_000, help="raw records that warm the broker, untimed"
    )
    args = parser.parse_args()
    with given_or_local(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")) as bootstrap:
        value, statuses = _sample_records()
        n, runs = args.tasks, args.runs
        print(
            f"broker {bootstrap}; {n} no-op tasks, 6 partitions, 500 keys, 1 worker process;"
            f" median of {runs} runs"
        )
        # a fresh broker's JIT compiles through its first minutes of load (paced p99 on a
        # new broker went 6.0 -> 4.1 -> 2.1 ms over three runs): warm it, untimed, and time
        # latency last, after the throughput runs. streamjobs' traffic takes broker paths raw
        # records do not (a compacted topic, idempotent writes to many partitions, group
        # commits): after 100k raw records the broker still spent 65 -> 49 -> 35 us of CPU per
        # task over three streamjobs runs, and end to end went 13.8k -> 16.0k -> 18.9k/s.
        bench_raw(bootstrap, args.warm, value, drain=False)
        for _ in range(2):
            bench_streamjobs(bootstrap, min(n, args.warm), drain=False)
        rows: list[tuple[str, float, float, list[float], list[float]]] = []

        def row(label: str, measure: Callable[[bool], float]) -> tuple[float, float]:
            e2e, e2e_all = _median_of(runs, lambda: measure(False))
            drain, drain_all = _median_of(runs, lambda: measure(True))
            rows.append((label, e2e, drain, e2e_all, drain_all))
            return e2e, drain

        raw_e2e, raw_drain = row(
            "raw confluent-kafka rec/s", lambda d: bench_raw(bootstrap, n, value, d)
        )
        ceil_e2e, ceil_drain = row(
            "raw, streamjobs' records", lambda d: bench_ceiling(bootstrap, n, value, statuses, d)
        )
        sj_e2e, sj_drain = row("streamjobs tasks/s", lambda d: bench_streamjobs(bootstrap, n, d))
        row("streamjobs exactly-once", lambda d: bench_streamjobs(bootstrap, n, d, True))
        print(f"{'':28}{'end to end':>14}{'drain':>14}   (all runs: end to end | drain)")
        for label, e2e, drain, e2e_all, drain_all in rows:
            spread = " ".join(f"{v:,.0f}" for v in e2e_all) + " | "
            spread += " ".join(f"{v:,.0f}" for v in drain_all)
            print(f"{label:28}{e2e:>14,.0f}{drain:>14,.0f}   ({spread})")
        for label, (e2e, drain), (base_e2e, base_drain) in (
            ("ratio streamjobs/raw", (sj_e2e, sj_drain), (raw_e2e, raw_drain)),
            ("ratio records/raw", (ceil_e2e, ceil_drain), (raw_e2e, raw_drain)),
            ("ratio streamjobs/records", (sj_e2e, sj_drain), (ceil_e2e, ceil_drain)),
        ):
            print(f"{label:28}{e2e / base_e2e:>14.2f}{drain / base_drain:>14.2f}")
        # paced p99 keeps falling through the broker's first minute of paced traffic (on one
        # broker: 5.23 -> 3.18 -> 3.12 ms for streamjobs, 3.58 -> 1.38 -> 1.93 for raw, 30 s
        # runs taking turns): two rounds, both printed; the second is the steady state
        for round_no in (1, 2):
            lat = bench_latency(bootstrap, args.paced, args.rate)
            raw = bench_raw_latency(bootstrap, args.paced, args.rate)
            for label, values in (
                ("streamjobs submit-to-start", lat),
                ("raw produce-to-receive", raw),
            ):
                print(
                    f"{label:28} at {args.rate:.0f}/s ({len(values)}), round {round_no}: "
                    f"p50 {statistics.median(values):.2f} ms, "
                    f"p99 {_percentile(values, 0.99):.2f} ms, max {values[-1]:.2f} ms"
                )


if __name__ == "__main__":
    main()
