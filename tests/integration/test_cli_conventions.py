"""The command line's exit codes and output with no terminal, against a real broker (through
typer's CliRunner, which is not a terminal)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from typing import Any

import pytest
from typer.testing import CliRunner

from streamjobs import Discard, Producer, Settings, Task, TaskFailed, TaskRegistry, topics
from streamjobs.cli import app
from tests.integration.conftest import RawProducer, ThreadWorker

pytestmark = pytest.mark.integration

# the test queue's tiers (TEST_SETTINGS) as a worker would have them in its environment
TIERS = {"STREAMJOBS_RETRY_TIERS": "300ms,600ms", "STREAMJOBS_DELAY_TIERS": "500ms,1s,2s"}


class Doomed(Task):
    why: str


def _cli(*args: str, **env: str) -> Any:
    clean: dict[str, str | None] = {k: None for k in os.environ if k.startswith("STREAMJOBS_")}
    return CliRunner().invoke(app, list(args), env={**clean, **env}, catch_exceptions=False)


def _where(settings: Settings) -> list[str]:
    return [
        "--bootstrap-servers",
        settings.bootstrap_servers,
        "--topic-prefix",
        settings.topic_prefix,
    ]


def test_status_of_a_dead_lettered_task_exits_1_with_its_reason_and_utc_times(
    settings: Settings, producer: Producer, worker: Callable[..., ThreadWorker]
) -> None:
    registry = TaskRegistry()

    @registry.handler(Doomed)
    def doom(task: Doomed) -> None:
        raise Discard(task.why)

    handle = producer.submit(Doomed(why="not_wanted"))
    worker(registry)
    with pytest.raises(TaskFailed):
        handle.wait(timeout=30)

    shown = _cli("status", handle.task_id, *_where(settings))
    as_json = _cli("status", handle.task_id, *_where(settings), "--json")

    assert shown.exit_code == 1, shown.output
    assert "state: dead_lettered" in shown.output
    assert "reason: not_wanted" in shown.output
    assert "Z (" in shown.output
    assert " ago)" in shown.output
    assert "version" not in shown.output
    assert as_json.exit_code == 1
    letters = json.loads(_cli("dlq", "list", *_where(settings), "--json").stdout)
    (letter,) = [d for d in letters if d["task_id"] == handle.task_id]
    shown_letter = _cli("dlq", "show", letter["ref"], *_where(settings))
    assert shown_letter.exit_code == 0, shown_letter.output
    assert re.search(
        r"failed_at: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(\d+ s ago\)", shown_letter.stdout
    )
    assert "_ms:" not in shown_letter.stdout.split("envelope:")[0]
    assert '"version"' in as_json.stdout
    assert '"updated_at_ms"' in as_json.stdout


def test_topics_verify_and_inspect_name_a_tier_left_behind_with_its_backlog(
    settings: Settings, raw_producer: RawProducer
) -> None:
    # the queue once had a 5s retry tier; a task still waits there
    before = Settings(**{**settings.model_dump(), "retry_tiers": "300ms,600ms,5s"})
    topics.ensure(before)
    old_tier = f"{settings.topic_prefix}.{settings.queue}.retry.5s"
    raw_producer.produce(old_tier, b"a task written under the old tiers")

    verified = _cli("topics", "verify", *_where(settings), **TIERS)
    inspected = _cli("inspect", *_where(settings), **TIERS)
    with_old_tiers = _cli(
        "topics",
        "verify",
        *_where(settings),
        **{**TIERS, "STREAMJOBS_RETRY_TIERS": "300ms,600ms,5s"},
    )

    assert verified.exit_code == 1, verified.output
    assert f"{old_tier}: not in the settings' tiers; 1 tasks waiting there" in verified.stdout
    assert "topics ensure" in verified.stderr
    assert inspected.exit_code == 0, inspected.output
    rows = [line for line in inspected.stdout.splitlines() if old_tier in line]
    assert " 1 " in rows[0]  # its partition, with the lag
    assert "not in the settings" in rows[-1]  # its tier row, one line, not wrapped at 80 columns
    assert with_old_tiers.exit_code == 0, with_old_tiers.output
    assert with_old_tiers.stdout.strip() == "ok"


def test_topics_verify_says_the_tiers_changed_when_a_tier_topic_is_missing(
    settings: Settings,
) -> None:
    changed = {**TIERS, "STREAMJOBS_RETRY_TIERS": "300ms,2m"}

    verified = _cli("topics", "verify", *_where(settings), **changed)

    assert verified.exit_code == 1
    assert f"{settings.topic_prefix}.{settings.queue}.retry.2m: missing" in verified.stderr
    assert ".retry.600ms" in verified.stderr  # the tier on the cluster the settings lack
    assert "streamjobs topics ensure" in verified.stderr


def test_inspect_with_no_terminal_neither_wraps_nor_cuts_long_topic_names(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(queue="a-queue-with-a-rather-long-name-for-a-narrow-terminal")

    inspected = _cli("inspect", *_where(settings), "--queue", settings.queue, **TIERS)

    assert inspected.exit_code == 0, inspected.output
    assert "…" not in inspected.stdout
    for topic in topics.queue_topics(settings).task_topics:
        assert any(topic in line for line in inspected.stdout.splitlines()), topic
