"""``bench/submit.py`` still runs and prints every pair of figures (tiny sizes, session broker).

The figures are not judged here, only that each pair (raw confluent-kafka beside streamjobs)
is measured in every round and summarised with its ratio.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.integration.conftest import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_submit_bench_prints_raw_beside_streamjobs_for_each_mode_and_round(
    kafka_bootstrap: str,
) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "bench" / "submit.py"),
            *("--seconds", "0.2", "--rounds", "2", "--threads", "2", "--concurrency", "10"),
        ],
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for mode in ("one thread", "2 threads, one producer", "asyncio, 10 concurrent"):
        rounds = [line for line in lines if line.startswith("round") and mode in line]
        assert len(rounds) == 2, done.stdout
        assert any(mode in line and "ratio" in line for line in lines), done.stdout
