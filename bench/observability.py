"""The cost of metrics and logging on the no-op throughput bench: A/B rounds, taking turns.

    python bench/observability.py [--tasks 20000] [--rounds 4] [--mode drain|e2e] [--pin]

Each round runs the no-op tasks of ``bench/throughput.py`` through one worker process twice, in
alternating order: **plain** (a Worker with its default middleware, tracing only, and logging
configured as ``streamjobs consume`` does) and **observed** (the same plus what
``streamjobs consume --metrics-port`` adds: ``Monitor`` middleware counting and timing every
attempt, the log context, the outcome log at the default INFO level, heartbeats every 5 s and the
metrics endpoint, scraped once a second from the bench's own process: Prometheus' default is
every 15 s). Prints tasks/s and the worker process's CPU time per task (all its threads) of
every run, split by thread (the poll loop, the executor threads, librdkafka's, the rest: where
the observed variant's extra time goes), with the wall time its garbage collections took (by
generation: what the objects a worker keeps per task cost), the medians and the ratios. On a
shared machine the CPU per task is the steadier figure: throughput also moves with whatever
else the cores run. ``drain`` (default) times a full queue draining: the worker's own cost;
``e2e`` submits while the worker runs. ``--pin`` runs each worker process on the last CPU and
this process (submitting, scraping, and the local broker if it starts one) on the others, so
the two variants do not take turns with the broker for a core: the plain variant's CPU per task
then varies less between runs (on the 2-core VM, 49-53 us against 51-58 us unpinned; start a
broker given by KAFKA_BOOTSTRAP_SERVERS on the other CPUs yourself, ``taskset``).
Uses KAFKA_BOOTSTRAP_SERVERS if set, else starts the local broker.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import os
import statistics
import sys
import threading
import time
import urllib.request
import uuid
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import throughput  # bench/ is not a package: sys.path[0] is bench/
from throughput import Noop, _await_ready, _finished, _settings, _state, registry

from streamjobs import Producer, Worker, client, topics
from streamjobs.dev.kafka import given_or_local
from streamjobs.metrics import logs
from streamjobs.metrics.monitor import Monitor
from streamjobs.metrics.prometheus import new_registry
from streamjobs.worker.gctuning import tune_collector

_ALL_CPUS = frozenset(os.sched_getaffinity(0))


def _scrape_every_second(url: str, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                answer.read()
        except OSError:  # the endpoint closed: the worker has finished its tasks
            return


class _GcTime:
    """Wall time the process spends in garbage collections, and how many of each generation."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.counts = [0, 0, 0]
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.seconds[info["generation"]] += time.perf_counter() - self._began
            self.counts[info["generation"]] += 1


def _thread_cpu() -> dict[str, float]:
    """CPU seconds of this process's live threads (Linux ``/proc``), by kind: ``poll``,
    ``executor``, ``librdkafka``, ``other`` (threads that ended are in no kind)."""
    kinds = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    seconds: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
            comm = Path(f"/proc/self/task/{tid}/comm").read_text().strip()
        except OSError:  # the thread ended meanwhile
            continue
        user, system = stat.rsplit(")", 1)[1].split()[11:13]
        name = kinds.get(int(tid), comm)
        kind = (
            "poll" if name == "poll" else
            "executor" if name.startswith("streamjobs-task") else
            "librdkafka" if comm.startswith("rdk:") else "other"
        )  # fmt: skip
        seconds[kind] = seconds.get(kind, 0.0) + (int(user) + int(system)) / tick
    return seconds


def worker_process(
    bootstrap: str, prefix: str, expect: int, out: mp.Queue, observed: bool, pin: bool
) -> None:
    """One worker, plain or observed; reports when it has finished ``expect`` tasks."""
    if pin:  # before any thread starts: they inherit it
        os.sched_setaffinity(0, {max(_ALL_CPUS)})
    logs.configure("INFO", "text")  # as `streamjobs consume` does, in both variants
    settings = _settings(bootstrap, prefix)
    monitor = Monitor(settings, metrics_port=0, registry=new_registry()) if observed else None
    middleware = monitor.middleware if monitor is not None else None
    worker = Worker(settings, registry, middleware=middleware)
    _state["expect"] = expect
    with monitor.watching(worker) if monitor is not None else nullcontext():
        thread = threading.Thread(target=worker.run, name="poll")
        thread.start()
        worker.assigned.wait(30)
        tune_collector()  # as `streamjobs consume` does, in both variants
        out.put("ready")
        url = ""
        if monitor is not None and monitor.endpoint is not None:
            host, port = monitor.endpoint.address
            url = f"http://{host}:{port}/metrics"
        out.put(url)  # scraped from the bench's process, as Prometheus scrapes from its own
        gc_time = _GcTime()
        gc.callbacks.append(gc_time)
        threads = _thread_cpu()
        cpu = time.process_time()  # every thread of the process, librdkafka's included
        _finished.wait(600)
        _state["cpu_s"] = time.process_time() - cpu
        _state["threads"] = {k: v - threads.get(k, 0.0) for k, v in _thread_cpu().items()}
        gc.callbacks.remove(gc_time)
        _state["gc_s"], _state["gc_counts"] = gc_time.seconds, gc_time.counts
        worker.stop()
        thread.join()
    out.put(json.dumps(dict(_state)))


def run(bootstrap: str, n: int, drain: bool, observed: bool, pin: bool) -> tuple[float, float, str]:
    """(tasks/s, worker CPU us per task, its threads' share and garbage collections) of one
    run."""
    prefix = f"obs{uuid.uuid4().hex[:6]}"
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
        proc = mp.Process(target=worker_process, args=(bootstrap, prefix, n, out, observed, pin))
        proc.start()
        _await_ready(out)
        url, stop_scraping = out.get(timeout=60), threading.Event()
        if url:
            threading.Thread(
                target=_scrape_every_second, args=(url, stop_scraping), daemon=True
            ).start()
        warmup.wait(60)
        start = time.time()
        if not drain:
            submit_all(producer)
        result = json.loads(out.get(timeout=600))
        stop_scraping.set()
    proc.join()
    names = [spec.name for spec in topics.topic_specs(settings)]
    client.new_admin(settings).delete_topics(names)  # leave a shared broker as it was
    begin = result["first"] if drain else start
    pairs = zip(result["gc_counts"], result["gc_s"], strict=True)
    per_gen = "/".join(f"{count}x {seconds * 1e3:.0f}ms" for count, seconds in pairs)
    collected = f"gc {sum(result['gc_s']) / n * 1e6:.1f} us/task: {per_gen} by generation"
    split = ", ".join(
        f"{kind} {seconds / n * 1e6:.1f}" for kind, seconds in sorted(result["threads"].items())
    )  # the clock ticks every 10 ms: at 20,000 tasks a figure moves in steps of 0.5 us
    return n / (result["last"] - begin), result["cpu_s"] / n * 1e6, f"{split}; {collected}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--mode", choices=("drain", "e2e"), default="drain")
    parser.add_argument("--pin", action="store_true", help="the worker on the last CPU")
    args = parser.parse_args()
    drain = args.mode == "drain"
    if args.pin:
        if len(_ALL_CPUS) < 2:
            parser.error("--pin needs 2 CPUs or more")
        os.sched_setaffinity(0, _ALL_CPUS - {max(_ALL_CPUS)})  # a local broker inherits it
    with given_or_local(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")) as bootstrap:
        print(f"broker {bootstrap}; {args.tasks} no-op tasks, {args.mode}, {args.rounds} rounds")
        run(bootstrap, args.tasks, drain, observed=False, pin=args.pin)  # warm-up, untimed
        rates: dict[bool, list[float]] = {False: [], True: []}
        cpus: dict[bool, list[float]] = {False: [], True: []}
        collections: dict[bool, str] = {}
        for round_no in range(args.rounds):
            order = (False, True) if round_no % 2 == 0 else (True, False)
            for observed in order:
                rate, cpu, collected = run(bootstrap, args.tasks, drain, observed, args.pin)
                rates[observed].append(rate)
                cpus[observed].append(cpu)
                collections[observed] = collected
            print(
                f"round {round_no + 1}: plain {rates[False][-1]:,.0f}/s"
                f" ({cpus[False][-1]:.1f} us CPU/task, {collections[False]}),"
                f" observed {rates[True][-1]:,.0f}/s"
                f" ({cpus[True][-1]:.1f} us CPU/task, {collections[True]})",
                flush=True,
            )
        plain, observed = (statistics.median(rates[k]) for k in (False, True))
        plain_cpu, observed_cpu = (statistics.median(cpus[k]) for k in (False, True))
        print(f"median plain {plain:,.0f} tasks/s, observed {observed:,.0f} tasks/s")
        print(f"observed/plain {observed / plain:.3f} (cost {100 * (1 - observed / plain):.1f}%)")
        print(
            f"worker CPU per task: plain {plain_cpu:.1f} us, observed {observed_cpu:.1f} us"
            f" (+{100 * (observed_cpu / plain_cpu - 1):.1f}%)"
        )


if __name__ == "__main__":
    assert throughput  # the handler's module state (_state, _finished) lives there
    main()
