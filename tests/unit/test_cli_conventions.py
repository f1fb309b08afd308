"""The command line's conventions without a broker: flags without value placeholders, defaults
shown, durations as written, times in UTC with ages, and the pure pieces behind ``status``,
``topics verify``/``inspect`` (tier drift), ``trace`` (links) and encode errors."""

from __future__ import annotations

import json
import os
import re
from typing import Any

import pytest
from pydantic import Field
from typer.testing import CliRunner

from streamjobs import Settings, Task
from streamjobs.cli import app
from streamjobs.cli.output import age, field_lines, moment, status_lines
from streamjobs.codec import SchemaCodec, misfit_path
from streamjobs.errors import BadInput, EncodeError
from streamjobs.models import TaskState
from streamjobs.ops.traceview import linked_trace_ids
from streamjobs.status import StatusView
from streamjobs.tasktypes import TaskType
from streamjobs.topics import compare_tiers


def _invoke(*args: str, **env: str) -> Any:
    clean: dict[str, str | None] = {k: None for k in os.environ if k.startswith("STREAMJOBS_")}
    return CliRunner().invoke(app, list(args), env={**clean, **env}, catch_exceptions=False)


HELPS = [
    ["--help"],
    ["status", "--help"],
    ["consume", "--help"],
    ["replay", "--help"],
    ["dlq", "redrive", "--help"],
    ["purge", "--help"],
    ["trace", "--help"],
    ["topics", "verify", "--help"],
]


@pytest.mark.parametrize("args", HELPS, ids=lambda a: " ".join(a))
def test_help_shows_flags_without_a_value_placeholder(args: list[str]) -> None:
    shown = _invoke(*args)

    assert shown.exit_code == 0, shown.output
    assert "<bool>" not in shown.output
    assert re.search(r"--help\s+Show this message", shown.output)


def test_help_shows_the_defaults_that_come_from_settings() -> None:
    trace = _invoke("trace", "--help", COLUMNS="300").output  # one line per option
    consume = _invoke("consume", "--help", COLUMNS="300").output

    assert "STREAMJOBS_JAEGER_QUERY_URL" in trace
    assert "http://127.0.0.1:16686" in trace
    assert "120 with no terminal" in trace
    assert "$STREAMJOBS_CONCURRENCY or 1" in consume


def test_status_help_lists_its_exit_codes() -> None:
    shown = _invoke("status", "--help", COLUMNS="300").output

    assert "1 dead-lettered" in shown


def test_settings_prints_tiers_and_durations_as_users_write_them() -> None:
    shown = _invoke("settings", STREAMJOBS_RETRY_TIERS="1s,250ms", STREAMJOBS_SHUTDOWN_GRACE="90s")

    printed = json.loads(shown.stdout)
    assert printed["retry_tiers"] == ["250ms", "1s"]
    assert printed["delay_tiers"] == ["1s", "10s", "1m", "10m", "1h"]
    assert printed["shutdown_grace"] == "90s"
    assert "PT" not in shown.stdout
    # what it prints reads back as the same settings
    assert Settings(**printed) == Settings(retry_tiers="1s,250ms", shutdown_grace="90s")


@pytest.mark.parametrize(
    ("seconds", "said"),
    [
        (5, "5 s ago"),
        (150, "2 min ago"),
        (7300, "2 h ago"),
        (-90, "in 1 min"),
        (3 * 86400, "3 d ago"),
    ],
)
def test_an_age_is_rounded_to_its_largest_unit(seconds: float, said: str) -> None:
    assert age(seconds) == said


def test_a_moment_is_iso_8601_utc_with_its_age() -> None:
    assert moment(1_764_906_588_000, 1_764_906_708_000) == "2025-12-05T03:49:48Z (2 min ago)"
    assert moment(None, 0) == "-"


def test_field_lines_show_epoch_millisecond_fields_as_utc_times_and_skip_empty_ones() -> None:
    lines = field_lines(
        {"ref": "0:4", "failed_at_ms": 1_764_906_588_000, "error": None, "headers": {}},
        now_ms=1_764_906_598_000,
        width=10,
    )

    assert lines == ["       ref: 0:4", " failed_at: 2025-12-05T03:49:48Z (10 s ago)"]


def _view(**overrides: Any) -> StatusView:
    fields: dict[str, Any] = dict.fromkeys(StatusView.__dataclass_fields__)
    fields.update(
        task_id="t1", task="Greet", queue="default", state=TaskState.DEAD_LETTERED, version=99,
        attempt=3, generation=0, updated_at_ms=1_764_906_588_000, reason="max_attempts",
        topic="p.default.retry.5s", partition=2, offset=41,
    )  # fmt: skip
    fields.update(overrides)
    return StatusView(**fields)


def test_status_lines_of_a_scheduled_task_name_the_tier_it_waits_in_and_when_it_is_due() -> None:
    scheduled = _view(
        state=TaskState.SCHEDULED,
        topic="p.default.delay.1m",
        partition=None,
        offset=None,
        not_before_ms=1_764_906_588_000 + 300_000,
    )

    text = "\n".join(status_lines(scheduled, now_ms=1_764_906_588_000))

    assert text.endswith("record: p.default.delay.1m")
    assert "due: 2025-12-05T03:54:48Z (in 5 min)" in text


def test_status_lines_show_times_in_utc_with_ages_and_leave_the_version_to_json() -> None:
    lines = status_lines(_view(), now_ms=1_764_906_708_000)

    text = "\n".join(lines)
    assert "updated: 2025-12-05T03:49:48Z (2 min ago)" in text
    assert "record: p.default.retry.5s[2]@41" in text
    assert "version" not in text
    assert "1764906588000" not in text
    assert "state: dead_lettered" in text


def test_tier_topics_on_the_cluster_are_compared_with_the_settings() -> None:
    settings = Settings(topic_prefix="p", retry_tiers="1s,3s", delay_tiers="1m")
    on_cluster = [
        "p.default", "p.default.retry.5s", "p.default.retry.1s", "p.default.delay.1m",
        "p.default.dlq", "p.other.retry.9s", "p.default.retry.5s.extra",
    ]  # fmt: skip

    drift = compare_tiers(settings, on_cluster)

    assert drift.extra == ["p.default.retry.5s"]
    assert drift.missing == ["p.default.retry.3s"]
    wanted = ["p.default.retry.1s", "p.default.retry.3s", "p.default.delay.1m"]
    assert not compare_tiers(settings, wanted)


def test_tier_differences_are_listed_retry_first_then_by_delay() -> None:
    settings = Settings(topic_prefix="p", retry_tiers="5s,30s,5m,30m", delay_tiers="1m")
    on_cluster = ["p.default.delay.90s", "p.default.retry.3s", "p.default.retry.1s"]

    drift = compare_tiers(settings, on_cluster)

    assert drift.extra == ["p.default.retry.1s", "p.default.retry.3s", "p.default.delay.90s"]
    assert drift.missing == [f"p.default.retry.{d}" for d in ("5s", "30s", "5m", "30m")] + [
        "p.default.delay.1m"
    ]


def test_a_queue_named_like_a_tier_is_not_taken_for_one() -> None:
    settings = Settings(topic_prefix="p", queue="q", retry_tiers="1s", delay_tiers="1m")

    drift = compare_tiers(settings, ["p.q.retry.1s", "p.q.delay.1m", "p.q.retry.dlq"])

    assert not drift


def test_linked_traces_are_the_other_traces_a_span_references() -> None:
    trace = {
        "traceID": "new",
        "spans": [
            {"traceID": "new", "references": [{"refType": "CHILD_OF", "traceID": "new"}]},
            {"traceID": "new", "references": [{"refType": "FOLLOWS_FROM", "traceID": "old"}]},
            {"traceID": "new", "references": [{"refType": "FOLLOWS_FROM", "traceID": "old"}]},
        ],
    }

    assert linked_trace_ids(trace) == ["old"]


class Item(Task):
    sku: str
    qty: int


class Order(Task):
    customer: str
    items: list[Item]
    tags: dict[str, int] = Field(default_factory=dict)
    note: str | None = None


@pytest.mark.parametrize(
    ("bad", "path"),
    [
        ({"customer": 5}, "customer"),
        (
            {"items": [Item(sku="a", qty=1), Item.model_construct(sku="b", qty="many")]},
            "items[1].qty",
        ),
        ({"tags": {"k": "v"}}, "tags['k']"),
        ({"note": 3}, "note"),
    ],
)
def test_encoding_a_task_that_bypassed_validation_is_an_encode_error_naming_the_field(
    bad: dict[str, Any], path: str
) -> None:
    order = Order.model_construct(**{"customer": "ada", "items": [], "tags": {}, **bad})

    with pytest.raises(EncodeError) as excinfo:
        TaskType(Order, "Order").encode(order)

    assert excinfo.value.path == path
    assert excinfo.value.reason == "encode_error"
    assert f"field {path}" in str(excinfo.value)
    assert isinstance(excinfo.value, BadInput)


def test_a_value_that_fits_has_no_misfit_path() -> None:
    codec = SchemaCodec(TaskType(Order, "Order").codec.schema)
    record = Order(customer="a", items=[Item(sku="x", qty=2)]).model_dump(mode="json")

    assert misfit_path(codec.schema, record) is None
    assert codec.encode_body(record)
