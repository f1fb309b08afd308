"""The benchmarks under ``bench/`` still run and print their figures (tiny sizes, session broker).

Their figures are not checked here (speed is judged from the benchmark output, not in tests);
what is checked is that a benchmark completes every task it submits and reports each figure.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.integration.conftest import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_NUMBER = r"[\d,]+(?:\.\d+)?"


def _run_bench(kafka_bootstrap: str | None, script: str, *args: str) -> str:
    env = dict(os.environ)
    if kafka_bootstrap is not None:
        env["KAFKA_BOOTSTRAP_SERVERS"] = kafka_bootstrap
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_throughput_bench_prints_rates_ratio_and_latency_percentiles(kafka_bootstrap: str) -> None:
    out = _run_bench(
        kafka_bootstrap,
        "throughput.py",
        *("--tasks", "300", "--runs", "1", "--paced", "50", "--rate", "200", "--warm", "1000"),
    )
    rows = (
        "raw confluent-kafka rec/s",
        "raw, streamjobs' records",
        "streamjobs tasks/s",
        "streamjobs exactly-once",
    )
    for label in rows:
        assert re.search(rf"^{re.escape(label)}\s+{_NUMBER}\s+{_NUMBER}", out, re.M), out
    for ratio in ("streamjobs/raw", "records/raw", "streamjobs/records"):
        assert re.search(rf"^ratio {ratio}\s+{_NUMBER}\s+{_NUMBER}", out, re.M), out
    for label in ("streamjobs submit-to-start", "raw produce-to-receive"):
        for round_no in (1, 2):
            pattern = rf"^{label}\s+at 200/s \(50\), round {round_no}: p50 {_NUMBER} ms, p99 "
            assert re.search(pattern + rf"{_NUMBER} ms", out, re.M), out


def test_observability_bench_prints_both_variants_per_round_and_their_ratio(
    kafka_bootstrap: str,
) -> None:
    out = _run_bench(
        kafka_bootstrap, "observability.py", *("--tasks", "300", "--rounds", "2", "--pin")
    )
    gc = rf"gc {_NUMBER} us/task: (?:\d+x {_NUMBER}ms/?){{3}} by generation"
    threads = rf"(?:(?:executor|librdkafka|other|poll) {_NUMBER}(?:, |; )){{1,4}}"
    variant = rf"{_NUMBER}/s \({_NUMBER} us CPU/task, {threads}{gc}\)"
    for round_no in (1, 2):
        pattern = rf"^round {round_no}: plain {variant}, observed {variant}$"
        assert re.search(pattern, out, re.M), out
    assert re.search(rf"^observed/plain {_NUMBER} \(cost -?{_NUMBER}%\)$", out, re.M), out
    pattern = (
        rf"^worker CPU per task: plain {_NUMBER} us, observed {_NUMBER} us \(\+-?{_NUMBER}%\)$"
    )
    assert re.search(pattern, out, re.M), out


def test_replay_bench_prints_chunked_and_one_at_a_time_rates(kafka_bootstrap: str) -> None:
    out = _run_bench(
        kafka_bootstrap,
        "replay.py",
        *("--tasks", "60", "--sample", "12", "--chunk", "7", "--runs", "1"),
    )
    assert re.search(rf"^replay, chunks of 7\s+{_NUMBER}\s+60\s", out, re.M), out
    for label in ("replay, dry run \\(read only\\)", "replay, one at a time", "Producer.resubmit"):
        assert re.search(rf"^{label}.*?\s{_NUMBER}\s+\d+\s+\(", out, re.M), out
    assert re.search(rf"^chunked / one at a time\s+{_NUMBER}x", out, re.M), out


def test_floor_bench_prints_each_step_and_the_bound_it_implies() -> None:
    out = _run_bench(None, "floor.py", "--tasks", "200")  # needs no broker
    steps = ("decode envelope", "decode + validate payload", "encode running + succeeded")
    for label in (*steps, "queue 2 records (no I/O)", "total per task"):
        assert re.search(rf"^{re.escape(label)}\s+{_NUMBER} us$", out, re.M), out
    assert re.search(rf"^at most, one core\s+{_NUMBER} tasks/s$", out, re.M), out


def test_schedules_bench_prints_fire_lateness_percentiles(kafka_bootstrap: str) -> None:
    out = _run_bench(
        kafka_bootstrap,
        "schedules.py",
        *("--schedules", "3", "--seconds", "3", "--load", "20", "--kills", "0"),
    )
    for label in ("fired", "visible"):
        assert re.search(rf"{label} lateness ms: p50 +{_NUMBER} +p99 +{_NUMBER} +max", out), out
