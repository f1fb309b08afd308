"""Retry and delay tiers: how late tasks run against their due time, and what the tier path costs.

    python bench/tiers.py [--delayed 400] [--delays 0.5,0.75,1,2.5] [--retried 200]
                          [--retry-delay 1.3] [--drain 3000] [--pace 4]

One broker, one `Worker` at a time (in a thread of this process, so the handler and the
submitter share a clock), and prints:
  * delay lateness: ``--delayed`` tasks submitted with ``delay=`` drawn round-robin from
    ``--delays``, paced over ``--pace`` seconds, delay tiers 500ms,1s,2s (a delay between tiers
    hops to a shorter tier); lateness = handler start - (submit time + delay), p50/p99/max per
    delay and overall. A task that runs EARLY (more than 1 ms before its due time) is a bug and
    prints a WARNING line;
  * retry lateness, retry tiers 500ms,2s: half of ``--retried`` tasks raise a plain exception on
    the first attempt (-> the 500ms tier), half raise ``Retry(delay=--retry-delay)`` (between
    tiers -> hops); lateness = second attempt start - (first attempt failure + delay);
  * the cost of the tier path: ``--drain`` no-op tasks drained from a full queue that succeed
    first time, then ``--drain`` tasks that fail once and succeed from a 100ms retry tier;
    tasks/s and process CPU time per task of each (the broker runs in another process and is
    not counted), and the difference: the extra cost per task of one trip through a tier.
Uses KAFKA_BOOTSTRAP_SERVERS if set, else starts the local broker (streamjobs.dev.kafka).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamjobs import Producer, Retry, Settings, Task, TaskRegistry, Worker, topics
from streamjobs.dev.kafka import given_or_local
from streamjobs.retry import pick_tier
from streamjobs.settings import format_duration

EARLY_TOLERANCE_S = 0.001  # time.time() vs the ms-truncated due times on the wire
DELAY_TIERS = "500ms,1s,2s"
RETRY_TIERS = "500ms,2s"
FAST_RETRY_TIER = "100ms"


class Probe(Task):
    n: int
    mode: str = "ok"  # ok | fail (plain exception first) | retry (Retry(delay) first)
    retry_ms: int = 0


@dataclass
class Runs:
    """What the handler saw, per task number; reset for every measurement."""

    starts: dict[int, list[float]] = field(default_factory=dict)
    failed_at: dict[int, float] = field(default_factory=dict)
    done: int = 0
    first: float = 0.0
    last: float = 0.0
    cpu_first: float = 0.0
    cpu_last: float = 0.0


registry = TaskRegistry()
runs = Runs()
lock = threading.Lock()


@registry.handler(Probe)
def probe(task: Probe) -> None:
    now = time.time()
    with lock:
        attempts = runs.starts.setdefault(task.n, [])
        attempts.append(now)
        if not runs.first:
            runs.first, runs.cpu_first = now, time.process_time()
        first_attempt = len(attempts) == 1
    if first_attempt and task.mode != "ok":
        runs.failed_at[task.n] = time.time()
        if task.mode == "retry":
            raise Retry(delay=timedelta(milliseconds=task.retry_ms))
        raise RuntimeError("first attempt fails on purpose")
    with lock:
        runs.done += 1
        runs.last, runs.cpu_last = time.time(), time.process_time()


def reset() -> None:
    global runs
    with lock:
        runs = Runs()


# -- plumbing -----------------------------------------------------------------------------------


def new_settings(bootstrap: str, name: str, **extra: object) -> Settings:
    settings = Settings(
        bootstrap_servers=bootstrap,
        topic_prefix=f"{name}{uuid.uuid4().hex[:6]}",
        partitions=6,
        **extra,
    )
    topics.ensure(settings)
    return settings


@contextmanager
def running(settings: Settings) -> Iterator[Worker]:
    """One Worker in a thread, joined to its group, stopped and joined on exit."""
    worker = Worker(settings, registry)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            worker.run()
        except BaseException as exc:  # reported, not swallowed
            errors.append(exc)

    thread = threading.Thread(target=target, name="bench-worker")
    thread.start()
    if not worker.assigned.wait(60):
        raise RuntimeError("worker did not join its group")
    try:
        yield worker
    finally:
        worker.stop()
        thread.join()
        if errors:
            raise RuntimeError(f"worker failed: {errors[0]!r}") from errors[0]


def wait_done(expect: int, timeout: float) -> bool:
    deadline = time.time() + timeout
    while runs.done < expect and time.time() < deadline:
        time.sleep(0.01)  # benchmark bookkeeping only, not part of what is measured
    return runs.done >= expect


def warm_up(producer: Producer) -> None:
    """Announce the schema and let the worker settle on every partition before timing."""
    reset()
    producer.submit(Probe(n=-1), key="warmup")
    if not wait_done(1, 60):
        raise RuntimeError("warm-up task did not run")
    reset()


def paced(count: int, seconds: float) -> Iterator[int]:
    interval = seconds / max(1, count)
    next_at = time.perf_counter()
    for i in range(count):
        while time.perf_counter() < next_at:
            time.sleep(max(0.0, next_at - time.perf_counter()))
        next_at += interval
        yield i


def pct(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))
    return sorted_values[index]


def tier_path(tiers: list[timedelta], delay: timedelta) -> str:
    """The planned path of a wait through tiers (each hop waits min(tier, what is left))."""
    path, left = [], delay
    while left > timedelta(0):
        tier = pick_tier(tiers, left)
        path.append(format_duration(tier))
        left -= min(tier, left)
    return ">".join(path) or "main"


HEADER = f"{'':12}{'path':>18}{'tasks':>7}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'min ms':>9}"


def row(label: str, path: str, lateness_s: list[float]) -> str:
    if not lateness_s:
        return f"{label:12}{path:>18}{0:>7}  (none ran)"
    ms = sorted(x * 1000 for x in lateness_s)
    return (
        f"{label:12}{path:>18}{len(ms):>7}{statistics.median(ms):>9.1f}{pct(ms, 0.99):>9.1f}"
        f"{ms[-1]:>9.1f}{ms[0]:>9.1f}"
    )


def warn_early(what: str, lateness_s: list[float]) -> None:
    early = [x for x in lateness_s if x < -EARLY_TOLERANCE_S]
    if early:
        print(
            f"WARNING: {len(early)} {what} ran EARLY (up to {-min(early) * 1000:.1f} ms before "
            "their due time) -- a bug: a task must never run before it is due"
        )


def warn_lost(what: str, expected: int, got: int) -> None:
    if got < expected:
        print(f"WARNING: {expected - got} of {expected} {what} never finished (lost tasks?)")


def warn_duplicates(expected_runs: int) -> None:
    extra = sum(len(a) for n, a in runs.starts.items() if n >= 0) - expected_runs
    if extra > 0:
        print(f"WARNING: {extra} handler calls more than expected (redelivered attempts)")


# -- 1. delay lateness --------------------------------------------------------------------------


def bench_delays(
    settings: Settings, producer: Producer, count: int, delays: list[float], pace: float
) -> None:
    reset()
    due: dict[int, float] = {}
    for i in paced(count, pace):
        delay = delays[i % len(delays)]
        due[i] = time.time() + delay
        producer.submit(Probe(n=i), key=f"d{i % 64}", delay=timedelta(seconds=delay))
    wait_done(count, max(delays) + 30)
    late: dict[float, list[float]] = {d: [] for d in delays}
    for i, when in due.items():
        attempts = runs.starts.get(i)
        if attempts:
            late[delays[i % len(delays)]].append(attempts[0] - when)
    tiers = settings.delay_tiers
    print(
        f"\n1. delay lateness = handler start - (submit + delay); delay tiers {DELAY_TIERS}; "
        f"{count} tasks over {pace:g} s"
    )
    print(HEADER)
    for delay in delays:
        path = tier_path(tiers, timedelta(seconds=delay))
        print(row(f"{delay:g} s", path, late[delay]))
    every = [x for values in late.values() for x in values]
    print(row("all", "", every))
    warn_early("delayed tasks", every)
    warn_lost("delayed tasks", count, len(every))
    warn_duplicates(count)


# -- 2. retry lateness --------------------------------------------------------------------------


def bench_retries(producer: Producer, count: int, retry_delay: float, pace: float) -> None:
    reset()
    modes = {}
    for i in paced(count, pace):
        mode = "fail" if i % 2 == 0 else "retry"
        modes[i] = mode
        producer.submit(Probe(n=i, mode=mode, retry_ms=round(retry_delay * 1000)), key=f"r{i % 64}")
    wait_done(count, retry_delay + 30)
    first_tier = producer.settings.retry_tiers
    wanted = {"fail": first_tier[0].total_seconds(), "retry": retry_delay}
    late: dict[str, list[float]] = {"fail": [], "retry": []}
    for i, mode in modes.items():
        attempts = runs.starts.get(i, [])
        if len(attempts) >= 2 and i in runs.failed_at:
            late[mode].append(attempts[1] - (runs.failed_at[i] + wanted[mode]))
    print(
        f"\n2. retry lateness = 2nd attempt start - (1st attempt failure + delay); retry tiers "
        f"{RETRY_TIERS}; {count} tasks over {pace:g} s"
    )
    print(HEADER)
    print(row("exception", tier_path(first_tier, timedelta(seconds=wanted["fail"])), late["fail"]))
    print(
        row(
            f"Retry({retry_delay:g}s)",
            tier_path(first_tier, timedelta(seconds=retry_delay)),
            late["retry"],
        )
    )
    every = late["fail"] + late["retry"]
    print(row("all", "", every))
    warn_early("retried tasks", every)
    warn_lost("retried tasks", count, len(every))
    warn_duplicates(2 * count)


# -- 3. cost of the tier path -------------------------------------------------------------------


@dataclass
class Drain:
    rate: float
    cpu_per_task_us: float
    stats: str


def drain(bootstrap: str, count: int, mode: str) -> Drain:
    settings = new_settings(bootstrap, f"drain{mode}", retry_tiers=FAST_RETRY_TIER)
    with Producer(settings) as producer:
        for chunk in range(0, count, 2000):
            size = min(2000, count - chunk)
            producer.submit_many(
                [Probe(n=i, mode=mode) for i in range(chunk, chunk + size)],
                keys=[f"k{i % 500}" for i in range(chunk, chunk + size)],
            )
    reset()
    with running(settings) as worker:
        finished = wait_done(count, 300)
        s = worker.stats
        stats = f"started {s.started}, retried {s.retried}, hopped {s.hopped}"
    if not finished:
        warn_lost(f"{mode} drain tasks", count, runs.done)
    warn_duplicates(count if mode == "ok" else 2 * count)
    return Drain(
        rate=count / (runs.last - runs.first),
        cpu_per_task_us=(runs.cpu_last - runs.cpu_first) / count * 1e6,
        stats=stats,
    )


def bench_cost(bootstrap: str, count: int) -> None:
    base = drain(bootstrap, count, "ok")
    tier = drain(bootstrap, count, "fail")
    print(
        f"\n3. tier path cost: {count} no-op tasks drained from a full queue by one worker; "
        f"retry tier {FAST_RETRY_TIER}"
    )
    print(f"{'':34}{'tasks/s':>10}{'CPU us/task':>13}   worker stats")
    print(
        f"{'succeed first time':34}{base.rate:>10,.0f}{base.cpu_per_task_us:>13,.0f}   {base.stats}"
    )
    print(
        f"{'fail once, succeed from the tier':34}{tier.rate:>10,.0f}"
        f"{tier.cpu_per_task_us:>13,.0f}   {tier.stats}"
    )
    extra = tier.cpu_per_task_us - base.cpu_per_task_us
    print(
        f"tier path: +{extra:,.0f} us CPU per task in the worker process "
        f"({tier.cpu_per_task_us / base.cpu_per_task_us:.2f}x), throughput "
        f"{tier.rate / base.rate:.2f}x"
    )


def run(bootstrap: str, args: argparse.Namespace) -> None:
    print(f"broker {bootstrap}; 6 partitions, 1 worker (concurrency 1) in this process")
    settings = new_settings(bootstrap, "tiers", delay_tiers=DELAY_TIERS, retry_tiers=RETRY_TIERS)
    with running(settings) as worker, Producer(settings) as producer:
        warm_up(producer)
        delays = [float(x) for x in args.delays.split(",")]
        bench_delays(settings, producer, args.delayed, delays, args.pace)
        bench_retries(producer, args.retried, args.retry_delay, args.pace / 2)
        s = worker.stats
        print(
            f"worker stats: started {s.started}, retried {s.retried}, hopped {s.hopped}, "
            f"dead-lettered {s.dead_lettered}"
        )
    bench_cost(bootstrap, args.drain)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--delayed", type=int, default=400, help="tasks for delay lateness")
    parser.add_argument("--delays", default="0.5,0.75,1,2.5", help="seconds, comma-separated")
    parser.add_argument("--retried", type=int, default=200, help="tasks for retry lateness")
    parser.add_argument("--retry-delay", type=float, default=1.3, help="Retry(delay=) seconds")
    parser.add_argument("--drain", type=int, default=3000, help="tasks per tier-cost drain")
    parser.add_argument("--pace", type=float, default=4.0, help="seconds to spread submits over")
    args = parser.parse_args()
    with given_or_local(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")) as bootstrap:
        try:
            run(bootstrap, args)
        finally:
            gc.collect()  # librdkafka clients still referenced would log refused reconnects


if __name__ == "__main__":
    main()
