"""The index without a broker: record -> row mapping (rows), applying with offsets (store) and
the questions it answers (queries), on a temporary SQLite file."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from streamjobs.client import Record
from streamjobs.deadletter import encode_dead_letter
from streamjobs.envelope import Envelope
from streamjobs.index.follower import _applied
from streamjobs.index.queries import DeadLetterFilter, IndexReader, TaskFilter, fts_query
from streamjobs.index.rows import (
    UNDECODABLE,
    DeadLetterRow,
    Redriven,
    StatusRow,
    StatusSeen,
    TaskGone,
    dead_letter_changes,
    redriven_changes,
    status_changes,
)
from streamjobs.index.store import IndexStore
from streamjobs.models import TaskState
from streamjobs.status import encode_status

STATUS = "sj.status"


def _envelope(task_id: str = "t-1", **changes: Any) -> Envelope:
    envelope = Envelope(
        task_id=task_id,
        task="Charge",
        queue="default",
        key="customer-7",
        payload=b"",
        payload_schema=bytes(8),
        submitted_at_ms=1_700_000_000_000,
    )
    return replace(envelope, **changes)


def _record(value: bytes | None, key: bytes | None = b"t-1", offset: int = 0, **kw: Any) -> Record:
    fields: dict[str, Any] = {
        "topic": STATUS,
        "partition": 0,
        "offset": offset,
        "timestamp_ms": 1_700_000_001_000,
        "key": key,
        "value": value,
        "headers": [],
    }
    fields.update(kw)
    return Record(**fields)


def _status(task_id: str, state: TaskState, offset: int, **fields: Any) -> Record:
    attempt = fields.pop("attempt", 1)
    value = encode_status(_envelope(task_id, attempt=attempt), state, **fields)
    return _record(value, task_id.encode(), offset)


# -- rows ---------------------------------------------------------------------------------------


def test_a_status_record_maps_to_its_head_and_bytes_and_where_it_was_read() -> None:
    record = _status("t-1", TaskState.RUNNING, 41, worker_id="w-1")
    [seen] = status_changes(record)
    assert isinstance(seen, StatusSeen)
    assert (seen.task_id, seen.state, seen.attempt, seen.value) == (
        "t-1",
        "running",
        1,
        record.value,
    )
    assert (seen.src_partition, seen.src_offset) == (0, 41)
    row = seen.row()
    assert isinstance(row, StatusRow)
    assert (row.task_id, row.state, row.worker_id) == ("t-1", "running", "w-1")
    assert (row.src_partition, row.src_offset) == (0, 41)


def test_a_status_record_whose_body_does_not_decode_has_no_row_but_its_head() -> None:
    record = _status("t-1", TaskState.RUNNING, 41, worker_id="w-1")
    [seen] = status_changes(replace(record, value=(record.value or b"")[:-3]))
    assert isinstance(seen, StatusSeen)
    assert seen.state == "running"
    assert seen.row() is None


def test_a_status_tombstone_maps_to_the_task_leaving_the_index() -> None:
    assert status_changes(_record(None, b"t-9")) == [TaskGone("t-9")]


def test_an_undecodable_or_unkeyed_status_record_maps_to_nothing() -> None:
    assert status_changes(_record(b"\x00garbage")) == []
    assert status_changes(_record(b"x", key=None)) == []


def test_a_dead_letter_maps_to_a_row_with_reason_error_and_origin() -> None:
    origin = Record("sj.default", 2, 17, 1_700_000_000_000, b"k", b"\xc3\x01", [])
    value = encode_dead_letter(
        origin,
        reason="max_attempts",
        queue="default",
        worker_id="w-1",
        now_ms=1_700_000_009_000,
        max_bytes=100_000,
        envelope=_envelope(attempt=3),
        error=ConnectionError("gateway down"),
    )
    [row] = dead_letter_changes("default")(_record(value, offset=5, partition=1))
    assert isinstance(row, DeadLetterRow)
    assert (row.partition, row.offset, row.reason, row.task_id) == (1, 5, "max_attempts", "t-1")
    assert (row.error_type, row.error, row.attempts) == ("ConnectionError", "gateway down", 3)
    assert (row.origin_topic, row.origin_partition, row.origin_offset) == ("sj.default", 2, 17)


def test_an_undecodable_dead_letter_is_still_listed_under_its_own_reason() -> None:
    [row] = dead_letter_changes("default")(_record(b"\x00poison"))
    assert isinstance(row, DeadLetterRow)
    assert row.reason == UNDECODABLE


def test_a_redrive_ledger_entry_and_its_tombstone_map_to_redriven_flags() -> None:
    queued = encode_status(_envelope(), TaskState.QUEUED, note="redriven by ops")
    mapper = redriven_changes("default")
    assert mapper(_record(queued, b"2:17")) == [Redriven("default", 2, 17, True, "redriven by ops")]
    assert mapper(_record(None, b"2:17")) == [Redriven("default", 2, 17, False, None)]
    assert mapper(_record(None, b"not-a-ref")) == []


def test_user_text_becomes_a_quoted_fts_query_with_no_syntax_of_its_own() -> None:
    assert fts_query('gateway  "down" OR') == '"gateway" """down""" "OR"'


# -- store and queries --------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> IndexStore:
    opened = IndexStore(tmp_path / "index.db")
    yield opened
    opened.close()


def _apply(store: IndexStore, *records: Record, mapper: Any = status_changes) -> int:
    parts: dict[int, list[tuple[int, list[Any]]]] = {}
    for record in records:
        parts.setdefault(record.partition, []).append((record.offset, mapper(record)))
    return store.apply(_applied(records[0].topic, parts))


def test_the_latest_status_is_the_highest_version_and_history_keeps_every_record(
    store: IndexStore,
) -> None:
    _apply(
        store,
        _status("t-1", TaskState.QUEUED, 0),
        _status("t-1", TaskState.RUNNING, 1),
        _status("t-1", TaskState.RETRY_SCHEDULED, 2, error_type="ConnectionError", error="down"),
        _status("t-1", TaskState.RUNNING, 4, attempt=2),
        _status("t-1", TaskState.RUNNING, 3),  # a late zombie write of attempt 1
    )
    with IndexReader(store.path) as index:
        latest = index.task("t-1")
        assert latest is not None
        assert (latest.state, latest.attempt) == (TaskState.RUNNING, 2)
        assert len(index.history("t-1")) == 5
        assert index.state_counts() == {"running": 1}


def test_offsets_are_stored_with_the_rows_and_an_applied_record_is_never_applied_twice(
    store: IndexStore,
) -> None:
    first = _status("t-1", TaskState.QUEUED, 0)
    second = _status("t-1", TaskState.RUNNING, 1)
    assert _apply(store, first, second) == 2
    assert store.offsets(STATUS) == {0: 2}
    assert _apply(store, second, _status("t-1", TaskState.SUCCEEDED, 2, result="1")) == 1
    with IndexReader(store.path) as index:
        assert len(index.history("t-1")) == 3
        buckets = index.outcomes(None, 1_699_999_000_000, 2_000_000_000_000, bucket_ms=10**12)
        assert sum(b.counts.get("succeeded", 0) for b in buckets) == 1


def test_a_tombstone_removes_the_task_its_history_and_its_count(store: IndexStore) -> None:
    _apply(store, _status("t-1", TaskState.QUEUED, 0), _status("t-2", TaskState.QUEUED, 1))
    _apply(store, _record(None, b"t-1", offset=2))
    with IndexReader(store.path) as index:
        assert index.task("t-1") is None
        assert index.history("t-1") == []
        assert index.state_counts() == {"queued": 1}


def test_search_filters_by_state_type_key_time_and_error_text(store: IndexStore) -> None:
    _apply(
        store,
        _status("ok", TaskState.SUCCEEDED, 0, result="1"),
        _status("bad", TaskState.DEAD_LETTERED, 1, error_type="ConnectionError",
                error="payment gateway down for order 7", reason="max_attempts"),
        _status("slow", TaskState.RETRY_SCHEDULED, 2, error_type="TimeoutError", error="slow"),
    )  # fmt: skip
    with IndexReader(store.path) as index:

        def ids(**where: Any) -> set[str]:
            return {v.task_id for v in index.search(TaskFilter(**where))}

        assert ids() == {"ok", "bad", "slow"}
        assert ids(state="dead_lettered") == {"bad"}
        assert ids(text="gateway down") == {"bad"}
        assert ids(text="ConnectionError") == {"bad"}
        assert ids(text="absent words") == set()
        assert ids(task="Charge", key="customer-7", queue="default") == {"ok", "bad", "slow"}
        assert ids(since_ms=2_000_000_000_000) == set()
        assert [v.task_id for v in index.search(TaskFilter(), limit=1, offset=1)] != []


def test_dead_letters_filter_by_reason_and_join_their_redrive(store: IndexStore) -> None:
    mapper = dead_letter_changes("default")
    _apply(store, _record(b"\x00poison", offset=3, topic="sj.default.dlq"), mapper=mapper)
    queued = encode_status(_envelope(), TaskState.QUEUED, note="by ops")
    ledger = _record(queued, b"0:3", topic="sj.default.dlq.redriven")
    _apply(store, ledger, mapper=redriven_changes("default"))
    with IndexReader(store.path) as index:
        [entry] = index.dead_letters(DeadLetterFilter("default", reason=UNDECODABLE))
        assert (entry.ref, entry.redriven, entry.redrive_note) == ("0:3", True, "by ops")
        assert index.dead_letters(DeadLetterFilter("default", reason="timeout")) == []
        assert index.dead_letter_reasons("default") == {UNDECODABLE: 1}
