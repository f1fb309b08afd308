"""Recurring tasks against a real broker: fires, their tasks and statuses, and the schedules CLI
acting on a running leader."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from streamjobs import Settings, StreamJobsError, TaskRegistry, TaskState
from streamjobs.cli import app
from streamjobs.middleware import AttemptContext, Middleware
from streamjobs.scheduler import Scheduler
from streamjobs.scheduler.state import schedule_of
from tests.fault.schedule_handlers import plain, registry
from tests.integration.conftest import ThreadWorker, latest
from tests.integration.scheduling import due_times, fire_ids, gaps, state_of
from tests.support import holds_for, wait_for

pytestmark = pytest.mark.integration


class HeardSchedules(Middleware):
    """Records ``AttemptContext.schedule`` per task id."""

    def __init__(self) -> None:
        self.schedules: dict[str, str | None] = {}

    def attempt(self, ctx: AttemptContext) -> AbstractContextManager[object]:
        self.schedules[ctx.task_id] = ctx.schedule
        return super().attempt(ctx)


@pytest.fixture
def scheduler() -> Iterator[Callable[..., Scheduler]]:
    """Start Schedulers in threads; each is stopped at teardown and must not have failed."""
    started: list[tuple[Scheduler, list[StreamJobsError]]] = []

    def start(settings: Settings, tasks: TaskRegistry, owner: str = "test") -> Scheduler:
        errors: list[StreamJobsError] = []
        instance = Scheduler(settings, tasks, owner=owner, on_failure=errors.append)
        instance.start()
        started.append((instance, errors))
        return instance

    yield start
    for instance, _ in started:
        instance.stop()
    for _, errors in started:
        assert not errors, errors


@pytest.fixture
def cli(settings: Settings) -> Callable[..., Any]:
    """``streamjobs ARGS --bootstrap-servers ... --topic-prefix ...`` through CliRunner."""
    runner = CliRunner()
    clean_env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("STREAMJOBS_")}
    where = ["--bootstrap-servers", settings.bootstrap_servers, "--topic-prefix"]

    def invoke(*args: str) -> Any:
        result = runner.invoke(
            app, [*args, *where, settings.topic_prefix], env=clean_env, catch_exceptions=False
        )
        assert result.exit_code == 0, result.output
        return result

    return invoke


def test_a_schedule_declared_in_code_fires_each_due_time_once_and_its_tasks_succeed(
    settings: Settings,
    worker: Callable[..., ThreadWorker],
    scheduler: Callable[..., Scheduler],
    cli: Callable[..., Any],
) -> None:
    heard = HeardSchedules()
    worker(registry, middleware=[heard])
    scheduler(settings, registry)

    wait_for(lambda: len(fire_ids(settings, "tick")) >= 4, 30.0, message="four fires")

    ids = fire_ids(settings, "tick")
    assert len(ids) == len(set(ids)), Counter(ids).most_common(3)
    assert gaps(due_times(ids), timedelta(seconds=2)) == []
    wait_for(
        lambda: all((v := latest(settings, t)) and v.state is TaskState.SUCCEEDED for t in ids),
        20.0,
        message="fired tasks succeeded",
    )
    state = state_of(settings, "tick")
    assert state is not None
    assert state.owner == "test"
    assert state.fires >= len(ids)
    assert state.recent[0].lateness_ms < 2000
    shown = json.loads(cli("status", ids[0], "--json").output)
    assert shown["schedule"] == "tick"
    assert shown["state"] == "succeeded"
    assert heard.schedules.get(ids[0]) == "tick"  # middleware see the schedule of each attempt


def test_a_second_scheduler_of_the_queue_never_fires_while_the_first_leads(
    settings: Settings,
    worker: Callable[..., ThreadWorker],
    scheduler: Callable[..., Scheduler],
) -> None:
    worker(registry)
    first = scheduler(settings, registry, "first")
    second = scheduler(settings, registry, "second")
    wait_for(lambda: first.leading or second.leading, 30.0, message="a leader")

    wait_for(lambda: len(fire_ids(settings, "tick")) >= 4, 30.0, message="four fires")

    assert not (first.leading and second.leading)
    ids = fire_ids(settings, "tick")
    assert len(ids) == len(set(ids))
    state = state_of(settings, "tick")
    assert state is not None
    assert {f.task_id for f in state.recent} <= set(ids)


def _fires_due_after(settings: Settings, moment: datetime) -> list[datetime]:
    return [d for d in due_times(fire_ids(settings, "every1")) if d > moment]


def test_cli_pause_resume_trigger_remove_take_effect_on_the_running_leader_within_seconds(
    settings: Settings,
    worker: Callable[..., ThreadWorker],
    scheduler: Callable[..., Scheduler],
    cli: Callable[..., Any],
) -> None:
    worker(plain)
    leader = scheduler(settings, plain)
    wait_for(lambda: leader.leading, 30.0, message="the scheduler leads")
    cli("schedules", "add", "every1", "--task", "Tick", "--args", '{"note": "hi"}', "--every", "1s")
    wait_for(lambda: len(fire_ids(settings, "every1")) >= 2, 10.0, message="fires after add")

    cli("schedules", "pause", "every1")
    paused_at = datetime.now(UTC)
    _quiet_for(settings, after=paused_at + timedelta(seconds=2), seconds=4.0)
    listed = json.loads(cli("schedules", "list", "--json").output)
    assert listed[0]["paused"] is True

    cli("schedules", "resume", "every1")
    resumed_at = datetime.now(UTC)
    wait_for(lambda: _fires_due_after(settings, resumed_at), 3.0, message="a fire after resume")
    # due times that passed while paused never fire
    assert not [
        d
        for d in _fires_due_after(settings, paused_at + timedelta(seconds=2))
        if d < resumed_at - timedelta(seconds=1)
    ]

    cli("schedules", "pause", "every1")
    task_id = cli("schedules", "trigger", "every1").output.strip()
    assert schedule_of(task_id) == "every1"
    wait_for(
        lambda: (v := latest(settings, task_id)) and v.state is TaskState.SUCCEEDED,
        5.0,
        message="the triggered task ran although paused",
    )

    cli("schedules", "resume", "every1")
    cli("schedules", "remove", "every1")
    removed_at = datetime.now(UTC)
    _quiet_for(settings, after=removed_at + timedelta(seconds=2), seconds=4.0)
    assert json.loads(cli("schedules", "list", "--json").output) == []
    wait_for(lambda: state_of(settings, "every1") is None, 5.0, message="the state is deleted")


def _quiet_for(settings: Settings, *, after: datetime, seconds: float) -> None:
    """Assert that no fire due later than ``after`` appears for ``seconds`` (an absence can only
    be observed over a window)."""

    def quiet() -> bool:
        late = _fires_due_after(settings, after)
        assert not late, f"fired after it should have stopped: {late}"
        return True

    holds_for(quiet, seconds, interval=0.5)


def test_schedules_list_and_show_report_cadence_next_and_last_fire_leader_and_task_states(
    settings: Settings,
    worker: Callable[..., ThreadWorker],
    scheduler: Callable[..., Scheduler],
    cli: Callable[..., Any],
) -> None:
    worker(registry)
    scheduler(settings, registry, "the-leader")
    wait_for(lambda: len(fire_ids(settings, "tick")) >= 2, 30.0, message="two fires")

    listed = json.loads(cli("schedules", "list", "--json").output)
    [tick] = listed
    assert tick["cadence"] == "every 2s"
    assert tick["catch_up"] == "all"
    assert tick["owner"] == "the-leader"
    assert tick["source"] == "code"
    assert tick["next_due"] > tick["last_fire"]["due"]
    text = cli("schedules", "list").output
    assert "tick: Tick every 2s (all)" in text

    wait_for(lambda: "succeeded" in cli("schedules", "show", "tick").output, 15.0, message="states")
    shown = json.loads(cli("schedules", "show", "tick", "--json").output)
    assert shown["recent"][0]["task_id"].startswith(f"schedule:{settings.queue}:tick:")
    assert {r["state"] for r in shown["recent"]} <= {"queued", "running", "succeeded"}
