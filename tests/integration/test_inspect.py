"""`inspect` against a real broker: lag, counts by state, throughput, tiers and dead letters."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta

import pytest
from typer.testing import CliRunner

from streamjobs import Producer, Settings, Task, TaskRegistry, statusreads
from streamjobs.cli import app
from streamjobs.ops.inspect import inspect, render_text
from streamjobs.topics import queue_topics
from tests.integration.conftest import RawProducer, ThreadWorker, state_of, worker_env
from tests.support import wait_for

pytestmark = pytest.mark.integration

BACKLOG = 12


class Resize(Task):
    image: int


def resizer() -> TaskRegistry:
    registry = TaskRegistry()

    @registry.handler(Resize)
    def resize(task: Resize) -> int:
        return task.image

    return registry


def test_inspect_lag_and_counts_match_a_known_backlog_then_a_drained_queue(
    settings: Settings,
    producer: Producer,
    raw_producer: RawProducer,
    worker: Callable[..., ThreadWorker],
) -> None:
    main = queue_topics(settings).main
    producer.submit_many([Resize(image=n) for n in range(BACKLOG)])
    raw_producer.produce(main, b"not a task", key=b"poison", partition=1)

    waiting = inspect(settings)

    assert waiting.lag_of(main) == BACKLOG + 1
    assert sum(p.end for p in waiting.partitions if p.topic == main) == BACKLOG + 1
    assert all(p.committed is None for p in waiting.partitions)
    assert waiting.states == {"queued": BACKLOG}
    assert waiting.succeeded_last_minute == 0
    assert all(t.lag == 0 and t.oldest_due_ms is None for t in waiting.tiers)
    assert waiting.dead_letters == {}

    worker(resizer())
    drained = wait_for(
        lambda: (report := inspect(settings)).lag == 0 and report,
        30.0,
        message="the worker group to commit the whole backlog",
    )

    assert drained.states == {"succeeded": BACKLOG}
    assert drained.succeeded_last_minute == BACKLOG
    assert drained.tasks_per_second == pytest.approx(BACKLOG / 60)
    assert drained.dead_letters == {"decode_error": 1}
    assert sum(p.committed or 0 for p in drained.partitions if p.topic == main) == BACKLOG + 1
    text = render_text(drained)
    assert main in text
    assert f"{BACKLOG / 60:.2f} tasks/s" in text
    result = CliRunner().invoke(
        app,
        [
            *("inspect", "--json"),
            *("--bootstrap-servers", settings.bootstrap_servers),
            *("--topic-prefix", settings.topic_prefix),
        ],
        env=worker_env(settings),
    )
    assert result.exit_code == 0, result.output
    as_json = json.loads(result.output)
    assert (as_json["lag"], as_json["states"]) == (0, {"succeeded": BACKLOG})


def test_inspect_shows_retry_tier_backlog_and_its_oldest_due_time(
    make_settings: Callable[..., Settings], worker: Callable[..., ThreadWorker]
) -> None:
    settings = make_settings(retry_tiers="1h")
    registry = TaskRegistry()

    @registry.handler(Resize)
    def resize(task: Resize) -> int:
        raise TimeoutError("image store slow")

    worker(registry, settings)
    with Producer(settings) as producer:
        handle = producer.submit(Resize(image=1))
    wait_for(lambda: state_of(settings, handle.task_id) == "retry_scheduled", 30.0)
    retry_topic = queue_topics(settings).retry[timedelta(hours=1)]

    # the retry record and the status are on different partitions: either may be seen first
    report = wait_for(
        lambda: (found := inspect(settings)).tiers[0].lag == 1 and found,
        30.0,
        message="the retry record to count as tier backlog",
    )

    tier = report.tiers[0]
    assert [t.topic for t in report.tiers if t.kind == "retry"] == [retry_topic]
    assert (tier.kind, tier.delay, tier.lag) == ("retry", timedelta(hours=1), 1)
    view = statusreads.latest(settings, handle.task_id)
    assert view is not None
    assert tier.oldest_due_ms == view.not_before_ms
    assert tier.oldest_due_ms is not None
    assert 3500_000 < tier.oldest_due_ms - report.taken_at_ms <= 3600_000
    assert report.states == {"retry_scheduled": 1}
    assert report.lag_of(queue_topics(settings).main) == 0
    assert "retry 1h" in render_text(report)
