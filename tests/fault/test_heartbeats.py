"""Worker heartbeats on ``<prefix>.workers`` as ``streamjobs workers`` shows them: live workers
listed with what they run, a SIGKILLed one marked lost once its reports stop for the configured
intervals, a gracefully stopped one gone at once (its tombstone)."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from streamjobs import Producer, Settings
from streamjobs.cli.app import app
from tests.fault.handlers import Slow
from tests.integration.conftest import WorkerProcesses, build_settings
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.fault, pytest.mark.slow]

REGISTRY = "tests.fault.handlers:registry"
INTERVAL_S = 0.5


@pytest.fixture
def settings(kafka_bootstrap: str, unique_prefix: str) -> Settings:
    return build_settings(kafka_bootstrap, unique_prefix, heartbeat_interval=f"{INTERVAL_S}s")


@pytest.fixture
def worker_process(tmp_path: Path) -> Iterator[WorkerProcesses]:
    procs = WorkerProcesses(tmp_path)
    yield procs
    procs.stop_all()


def listed(settings: Settings) -> dict[int, dict[str, Any]]:
    """``streamjobs workers --json`` by worker pid."""
    result = CliRunner().invoke(
        app,
        [
            "workers",
            "--json",
            "--bootstrap-servers",
            settings.bootstrap_servers,
            "--topic-prefix",
            settings.topic_prefix,
        ],
    )
    assert result.exit_code == 0, result.output
    return {w["pid"]: w for w in json.loads(result.output)}


def test_workers_lists_live_workers_marks_a_killed_one_lost_and_drops_a_stopped_one(
    settings: Settings, worker_process: WorkerProcesses
) -> None:
    first = worker_process.start(settings, REGISTRY)
    second = worker_process.start(settings, REGISTRY)

    def both_live_with_partitions() -> dict[int, dict[str, Any]] | None:
        found = listed(settings)
        pids = {first.pid, second.pid}
        ok = pids <= set(found) and all(
            found[p]["state"] == "live" and found[p]["partitions"] > 0 for p in pids
        )
        return found if ok else None

    found = wait_for(both_live_with_partitions, 90.0, message="two live workers")
    with Producer(settings) as producer:  # submitted once the group is settled: one owner runs it
        slow = producer.submit(Slow(seconds=5.0), key="long")
        running = wait_for(
            lambda: [r for w in listed(settings).values() for r in w["running"]],
            30.0,
            message="the slow task reported as running",
        )
    assert [(r["task"], r["task_id"]) for r in running] == [("Slow", slow.task_id)]
    report = found[first.pid]
    assert report["queue"] == settings.queue
    assert report["group"] == settings.group
    assert report["interval_ms"] == INTERVAL_S * 1000
    assert report["version"]

    first.send_signal(signal.SIGKILL)
    first.wait(10.0)
    lost = wait_for(
        lambda: (w := listed(settings).get(first.pid)) is not None and w["state"] == "lost" and w,
        30.0,
        message="the killed worker marked lost",
    )
    # lost means silent for more than three of its intervals, not one late report
    assert lost["age_ms"] > 3 * INTERVAL_S * 1000
    assert listed(settings)[second.pid]["state"] == "live"

    second.send_signal(signal.SIGTERM)
    assert second.wait(60.0) == 0
    remaining = listed(settings)
    assert second.pid not in remaining  # the tombstone removed it at once
    assert remaining[first.pid]["state"] == "lost"  # the killed one stays, marked lost


def test_workers_says_so_when_none_report(settings: Settings) -> None:
    result = CliRunner().invoke(
        app,
        ["workers", "--bootstrap-servers", settings.bootstrap_servers,
         "--topic-prefix", settings.topic_prefix],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output == "no workers\n"
