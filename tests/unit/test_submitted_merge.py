"""The submitted topic beside the status topic, without a broker: the merge rule readers apply
(a status-topic record always wins, whatever the arrival order; an id with only a submitted
record answers ``queued``), the index keeping the same rule, and the one-round-trip write
(both records produced before any report is awaited; a failed task record raises and takes its
submitted record back)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from streamjobs import Producer, Settings, SubmitError, Task
from streamjobs.client import Delivery, Record
from streamjobs.envelope import Envelope
from streamjobs.index.follower import _applied
from streamjobs.index.queries import IndexReader
from streamjobs.index.rows import (
    SUBMITTED_VERSION,
    StatusSeen,
    SubmittedGone,
    status_changes,
    submitted_changes,
)
from streamjobs.index.store import IndexStore
from streamjobs.models import TaskState
from streamjobs.status import StatusView, decode_status, encode_status, merged, newer
from streamjobs.topics import queue_topics

STATUS, SUBMITTED = "sj.status", "sj.submitted"


def _envelope(task_id: str = "t-1", **changes: Any) -> Envelope:
    envelope = Envelope(
        task_id=task_id,
        task="Charge",
        queue="default",
        key=None,
        payload=b"",
        payload_schema=bytes(8),
        submitted_at_ms=1_700_000_000_000,
    )
    return replace(envelope, **changes)


def _record(topic: str, state: TaskState | None, offset: int = 0, task_id: str = "t-1") -> Record:
    value = None if state is None else encode_status(_envelope(task_id), state)
    return Record(topic, 0, offset, 1_700_000_001_000, task_id.encode(), value, [])


def _answer(records: list[Record]) -> StatusView | None:
    """What a reader answers after ``records`` (in this order), as ``statusreads.latest``
    folds them."""
    best: dict[str, StatusView | None] = {STATUS: None, SUBMITTED: None}
    for record in records:
        best[record.topic] = newer(best[record.topic], record)
    return merged(best[STATUS], best[SUBMITTED])


def _view(state: TaskState) -> StatusView:
    return decode_status(encode_status(_envelope(), state))


# -- the merge rule -----------------------------------------------------------------------------


def test_a_status_topic_record_wins_over_a_submitted_record() -> None:
    running = _view(TaskState.RUNNING)
    assert merged(running, _view(TaskState.QUEUED)) is running
    # whatever either says: the status topic is where a worker or a replay speaks
    replayed = _view(TaskState.QUEUED)
    assert merged(replayed, _view(TaskState.SCHEDULED)) is replayed


def test_an_id_with_only_a_submitted_record_answers_queued_and_an_unknown_id_nothing() -> None:
    view = merged(None, _view(TaskState.QUEUED))
    assert view is not None
    assert view.state is TaskState.QUEUED
    assert merged(None, None) is None


@pytest.mark.parametrize(
    "order", list(itertools.permutations(["submitted", "running", "succeeded"]))
)
def test_a_worker_outcome_is_never_regressed_by_a_submitted_record_in_any_arrival_order(
    order: tuple[str, ...],
) -> None:
    made = {
        "submitted": _record(SUBMITTED, TaskState.QUEUED),
        "running": _record(STATUS, TaskState.RUNNING),
        "succeeded": _record(STATUS, TaskState.SUCCEEDED),
    }
    view = _answer([made[name] for name in order])
    assert view is not None
    assert view.state is TaskState.SUCCEEDED


def test_a_withdrawn_submit_answers_nothing_and_a_purge_of_both_topics_forgets_the_id() -> None:
    withdrawn = [_record(SUBMITTED, TaskState.QUEUED), _record(SUBMITTED, None, 1)]
    assert _answer(withdrawn) is None
    purged = [
        _record(SUBMITTED, TaskState.QUEUED),
        _record(STATUS, TaskState.SUCCEEDED),
        _record(SUBMITTED, None, 1),
        _record(STATUS, None, 1),
    ]
    assert _answer(purged) is None


# -- the index keeps the same rule --------------------------------------------------------------


def _apply(store: IndexStore, *records: Record) -> None:
    mapper = {STATUS: status_changes, SUBMITTED: submitted_changes}[records[0].topic]
    parts = {0: [(r.offset, mapper(r)) for r in records]}
    store.apply(_applied(records[0].topic, parts))


@pytest.fixture
def index(tmp_path: Path) -> Iterator[tuple[IndexStore, Path]]:
    path = tmp_path / "index.db"
    store = IndexStore(path)
    yield store, path
    store.close()


def _state(path: Path, task_id: str = "t-1") -> str | None:
    with IndexReader(path) as reader:
        view = reader.task(task_id)
    return None if view is None else view.state.value


def test_a_submitted_record_maps_to_a_row_ranked_below_every_status() -> None:
    [seen] = submitted_changes(_record(SUBMITTED, TaskState.QUEUED, 5))
    assert isinstance(seen, StatusSeen)
    assert (seen.state, seen.version, seen.src_offset) == ("queued", SUBMITTED_VERSION, 5)
    row = seen.row()
    assert row is not None
    assert row.version == SUBMITTED_VERSION  # the stored row keeps the rank it was seen with
    assert submitted_changes(_record(SUBMITTED, None)) == [SubmittedGone("t-1")]


@pytest.mark.parametrize("submitted_first", [True, False])
def test_the_index_never_downgrades_a_status_row_by_a_submitted_row(
    index: tuple[IndexStore, Path], submitted_first: bool
) -> None:
    store, path = index
    submitted = _record(SUBMITTED, TaskState.QUEUED)
    done = _record(STATUS, TaskState.SUCCEEDED)
    for record in [submitted, done] if submitted_first else [done, submitted]:
        _apply(store, record)
    assert _state(path) == "succeeded"
    # a late withdrawal removes only a row that no status has replaced
    _apply(store, _record(SUBMITTED, None, 1))
    assert _state(path) == "succeeded"


def test_the_index_shows_a_submitted_task_as_queued_until_its_withdrawal(
    index: tuple[IndexStore, Path],
) -> None:
    store, path = index
    _apply(store, _record(SUBMITTED, TaskState.QUEUED))
    assert _state(path) == "queued"
    _apply(store, _record(SUBMITTED, None, 1))
    assert _state(path) is None


# -- the one-round-trip write ------------------------------------------------------------------


class Charge(Task):
    order: int


class RecordingClient:
    """Stands in for the librdkafka producer: keeps reports until a poll, fails one topic."""

    def __init__(self, failing: str | None = None) -> None:
        self.failing = failing
        self.log: list[tuple[str, str, bytes | None]] = []  # (event, topic, value)
        self._unacked: list[tuple[str, bytes | None, Any]] = []

    def produce(self, topic: str, value: bytes | None, key: bytes | None = None, **kw: Any) -> bool:
        self.log.append(("produce", topic, value))
        if kw.get("on_delivery") is not None:
            self._unacked.append((topic, value, kw["on_delivery"]))
        return True

    def poll(self, timeout: float) -> int:
        reports, self._unacked = self._unacked, []
        for topic, _value, on_delivery in reports:
            self.log.append(("report", topic, None))
            failed = topic == self.failing
            on_delivery(Delivery("_MSG_TIMED_OUT: fake" if failed else None, 0, 3))
        return len(reports)

    def flush(self, timeout: float) -> int:
        self.poll(0)
        return 0


def _producer(monkeypatch: pytest.MonkeyPatch, client: RecordingClient) -> Producer:
    monkeypatch.setattr("streamjobs.client.new_producer", lambda *_a, **_k: client)
    return Producer(Settings(topic_prefix="sj", queue="default"))


def test_submit_produces_the_task_then_the_submitted_record_before_awaiting_either_report(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = RecordingClient()
    with _producer(monkeypatch, client) as producer:
        handle = producer.submit(Charge(order=1))  # the schema record goes first, confirmed
        first_task = len(client.log) - 4
        names = queue_topics(producer.settings)

    events = [(event, topic) for event, topic, _ in client.log[first_task:]]
    assert events[:2] == [("produce", names.main), ("produce", names.submitted)]
    assert sorted(events[2:]) == [("report", names.main), ("report", names.submitted)]
    assert (handle.partition, handle.offset) == (0, 3)
    queued = decode_status(client.log[first_task + 1][2] or b"")
    assert (queued.task_id, queued.state) == (handle.task_id, TaskState.QUEUED)


def test_a_failed_task_record_raises_and_tombstones_its_submitted_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = queue_topics(Settings(topic_prefix="sj", queue="default"))
    client = RecordingClient(failing=names.main)
    with _producer(monkeypatch, client) as producer, pytest.raises(SubmitError) as raised:
        producer.submit(Charge(order=1))

    produced = [(topic, value) for event, topic, value in client.log if event == "produce"]
    assert produced[-1] == (names.submitted, None)  # the queued fact taken back
    assert raised.value.task_id is not None
    assert "not confirmed by Kafka" in str(raised.value)


def test_a_confirmed_task_whose_submitted_record_failed_is_returned_and_its_record_written_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = queue_topics(Settings(topic_prefix="sj", queue="default"))
    client = RecordingClient(failing=names.submitted)
    with _producer(monkeypatch, client) as producer:
        handle = producer.submit(Charge(order=1))  # Kafka has the task: it will run

    produced = [(topic, value) for event, topic, value in client.log if event == "produce"]
    submitted = [value for topic, value in produced if topic == names.submitted]
    assert len(submitted) == 2
    assert submitted[0] == submitted[1]
    assert decode_status(submitted[1] or b"").task_id == handle.task_id
