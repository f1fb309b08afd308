"""Submit rate: streamjobs beside raw confluent-kafka doing the same, in the same run.

    python bench/submit.py [--seconds 2] [--rounds 3] [--threads 8] [--concurrency 200]

Each pair runs for ``--seconds``, raw first then streamjobs, and the pairs alternate for
``--rounds``; every run is printed, then the medians and streamjobs' ratio to raw:

* one thread, one confirmed record (raw: produce, poll until its delivery report) vs
  ``Producer.submit`` per task;
* ``--threads`` threads sharing one producer, each confirming one record at a time (raw: a poll
  thread serves the reports, each thread waits for its own) vs threads sharing one Producer;
* asyncio, ``--concurrency`` coroutines each submitting in a loop (raw: delivery reports resolve
  futures through ``call_soon_threadsafe`` from a poll thread) vs ``AsyncProducer.submit``.

A submit confirms two records (the task, and its submitted fact on a second topic), so every
pair also runs raw confluent-kafka confirming that same pair of records (``raw x2``): the floor
of the design, printed with streamjobs' ratio to it (the targets are against one record).

Each run is timed after an untimed warm-up of the same producer. Raw producers are configured
as streamjobs' own (idempotent, ``acks=all``, ``linger.ms=0``) and write a task-sized record to
a topic of the same partition count. The load average is printed with the figures: the machine
may be shared. Uses KAFKA_BOOTSTRAP_SERVERS if set, else
starts the local broker.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from confluent_kafka import Producer as RawProducer
from confluent_kafka.admin import AdminClient, NewTopic

from streamjobs import AsyncProducer, Producer, Settings, Task, topics
from streamjobs.dev.kafka import given_or_local


class Signup(Task):
    user_id: int
    address: str


TASK = Signup(user_id=7, address="ada@example.com")
VALUE = os.urandom(120)  # about the size of the task's envelope
STATUS = os.urandom(110)  # about the size of its submitted (queued) record
WARMUP_S = 0.3  # untimed, on the same producer first: connections, metadata, producer ids


def warmed(run: Callable[[float], int], seconds: float) -> int:
    """``run(seconds)`` counted, after an untimed ``run(WARMUP_S)`` on the same producer."""
    run(WARMUP_S)
    return run(seconds)


def raw_producer(bootstrap: str) -> RawProducer:
    return RawProducer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 0,
        }
    )


# -- one thread ---------------------------------------------------------------------------------


def raw_one(bootstrap: str, topic: str, seconds: float, second: str | None = None) -> int:
    """One record confirmed at a time; with ``second``, a pair: a record to ``topic`` and one
    to ``second`` (keyed by a fresh id, as a submitted record is), both confirmed."""
    producer = raw_producer(bootstrap)
    wanted = 1 if second is None else 2
    done = [0]

    def report(err: object, msg: object) -> None:
        assert err is None, err
        done[0] += 1

    def run(seconds: float) -> int:
        count, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            done[0] = 0
            producer.produce(topic, VALUE, str(count).encode(), on_delivery=report)
            if second is not None:
                producer.produce(second, STATUS, uuid.uuid4().bytes, on_delivery=report)
            while done[0] < wanted:
                producer.poll(0.01)
            count += 1
        return count

    count = warmed(run, seconds)
    producer.flush(10)
    return count


def sj_one(settings: Settings, seconds: float) -> int:
    with Producer(settings) as producer:

        def run(seconds: float) -> int:
            count, end = 0, time.monotonic() + seconds
            while time.monotonic() < end:
                producer.submit(TASK)
                count += 1
            return count

        return warmed(run, seconds)


# -- threads sharing one producer ---------------------------------------------------------------


def threaded(threads: int, seconds: float, one: Callable[[int], None]) -> int:
    counts = [0] * threads
    end = time.monotonic() + seconds

    def run(i: int) -> None:
        while time.monotonic() < end:
            one(i)
            counts[i] += 1

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return sum(counts)


def raw_threads(
    bootstrap: str, topic: str, seconds: float, threads: int, second: str | None = None
) -> int:
    producer = raw_producer(bootstrap)
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            producer.poll(0.05)

    poller = threading.Thread(target=poll)
    poller.start()

    def one(i: int) -> None:
        event = threading.Event()
        left = [1 if second is None else 2]

        def report(err: object, msg: object) -> None:
            assert err is None, err
            left[0] -= 1  # both reports come on the poll thread
            if not left[0]:
                event.set()

        producer.produce(topic, VALUE, str(i).encode(), on_delivery=report)
        if second is not None:
            producer.produce(second, STATUS, uuid.uuid4().bytes, on_delivery=report)
        event.wait()

    try:
        return warmed(lambda s: threaded(threads, s, one), seconds)
    finally:
        stop.set()
        poller.join()
        producer.flush(10)


def sj_threads(settings: Settings, seconds: float, threads: int) -> int:
    with Producer(settings) as producer:
        return warmed(lambda s: threaded(threads, s, lambda i: producer.submit(TASK)), seconds)


# -- asyncio ------------------------------------------------------------------------------------


async def _coroutines(concurrency: int, seconds: float, one: Callable[[int], object]) -> int:
    end = time.monotonic() + seconds
    counts = [0] * concurrency

    async def run(i: int) -> None:
        while time.monotonic() < end:
            await one(i)  # type: ignore[misc]
            counts[i] += 1

    await asyncio.gather(*(run(i) for i in range(concurrency)))
    return sum(counts)


def raw_async(
    bootstrap: str, topic: str, seconds: float, concurrency: int, second: str | None = None
) -> int:
    """Delivery reports resolve futures through ``call_soon_threadsafe`` from a poll thread; with
    ``second``, each coroutine confirms a pair (a record to ``topic``, one to ``second`` keyed by
    a fresh id), its future resolved by the second report."""

    async def main() -> int:
        producer = raw_producer(bootstrap)
        loop = asyncio.get_running_loop()
        stop = threading.Event()

        def poll() -> None:
            while not stop.is_set():
                producer.poll(0.05)

        poller = threading.Thread(target=poll)
        poller.start()

        def one(i: int) -> asyncio.Future[None]:
            future: asyncio.Future[None] = loop.create_future()
            left = [1 if second is None else 2]

            def report(err: object, msg: object) -> None:
                assert err is None, err
                left[0] -= 1  # both reports come on the poll thread
                if not left[0]:
                    loop.call_soon_threadsafe(future.set_result, None)

            producer.produce(topic, VALUE, str(i).encode(), on_delivery=report)
            if second is not None:
                producer.produce(second, STATUS, uuid.uuid4().bytes, on_delivery=report)
            return future

        try:
            await _coroutines(concurrency, WARMUP_S, one)
            return await _coroutines(concurrency, seconds, one)
        finally:
            stop.set()
            poller.join()
            producer.flush(10)

    return asyncio.run(main())


def sj_async(settings: Settings, seconds: float, concurrency: int) -> int:
    async def main() -> int:
        async with AsyncProducer(settings) as producer:
            await _coroutines(concurrency, WARMUP_S, lambda i: producer.submit(TASK))
            return await _coroutines(concurrency, seconds, lambda i: producer.submit(TASK))

    return asyncio.run(main())


# -- the run ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=200)
    args = parser.parse_args()
    with given_or_local(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")) as bootstrap:
        settings = Settings(bootstrap_servers=bootstrap, topic_prefix=f"b{uuid.uuid4().hex[:8]}")
        topics.ensure(settings)
        raw_topic, raw_second = f"{settings.topic_prefix}.raw", f"{settings.topic_prefix}.raw2"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        created = admin.create_topics(
            [NewTopic(t, settings.partitions, 1) for t in (raw_topic, raw_second)]
        )
        for future in created.values():
            future.result()
        s, n = args.seconds, args.threads
        # (raw, streamjobs, raw confirming a submit's pair of records)
        runs: dict[str, tuple[Callable[[], int], Callable[[], int], Callable[[], int]]] = {
            "one thread": (
                lambda: raw_one(bootstrap, raw_topic, s),
                lambda: sj_one(settings, s),
                lambda: raw_one(bootstrap, raw_topic, s, raw_second),
            ),
            f"{n} threads, one producer": (
                lambda: raw_threads(bootstrap, raw_topic, s, n),
                lambda: sj_threads(settings, s, n),
                lambda: raw_threads(bootstrap, raw_topic, s, n, raw_second),
            ),
            f"asyncio, {args.concurrency} concurrent": (
                lambda: raw_async(bootstrap, raw_topic, s, args.concurrency),
                lambda: sj_async(settings, s, args.concurrency),
                lambda: raw_async(bootstrap, raw_topic, s, args.concurrency, raw_second),
            ),
        }
        rates: dict[str, tuple[list[float], list[float], list[float]]] = {
            k: ([], [], []) for k in runs
        }
        try:
            for round_ in range(1, args.rounds + 1):
                for name, (raw, ours, raw_pair) in runs.items():
                    raw_rate, our_rate = raw() / s, ours() / s
                    pair_rate = raw_pair() / s
                    for figures, rate in zip(
                        rates[name], (raw_rate, our_rate, pair_rate), strict=True
                    ):
                        figures.append(rate)
                    print(
                        f"round {round_} {name:28} raw {raw_rate:9,.0f}/s  "
                        f"streamjobs {our_rate:9,.0f}/s  raw x2 {pair_rate:9,.0f}/s  "
                        f"load {os.getloadavg()[0]:.1f}",
                        flush=True,
                    )
        finally:
            names = [
                t
                for t in admin.list_topics(timeout=10).topics
                if t.startswith(settings.topic_prefix)
            ]
            for future in admin.delete_topics(names).values():
                future.result()
        print(f"medians of {args.rounds} rounds of {s:g}s:")
        for name, (raw_list, our_list, pair_list) in rates.items():
            raw_med, our_med = statistics.median(raw_list), statistics.median(our_list)
            pair_med = statistics.median(pair_list)
            print(
                f"  {name:28} raw {raw_med:9,.0f}/s  streamjobs {our_med:9,.0f}/s  "
                f"ratio {our_med / raw_med:.2f}  raw x2 {pair_med:9,.0f}/s  "
                f"ratio to x2 {our_med / pair_med:.2f}"
            )


if __name__ == "__main__":
    main()
