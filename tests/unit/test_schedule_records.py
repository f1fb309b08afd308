"""Schedule records, the folded view of the schedules topic, fire task ids and declarations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from streamjobs import Task, TaskRegistry
from streamjobs.errors import ConfigError
from streamjobs.scheduler.book import Book
from streamjobs.scheduler.runner import declared_definition
from streamjobs.scheduler.state import (
    RECENT,
    Control,
    Definition,
    Fire,
    State,
    decode_definition,
    decode_state,
    definition_key,
    due_of,
    encode_control,
    encode_definition,
    encode_state,
    fire_task_id,
    pause_key,
    schedule_of,
    state_key,
    trigger_key,
    trigger_task_id,
)

DUE = datetime(2026, 12, 5, 2, 0, tzinfo=UTC)


class CleanupOldData(Task):
    days_old: int


def definition(**overrides: object) -> Definition:
    fields: dict[str, object] = {
        "name": "nightly-cleanup",
        "queue": "default",
        "task": "CleanupOldData",
        "args_json": '{"days_old": 100}',
        "created_at_ms": 1,
        "updated_at_ms": 2,
        "cron": "0 3 * * *",
        "timezone": "Europe/Berlin",
    }
    return Definition(**{**fields, **overrides})  # type: ignore[arg-type]


def test_fire_task_id_is_derived_from_queue_schedule_and_due_time_only() -> None:
    first = fire_task_id("default", "nightly-cleanup", DUE)
    again = fire_task_id("default", "nightly-cleanup", DUE.astimezone(timezone(timedelta(hours=1))))
    assert first == again == "schedule:default:nightly-cleanup:20261205T020000Z"
    assert fire_task_id("other", "nightly-cleanup", DUE) != first
    assert fire_task_id("default", "nightly-cleanup", DUE + timedelta(days=1)) != first


def test_the_schedule_and_due_time_can_be_read_back_from_a_fire_task_id() -> None:
    task_id = fire_task_id("default", "nightly-cleanup", DUE)
    assert schedule_of(task_id) == "nightly-cleanup"
    assert due_of(task_id) == DUE
    triggered = trigger_task_id("default", "nightly-cleanup", "abc123")
    assert schedule_of(triggered) == "nightly-cleanup"
    assert due_of(triggered) is None
    assert schedule_of("0123456789abcdef") is None


def test_definition_and_state_records_round_trip() -> None:
    original = definition(key="k", catch_up="all", catch_up_limit=5)
    assert decode_definition(encode_definition(original)) == original
    state = State("nightly-cleanup", "default", updated_at_ms=3)
    state = state.fired(Fire(1000, 1250, "t1"), owner="w1")
    state = state.fired(Fire(2000, 2001, "t2", triggered=True), owner="w1")
    decoded = decode_state(encode_state(state))
    assert decoded == state
    assert decoded.settled_due_ms == 1000  # a trigger does not settle a due time
    assert decoded.last_fire is not None
    assert decoded.last_fire.task_id == "t2"
    assert decoded.fires == 2


def test_state_keeps_only_the_most_recent_fires() -> None:
    state = State("s", "default", updated_at_ms=0)
    for n in range(RECENT + 5):
        state = state.fired(Fire(n, n, f"t{n}"), owner="w")
    assert len(state.recent) == RECENT
    assert state.recent[0].task_id == f"t{RECENT + 4}"


@pytest.mark.parametrize(
    "overrides",
    [{"name": "has space"}, {"name": "a/b"}, {"catch_up": "sometimes"}, {"cron": "nope"}],
)
def test_invalid_definitions_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        definition(**overrides)


def test_the_book_folds_definitions_states_pauses_and_triggers_with_tombstones() -> None:
    book = Book()
    book.apply(definition_key("default", "nightly-cleanup"), encode_definition(definition()))
    state = State("nightly-cleanup", "default", updated_at_ms=1, settled_due_ms=5)
    book.apply(state_key("default", "nightly-cleanup"), encode_state(state))
    control = Control("nightly-cleanup", "default", 10, paused=True)
    book.apply(pause_key("default", "nightly-cleanup"), encode_control(control))
    trigger = Control("nightly-cleanup", "default", 11)
    book.apply(trigger_key("default", "nightly-cleanup", "r1"), encode_control(trigger))
    book.apply(b"something/else", b"ignored")
    book.apply(state_key("default", "x"), b"not avro")  # logged and ignored
    entry = book.get("default", "nightly-cleanup")
    assert entry is not None
    assert entry.definition == definition()
    assert entry.state == state
    assert entry.paused
    assert list(entry.triggers) == ["r1"]
    book.apply(trigger_key("default", "nightly-cleanup", "r1"), None)
    book.apply(pause_key("default", "nightly-cleanup"), None)
    assert not entry.triggers
    assert not entry.paused
    book.apply(definition_key("default", "nightly-cleanup"), None)
    book.apply(state_key("default", "nightly-cleanup"), None)
    assert book.get("default", "nightly-cleanup") is None
    assert list(book.of_queue("default")) == []


def test_registry_schedule_declares_cron_and_interval_schedules() -> None:
    registry = TaskRegistry()
    registry.schedule(
        "nightly-cleanup",
        cron="0 3 * * *",
        timezone="Europe/Berlin",
        task=CleanupOldData(days_old=100),
    )
    registry.schedule("often", every=timedelta(minutes=5), task=CleanupOldData(days_old=1))
    nightly, often = registry.schedules
    published = declared_definition(nightly, "default", 7, None)
    assert published.cron == "0 3 * * *"
    assert published.timezone == "Europe/Berlin"
    assert published.args_json == '{"days_old":100}'
    assert published.source == "code"
    assert published.created_at_ms == 7
    assert declared_definition(often, "default", 7, None).every_s == 300
    # re-publishing keeps the creation time and counts as the same schedule
    again = declared_definition(nightly, "default", 99, published)
    assert again.created_at_ms == 7
    assert again.same_schedule(published)


def test_registry_schedule_refuses_ambiguous_or_duplicate_declarations() -> None:
    registry = TaskRegistry()
    with pytest.raises(ConfigError, match="exactly one"):
        registry.schedule("x", task=CleanupOldData(days_old=1))
    registry.schedule("x", every=timedelta(seconds=5), task=CleanupOldData(days_old=1))
    with pytest.raises(ConfigError, match="already"):
        registry.schedule("x", every=timedelta(seconds=5), task=CleanupOldData(days_old=1))
