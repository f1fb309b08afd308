"""Recurring tasks across ``streamjobs consume`` processes: one leader fires, and when it is
killed with SIGKILL another takes over without duplicating or missing a due time.

The schedule (``tests/fault/schedule_handlers.py``) fires every 2 s with ``catch_up="all"``, so
due times that pass during a failover must all fire, late, exactly once. How long a failover takes
is the broker's business: under KIP-848 a killed member keeps its partition until
``group.consumer.session.timeout.ms`` (10 s on the local broker) expires.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from streamjobs import Settings
from streamjobs.scheduler.state import State
from tests.integration.conftest import WorkerProcesses, build_settings
from tests.integration.scheduling import due_times, fire_ids, gaps, state_of
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.fault, pytest.mark.slow]

REGISTRY = "tests.fault.schedule_handlers:registry"
STEP = timedelta(seconds=2)
# the dead leader's session (10 s), the claim and the catch-up read, on a loaded machine
FAILOVER_S = 45.0


@pytest.fixture
def settings(kafka_bootstrap: str, unique_prefix: str) -> Settings:
    return build_settings(kafka_bootstrap, unique_prefix)


@pytest.fixture
def worker_process(tmp_path: Path) -> Iterator[WorkerProcesses]:
    procs = WorkerProcesses(tmp_path)
    yield procs
    procs.stop_all()


def _tick(settings: Settings) -> State | None:
    return state_of(settings, "tick")


def _leader(settings: Settings, procs: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    """The process whose worker id (``host-pid-xxxxxx``) wrote the latest schedule state."""
    state = wait_for(lambda: _tick(settings), 30.0, message="a schedule state")
    assert state.owner is not None
    pid = int(state.owner.rsplit("-", 2)[1])
    [proc] = [p for p in procs if p.pid == pid]
    return proc


@contextmanager
def _logs_on_failure(procs: WorkerProcesses, lines: int = 60) -> Iterator[None]:
    """A failed wait says what each worker logged last (the leader's claims and fires)."""
    try:
        yield
    except AssertionError as exc:
        tails = [
            f"--- worker pid {proc.pid} (exit code {proc.poll()}):\n"
            + "\n".join(procs.log_of(proc).splitlines()[-lines:])
            for proc in procs.started()
        ]
        raise AssertionError(f"{exc}\n" + "\n".join(tails)) from exc


def _fires_after(settings: Settings, fires: int, timeout: float) -> State:
    return wait_for(
        lambda: (s := _tick(settings)) is not None and s.fires > fires and s,
        timeout,
        message=f"more than {fires} fires",
    )


def test_each_due_time_fires_exactly_once_across_three_workers_and_two_leader_kills(
    settings: Settings, worker_process: WorkerProcesses
) -> None:
    procs = [worker_process.start(settings, REGISTRY) for _ in range(3)]
    with _logs_on_failure(worker_process):
        _kill_two_leaders_in_turn(settings, procs)


def _kill_two_leaders_in_turn(settings: Settings, procs: list[subprocess.Popen[bytes]]) -> None:
    _fires_after(settings, 2, 60.0)

    # kill the leader just after a fire: the fire is committed, the next one is not yet due
    first = _leader(settings, procs)
    fired = _tick(settings)
    assert fired is not None
    after_fire = _fires_after(settings, fired.fires, 10.0)
    first.send_signal(signal.SIGKILL)
    first.wait(10.0)
    killed_after = datetime.now(UTC)
    taken_over = wait_for(
        lambda: (s := _tick(settings)) is not None and s.owner != after_fire.owner and s,
        FAILOVER_S,
        message="a fire from another worker after the first kill",
    )

    # kill the new leader about 300 ms before its next due time
    second = _leader(settings, procs)
    assert second is not first
    settled = taken_over.settled_due_ms
    assert settled is not None
    next_due_s = settled / 1000 + STEP.total_seconds()
    while (left := next_due_s - time.time()) < 0.3:  # that one is too close: take the next
        next_due_s += STEP.total_seconds()
    time.sleep(left - 0.3)  # timing the kill is the point of this test, not synchronisation
    second.send_signal(signal.SIGKILL)
    second.wait(10.0)
    wait_for(
        lambda: (
            (s := _tick(settings)) is not None
            and s.owner not in (after_fire.owner, taken_over.owner)
        ),
        FAILOVER_S,
        message="a fire from the third worker after the second kill",
    )
    last = _fires_after(settings, _tick(settings).fires + 1, 15.0)  # type: ignore[union-attr]

    ids = fire_ids(settings, "tick")
    duplicated = [t for t, n in Counter(ids).items() if n > 1]
    assert duplicated == []
    dues = due_times(ids)
    assert gaps(dues, STEP) == [], "a due time was missed"
    assert last.settled_due_ms is not None
    assert dues[-1] >= datetime.fromtimestamp(last.settled_due_ms / 1000, UTC)
    assert dues[0] < killed_after - STEP
