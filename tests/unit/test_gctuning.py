"""The worker process's collector settings (streamjobs.worker.gctuning), in a child process:
the test run's own collector is left alone."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import gc
from streamjobs.worker.gctuning import YOUNG_THRESHOLD, tune_collector
before = gc.get_threshold()
kept = [object() for _ in range(3)]
tune_collector()
after = gc.get_threshold()
assert after == (YOUNG_THRESHOLD, before[1], before[2]), (before, after)
assert gc.get_freeze_count() > 0
cycle = []
cycle.append(cycle)
del cycle
assert gc.collect() >= 1, "a cycle made after tuning is still collected"
print("ok")
"""


def test_tuning_raises_the_young_threshold_freezes_start_up_and_still_collects_cycles() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
