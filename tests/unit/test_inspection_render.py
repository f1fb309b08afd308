"""streamjobs.ops.inspect presentation: the tables people read and the JSON scripts parse."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from streamjobs.ops.deadletters import DeadLetterInfo
from streamjobs.ops.inspect import (
    PartitionLag,
    Report,
    TierBacklog,
    render_dead_letters,
    render_text,
)

NOW_MS = 1_800_000_000_000


def report(**overrides: Any) -> Report:
    fields: dict[str, Any] = {
        "queue": "emails",
        "group": "acme.emails.workers",
        "taken_at_ms": NOW_MS,
        "partitions": [
            PartitionLag("acme.emails", 0, 0, 120, 100, 20),
            PartitionLag("acme.emails", 1, 5, 40, None, 35),
            PartitionLag("acme.emails.retry.5s", 0, 0, 3, 1, 2),
        ],
        "states": {"queued": 55, "retry_scheduled": 2, "succeeded": 900},
        "succeeded_last_minute": 90,
        "tiers": [
            TierBacklog("acme.emails.retry.5s", "retry", timedelta(seconds=5), 2, NOW_MS + 4000),
            TierBacklog("acme.emails.delay.1m", "delay", timedelta(minutes=1), 0, None),
        ],
        "dead_letters": {"decode_error": 1, "max_attempts": 4},
        "redriven": 3,
    }
    fields.update(overrides)
    return Report(**fields)


def test_report_totals_lag_over_partitions_and_per_topic() -> None:
    subject = report()

    assert subject.lag == 57
    assert subject.lag_of("acme.emails") == 55
    assert subject.lag_of("acme.emails.retry.5s") == 2
    assert subject.tasks_per_second == 1.5


def test_json_report_is_plain_data_with_durations_spelled_like_topic_names() -> None:
    data = json.loads(json.dumps(report().as_dict()))

    assert data["lag"] == 57
    assert data["tasks_per_second"] == 1.5
    assert data["tiers"][0] == {
        "topic": "acme.emails.retry.5s",
        "kind": "retry",
        "delay": "5s",
        "lag": 2,
        "oldest_due_ms": NOW_MS + 4000,
        "configured": True,
    }
    assert data["partitions"][1]["committed"] is None
    assert data["dead_letters"] == {"decode_error": 1, "max_attempts": 4}


def test_rendered_tables_show_lag_states_throughput_tiers_and_dead_letters() -> None:
    text = render_text(report(), width=140)

    assert "queue emails · group acme.emails.workers" in text
    assert "│ acme.emails          │         1 │         40 │         - │  35 │" in text
    assert "│ total" in text
    assert "57" in text
    assert "retry_scheduled" in text
    assert "1.50 tasks/s over the last minute (90 succeeded)" in text
    assert "retry 5s" in text
    assert "in 4s" in text
    assert "delay 1m" in text
    assert "max_attempts" in text
    assert "3 dead letters already re-driven" in text
    assert "\x1b[" not in text  # no colour codes in plain text


def test_an_empty_queue_renders_without_rows_or_due_times() -> None:
    text = render_text(
        report(
            partitions=[],
            states={},
            succeeded_last_minute=0,
            tiers=[],
            dead_letters={},
            redriven=0,
        ),
        width=100,
    )

    assert "0.00 tasks/s" in text
    assert "0 dead letters already re-driven" in text
    assert "│ total" in text


def test_dead_letter_table_lists_reference_reason_task_and_error() -> None:
    letter = DeadLetterInfo(
        partition=2,
        offset=17,
        timestamp_ms=NOW_MS,
        reason="max_attempts",
        task_id="abc123",
        task="SendEmail",
        error_type="SMTPError",
        error="relay refused",
        attempts=4,
        redriven=True,
    )
    from rich.console import Console

    console = Console(width=140, color_system=None, record=True)
    console.print(render_dead_letters([letter]))
    text = console.export_text()

    assert "1 dead letters" in text
    assert "2:17" in text
    assert "SMTPError: relay refused" in text
    assert "yes" in text


def test_tier_partitions_that_never_held_a_record_are_left_out_of_the_table_only() -> None:
    subject = report(
        partitions=[
            PartitionLag("acme.emails", 0, 0, 0, None, 0),
            PartitionLag("acme.emails.retry.5s", 0, 0, 0, None, 0),
            PartitionLag("acme.emails.retry.5s", 1, 0, 7, 7, 0),
        ]
    )

    text = render_text(subject, width=140)

    assert "│ acme.emails          │         0 │" in text  # the main topic, even when empty
    assert "│ acme.emails.retry.5s │         1 │" in text
    assert "│ acme.emails.retry.5s │         0 │" not in text
    assert "1 empty tier partitions not shown" in text
    assert len(subject.as_dict()["partitions"]) == 3


def test_a_tier_the_settings_do_not_name_and_a_missing_one_are_marked_with_what_to_run() -> None:
    left_behind = TierBacklog(
        "acme.emails.retry.30s", "retry", timedelta(seconds=30), 7, NOW_MS - 1000, configured=False
    )
    subject = report(tiers=[*report().tiers, left_behind], missing_tiers=["acme.emails.retry.10s"])

    text = render_text(subject, width=400)
    data = subject.as_dict()

    (row,) = [line for line in text.splitlines() if "acme.emails.retry.30s" in line]
    assert "retry 30s" in row
    assert " 7 " in row
    assert "not in the settings: no worker with them reads it" in row
    (missing,) = [line for line in text.splitlines() if "acme.emails.retry.10s" in line]
    assert "missing: run `streamjobs topics ensure`" in missing
    assert "tier topics differ from these settings" in text
    assert data["missing_tiers"] == ["acme.emails.retry.10s"]
    assert data["tiers"][-1]["configured"] is False


def test_tiers_that_match_the_settings_add_no_caption() -> None:
    assert "differ" not in render_text(report(), width=400)
