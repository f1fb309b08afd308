"""Outcome metrics and logs of a real worker: counters, the duration histogram and the probes
scraped over HTTP, outcome lines in text and JSON, a handler's own log record with its task id,
and a real Prometheus scraping the worker."""

from __future__ import annotations

import io
import json
import logging
import shutil
import socket
import subprocess
import threading
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamjobs import Producer, Settings, TaskState, Worker
from streamjobs.metrics import logs
from streamjobs.metrics.monitor import Monitor
from streamjobs.metrics.prometheus import new_registry
from streamjobs.topics import queue_topics
from tests.integration.conftest import statuses
from tests.integration.observed_tasks import (
    HANDLER_LOGGER,
    Broken,
    Flaky,
    Greet,
    Refused,
    registry,
)
from tests.support import wait_for

pytestmark = pytest.mark.integration


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except urllib.error.URLError:  # not listening (yet)
        return 0, ""


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition text by (name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


class Captured:
    """Log records of the test's worker, in both formats."""

    def __init__(self) -> None:
        self.text, self.json = io.StringIO(), io.StringIO()
        self.handlers = []
        for stream, kind in ((self.text, "text"), (self.json, "json")):
            handler = logging.StreamHandler(stream)
            handler.setFormatter(logs.formatter(kind))  # type: ignore[arg-type]
            handler.addFilter(logs.TaskContextFilter())
            self.handlers.append(handler)

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.json.getvalue().splitlines() if line]


@pytest.fixture
def captured() -> Iterator[Captured]:
    capture = Captured()
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    for handler in capture.handlers:
        root.addHandler(handler)
    yield capture
    for handler in capture.handlers:
        root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def monitored(settings: Settings) -> Iterator[Callable[[], tuple[Worker, Monitor]]]:
    """Start a Worker with a Monitor (own registry, metrics on a free port, no heartbeats)."""
    running: list[tuple[Worker, threading.Thread, Any]] = []

    def start() -> tuple[Worker, Monitor]:
        monitor = Monitor(settings, metrics_port=0, heartbeats=False, registry=new_registry())
        worker = Worker(settings, registry, middleware=monitor.middleware)
        watching = monitor.watching(worker)
        watching.__enter__()
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        running.append((worker, thread, watching))
        assert worker.assigned.wait(30.0), "worker got no partitions within 30 s"
        return worker, monitor

    yield start
    for worker, thread, watching in running:
        worker.stop()
        thread.join(40.0)
        watching.__exit__(None, None, None)


def _run_one_of_each(producer: Producer, settings: Settings, wait_for: Any) -> dict[str, str]:
    ids = {
        "greet": producer.submit(Greet(name="ada"), key="k1").task_id,
        "flaky": producer.submit(Flaky(token=uuid.uuid4().hex), key="k2").task_id,
        "broken": producer.submit(Broken(n=1), key="k3").task_id,
        "refused": producer.submit(Refused(why="not_wanted"), key="k4").task_id,
    }
    final = {TaskState.SUCCEEDED, TaskState.DEAD_LETTERED}

    def all_final() -> bool:
        views = statuses(settings)
        return all(i in views and views[i].state in final for i in ids.values())

    wait_for(all_final, 60.0, message="every task final")
    return ids


def test_metrics_endpoint_counts_each_outcome_and_times_every_attempt(
    monitored: Any, producer: Producer, settings: Settings, wait_for: Any, raw_producer: Any
) -> None:
    _, monitor = monitored()
    host, port = monitor.endpoint.address
    raw_producer.produce(queue_topics(settings).main, b"not a task", key=b"poison")
    _run_one_of_each(producer, settings, wait_for)
    q = settings.queue

    def scraped() -> dict[Any, float] | None:
        found = samples(_get(f"http://{host}:{port}/metrics")[1])
        # outcomes are counted once written: 2 successes, 3 retries, 2 dead letters
        done = value(found, "streamjobs_task_succeeded_total", queue=q, task="Greet")
        dead = value(found, "streamjobs_task_dead_lettered_total", queue=q, task="Broken",
                     reason="max_attempts")  # fmt: skip
        rejected = value(found, "streamjobs_task_rejected_total", queue=q, reason="decode_error")
        return found if done == 1 and dead == 1 and rejected == 1 else None

    found = wait_for(scraped, 30.0, message="outcomes counted")
    assert value(found, "streamjobs_task_succeeded_total", queue=q, task="Flaky") == 1
    assert value(found, "streamjobs_task_retried_total", queue=q, task="Flaky", tier="0.3s") == 1
    assert value(found, "streamjobs_task_failed_total", queue=q, task="Flaky",
                 exception="ConnectionError") == 1  # fmt: skip
    # Broken: attempts 1 and 2 retried (tiers 300ms then 600ms), attempt 3 dead-lettered
    assert value(found, "streamjobs_task_retried_total", queue=q, task="Broken", tier="0.3s") == 1
    assert value(found, "streamjobs_task_retried_total", queue=q, task="Broken", tier="0.6s") == 1
    assert value(found, "streamjobs_task_failed_total", queue=q, task="Broken",
                 exception="ValueError") == 3  # fmt: skip
    # a Discard is the handler's choice: dead-lettered with its reason, not counted as failed
    assert value(found, "streamjobs_task_dead_lettered_total", queue=q, task="Refused",
                 reason="not_wanted") == 1  # fmt: skip
    assert value(found, "streamjobs_task_failed_total", queue=q, task="Refused",
                 exception="streamjobs.errors.Discard") == 0  # fmt: skip
    started = {t: value(found, "streamjobs_task_started_total", queue=q, task=t)
               for t in ("Greet", "Flaky", "Broken", "Refused")}  # fmt: skip
    assert started == {"Greet": 1, "Flaky": 2, "Broken": 3, "Refused": 1}
    for task, count in started.items():
        assert value(found, "streamjobs_task_duration_seconds_count", queue=q, task=task) == count
        assert value(found, "streamjobs_task_duration_seconds_bucket", queue=q, task=task,
                     le="+Inf") == count  # fmt: skip
    # a record no attempt was made for is rejected, by reason
    assert value(found, "streamjobs_task_rejected_total", queue=q, reason="decode_error") == 1
    assert value(found, "streamjobs_worker_partitions", queue=q) > 0
    lags = [v for (name, _), v in found.items() if name == "streamjobs_consumer_lag"]
    assert lags
    assert all(v >= 0 for v in lags)
    assert _get(f"http://{host}:{port}/livez")[0] == 200
    assert _get(f"http://{host}:{port}/readyz") == (200, f"polling, {len(lags)} partitions\n")


def test_outcome_lines_tracebacks_and_handler_records_carry_the_task(
    monitored: Any, producer: Producer, settings: Settings, wait_for: Any, captured: Captured
) -> None:
    monitored()
    ids = _run_one_of_each(producer, settings, wait_for)

    def outcome_lines() -> list[dict[str, Any]] | None:
        lines = [x for x in captured.json_lines() if x.get("event") == "task_outcome"]
        return lines if len(lines) >= 7 else None  # 1 + 2 + 3 + 1 attempts

    lines = wait_for(outcome_lines, 30.0, message="seven outcome lines")
    by_outcome = {(x["task"], x["attempt"]): x for x in lines}
    greet = by_outcome[("Greet", 1)]
    assert greet["outcome"] == "succeeded"
    assert greet["level"] == "DEBUG"
    assert greet["task_id"] == ids["greet"]
    assert greet["key"] == "k1"
    assert greet["queue"] == settings.queue
    assert greet["duration_ms"] >= 0
    assert {"topic", "partition", "offset", "worker_id"} <= set(greet)
    assert by_outcome[("Flaky", 1)]["outcome"] == "retried"
    assert by_outcome[("Flaky", 1)]["retry_tier_s"] == 0.3
    assert by_outcome[("Flaky", 1)]["level"] == "INFO"
    dead = by_outcome[("Broken", 3)]
    assert (dead["outcome"], dead["reason"], dead["error_type"]) == (
        "dead_lettered",
        "max_attempts",
        "ValueError",
    )
    assert by_outcome[("Refused", 1)]["reason"] == "not_wanted"
    records = captured.json_lines()
    # tracebacks: WARNING while retries remain, ERROR when dead-lettered; none for a Discard
    raised = [x for x in records if "exception" in x]
    levels = {(x["logger"], x["level"], x["message"].split()[0]) for x in raised}
    assert ("streamjobs.outcomes", "WARNING", "Flaky") in levels
    assert ("streamjobs.outcomes", "ERROR", "Broken") in levels
    assert not any(x["message"].startswith("Refused") for x in raised)
    assert any("ValueError: broken 1" in x["exception"] for x in raised)
    # the handler's own record carries its task id (JSON) and names it (text)
    own = [x for x in records if x["logger"] == HANDLER_LOGGER]
    assert own
    assert own[0]["task_id"] == ids["greet"]
    assert own[0]["task"] == "Greet"
    assert own[0]["message"] == "greeting ada"
    text = captured.text.getvalue()
    assert f"greeting ada [task_id={ids['greet']} task=Greet" in text
    assert f"succeeded Greet task_id={ids['greet']} key=k1 attempt=1" in text
    assert "dead_lettered Broken" in text
    assert "reason=max_attempts: ValueError: broken 1" in text
    assert "Traceback (most recent call last)" in text


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """A real Prometheus (Debian's binary) on 127.0.0.1 and a free port, with its own config
    and data directory, scraping the target given every second; stopped by PID."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed; run `make system-deps` (apt-get prometheus)")
    started: list[subprocess.Popen[bytes]] = []

    def start(target: str) -> str:
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: streamjobs\n    static_configs: [{{targets: ['{target}']}}]\n"
        )
        port = _free_port()
        log = (tmp_path / "prometheus.log").open("wb")
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=log,
        )
        log.close()
        started.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: proc.poll() is None and _get(f"{url}/-/ready")[0] == 200, 60.0,
                 message="prometheus ready")  # fmt: skip
        return url

    yield start
    for proc in started:
        proc.terminate()
        try:
            proc.wait(20.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10.0)


def test_a_real_prometheus_scrapes_the_worker_counters(
    monitored: Any, producer: Producer, settings: Settings, prometheus: Any
) -> None:
    _, monitor = monitored()
    host, port = monitor.endpoint.address
    url = prometheus(f"{host}:{port}")
    handles = [producer.submit(Greet(name=f"n{i}"), key=f"k{i}") for i in range(5)]
    for handle in handles:
        handle.wait(60.0)
    query = urllib.parse.urlencode(
        {"query": f'sum(streamjobs_task_succeeded_total{{queue="{settings.queue}"}})'}
    )

    def counted() -> float | None:
        answer = json.loads(_get(f"{url}/api/v1/query?{query}")[1])
        result = answer["data"]["result"]
        found = float(result[0]["value"][1]) if result else None
        return found if found == 5 else None

    assert wait_for(counted, 60.0, message="prometheus sees 5 successes") == 5
    targets = json.loads(_get(f"{url}/api/v1/targets")[1])["data"]["activeTargets"]
    assert [t["health"] for t in targets] == ["up"]
