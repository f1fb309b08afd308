"""A leader's pass: every fire owed now, across schedules, in one batch of records whose states
are applied only after the batch is written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from streamjobs.scheduler.book import Book, Entry
from streamjobs.scheduler.fires import CannotFire, FireRecords
from streamjobs.scheduler.rounds import Round
from streamjobs.scheduler.state import (
    Control,
    Definition,
    Fire,
    State,
    decode_state,
    definition_key,
    encode_control,
    encode_definition,
    encode_state,
    pause_key,
    state_key,
    trigger_key,
)
from streamjobs.scheduler.transaction import Out

NOW = datetime(2026, 12, 5, 12, 0, 0, 200_000, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)


class FakeBuilder:
    """Builds a task record and a status record per fire, as FireBuilder does, without Kafka."""

    def __init__(self, failing: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.failing = failing

    def build(self, definition: Definition, state: State, fire: Fire, *, owner: str) -> Any:
        if definition.name in self.failing:
            raise CannotFire("no model")
        records = [Out("status", fire.task_id.encode(), b"queued"), Out("main", b"k", b"task")]
        return FireRecords(records, state.fired(fire, owner=owner))


def book_with(*names: str, every_s: int = 1, created_ms: int = NOW_MS - 1000) -> Book:
    book = Book()
    for name in names:
        definition = Definition(
            name=name,
            queue="q",
            task="Tick",
            args_json="{}",
            created_at_ms=created_ms,
            updated_at_ms=created_ms,
            every_s=every_s,
        )
        book.apply(definition_key("q", name), encode_definition(definition))
    return book


def entry(book: Book, name: str) -> Entry:
    found = book.get("q", name)
    assert found is not None
    return found


def run(book: Book, builder: Any = None) -> Round:
    batch = Round(builder or FakeBuilder(), "w1", "schedules")
    for item in list(book.of_queue("q")):
        batch.add(item, NOW, NOW_MS)
    return batch


def test_schedules_due_at_the_same_second_fire_in_one_batch_with_one_state_record_each() -> None:
    book = book_with("a", "b", "c")
    batch = run(book)
    tasks = [r for r in batch.records if r.topic == "main"]
    states = [r for r in batch.records if r.topic == "schedules"]
    assert len(tasks) == 3
    assert sorted(r.key for r in states) == sorted(state_key("q", n) for n in "abc")


def test_states_change_only_when_the_batch_is_settled_after_its_write() -> None:
    book = book_with("a")
    batch = run(book)
    assert entry(book, "a").state is None  # an aborted write leaves the fire owed
    batch.settle()
    state = entry(book, "a").state
    assert state is not None
    assert state.settled_due_ms == NOW_MS - 200  # the due second
    assert run(book).empty  # nothing owed any more


def test_the_written_state_record_is_the_one_held_after_settling() -> None:
    book = book_with("a", created_ms=NOW_MS - 5200)  # several due times missed: latest fires
    batch = run(book)
    [record] = [r for r in batch.records if r.topic == "schedules"]
    batch.settle()
    assert record.value is not None
    assert decode_state(record.value) == entry(book, "a").state
    assert entry(book, "a").state.skipped == 4  # type: ignore[union-attr]


def test_a_paused_schedule_owes_nothing_but_a_trigger_still_fires_and_is_tombstoned() -> None:
    book = book_with("a")
    book.apply(pause_key("q", "a"), encode_control(Control("a", "q", NOW_MS - 5000, paused=True)))
    book.apply(trigger_key("q", "a", "r1"), encode_control(Control("a", "q", NOW_MS - 10)))
    batch = run(book)
    assert Out("schedules", trigger_key("q", "a", "r1"), None) in batch.records
    assert [r.key for r in batch.records if r.topic == "status"] == [b"schedule:q:a:trigger-r1"]
    batch.settle()
    assert entry(book, "a").triggers == {}
    state = entry(book, "a").state
    assert state is not None
    assert state.recent[0].triggered


def test_a_removed_schedule_has_its_state_deleted_and_its_triggers_lapse() -> None:
    book = Book()
    book.apply(state_key("q", "gone"), encode_state(State("gone", "q", updated_at_ms=1)))
    book.apply(trigger_key("q", "gone", "r1"), encode_control(Control("gone", "q", 1)))
    batch = run(book)
    assert Out("schedules", state_key("q", "gone"), None) in batch.records
    assert Out("schedules", trigger_key("q", "gone", "r1"), None) in batch.records
    assert not [r for r in batch.records if r.topic == "main"]
    batch.settle()
    assert book.get("q", "gone") is None or entry(book, "gone").state is None


def test_a_definition_that_cannot_fire_settles_its_due_time_with_the_error() -> None:
    book = book_with("bad", "good")
    batch = run(book, FakeBuilder(failing={"bad"}))
    batch.settle()
    bad = entry(book, "bad").state
    assert bad is not None
    assert bad.error is not None
    assert "no model" in bad.error
    assert bad.skipped == 1
    assert entry(book, "good").state.fires == 1  # type: ignore[union-attr]
    assert run(book, FakeBuilder(failing={"bad"})).empty


def test_catch_up_all_fires_every_missed_due_time_in_one_batch() -> None:
    book = Book()
    definition = Definition(
        name="all",
        queue="q",
        task="Tick",
        args_json="{}",
        created_at_ms=NOW_MS - 4200,
        updated_at_ms=0,
        every_s=1,
        catch_up="all",
    )
    book.apply(definition_key("q", "all"), encode_definition(definition))
    batch = run(book)
    ids = [r.key for r in batch.records if r.topic == "status"]
    assert len(ids) == 4
    batch.settle()
    assert entry(book, "all").state.fires == 4  # type: ignore[union-attr]
    assert timedelta(milliseconds=entry(book, "all").state.recent[0].lateness_ms) < timedelta(1)  # type: ignore[union-attr]
