"""The index without a broker: record -> row mapping (rows), applying with offsets (store) and
the questions it answers (queries), on a temporary SQLite file."""

from __future__ import annotations

import sqlite3
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
    ScheduleRecord,
    StatusRow,
    StatusSeen,
    TaskGone,
    WorkerGone,
    WorkerRow,
    dead_letter_changes,
    pack_history,
    redriven_changes,
    schedule_changes,
    status_changes,
    unpack_history,
    worker_changes,
)
from streamjobs.index.store import IndexStore
from streamjobs.metrics.heartbeat import Liveness, WorkerReport, encode_report
from streamjobs.models import TaskState
from streamjobs.scheduler.state import (
    Control,
    Definition,
    definition_key,
    encode_control,
    encode_definition,
    pause_key,
)
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


# -- workers and schedules ----------------------------------------------------------------------


def _report(worker_id: str, reported_at_ms: int, queue: str = "default") -> bytes:
    return encode_report(
        WorkerReport(
            worker_id=worker_id, host="h-1", pid=7, version="0", queue=queue, group="g",
            concurrency=2, started_at_ms=reported_at_ms - 60_000, reported_at_ms=reported_at_ms,
            interval_ms=1000, partitions=1, in_flight=0, parked=0, started=0, succeeded=0,
            retried=0, dead_lettered=0,
        )
    )  # fmt: skip


def test_a_heartbeat_maps_to_a_worker_row_and_its_tombstone_to_the_worker_leaving() -> None:
    value = _report("w-1", 1_700_000_000_000)
    [row] = worker_changes(_record(value, b"w-1", topic="sj.workers"))
    assert row == WorkerRow("w-1", "default", "h-1", 1_700_000_000_000, 1000, value)
    assert worker_changes(_record(None, b"w-1")) == [WorkerGone("w-1")]
    assert worker_changes(_record(b"\x00garbage", b"w-1")) == []
    assert worker_changes(_record(value, key=None)) == []


def _definition(name: str, queue: str = "default") -> Definition:
    return Definition(
        name=name, queue=queue, task="Charge", args_json="{}", created_at_ms=1_700_000_000_000,
        updated_at_ms=1_700_000_000_000, every_s=60,
    )  # fmt: skip


def test_a_schedule_record_maps_to_its_key_parts_and_value_and_unknown_keys_to_nothing() -> None:
    value = encode_definition(_definition("nightly"))
    key = definition_key("default", "nightly")
    assert schedule_changes(_record(value, key)) == [
        ScheduleRecord(key, "default", "nightly", "definition", value)
    ]
    assert schedule_changes(_record(None, key)) == [
        ScheduleRecord(key, "default", "nightly", "definition", None)
    ]
    assert schedule_changes(_record(value, b"something/else")) == []
    assert schedule_changes(_record(value, key=None)) == []


def test_workers_are_judged_live_or_lost_at_read_time_and_a_tombstone_removes_one(
    store: IndexStore,
) -> None:
    topic = "sj.workers"
    _apply(
        store,
        _record(_report("w-old", 1_000_000), b"w-old", 0, topic=topic),
        _record(_report("w-new", 1_009_000), b"w-new", 1, topic=topic),
        _record(_report("w-old", 1_010_000), b"w-old", 2, topic=topic),  # its newer heartbeat
        mapper=worker_changes,
    )
    with IndexReader(store.path) as index:
        views = {v.report.worker_id: v.state for v in index.workers(now_ms=1_012_000)}
        assert views == {"w-old": Liveness.LIVE, "w-new": Liveness.LIVE}
        later = {v.report.worker_id: v.state for v in index.workers(now_ms=1_012_500)}
        assert later == {"w-old": Liveness.LIVE, "w-new": Liveness.LOST}
        # a killed worker's report leaves the topic after a day (no tombstone): the list too
        assert index.workers(now_ms=1_010_001 + 86_400_000) == []
    _apply(store, _record(None, b"w-old", 3, topic=topic), mapper=worker_changes)
    with IndexReader(store.path) as index:
        assert [v.report.worker_id for v in index.workers(now_ms=1_012_000)] == ["w-new"]


def test_schedules_are_folded_from_their_records_per_queue_and_tombstones_remove_them(
    store: IndexStore,
) -> None:
    topic = "sj.schedules"
    nightly, hourly = _definition("nightly"), _definition("hourly")
    _apply(
        store,
        _record(encode_definition(nightly), definition_key("default", "nightly"), 0, topic=topic),
        _record(encode_definition(hourly), definition_key("default", "hourly"), 1, topic=topic),
        _record(encode_definition(_definition("x", "other")), definition_key("other", "x"), 2,
                topic=topic),
        _record(encode_control(Control("nightly", "default", 1_700_000_000_500, paused=True)),
                pause_key("default", "nightly"), 3, topic=topic),
        mapper=schedule_changes,
    )  # fmt: skip
    with IndexReader(store.path) as index:
        found = {s.name: s.paused for s in index.schedules("default")}
        assert found == {"hourly": False, "nightly": True}
    gone = _record(None, definition_key("default", "hourly"), 4, topic=topic)
    _apply(store, gone, mapper=schedule_changes)
    with IndexReader(store.path) as index:
        assert [s.name for s in index.schedules("default")] == ["nightly"]
        assert [s.name for s in index.schedules("other")] == ["x"]


# -- latest rows, history entries, schema version ---------------------------------------------


def test_a_task_that_failed_then_succeeded_leaves_the_error_search_and_moves_its_count(
    store: IndexStore,
) -> None:
    failed = _status("t-1", TaskState.RETRY_SCHEDULED, 0, error_type="IOError", error="disk full")
    _apply(store, failed)
    with IndexReader(store.path) as index:
        assert [v.task_id for v in index.search(TaskFilter(text="disk"))] == ["t-1"]
        assert index.state_counts() == {"retry_scheduled": 1}
    _apply(store, _status("t-1", TaskState.SUCCEEDED, 1, attempt=2, result="1"))
    with IndexReader(store.path) as index:
        assert index.search(TaskFilter(text="disk")) == []
        assert index.state_counts() == {"succeeded": 1}
    _apply(store, _status("t-1", TaskState.RUNNING, 2, attempt=1))  # a late zombie write
    with IndexReader(store.path) as index:
        latest = index.task("t-1")
        assert latest is not None
        assert latest.state is TaskState.SUCCEEDED
        assert index.state_counts() == {"succeeded": 1}
        assert len(index.history("t-1")) == 3


def test_a_history_entry_packs_records_with_where_they_were_read_and_unpacks_them() -> None:
    seen = [
        s
        for offset in (3, 9)
        for s in status_changes(_status("t-1", TaskState.RUNNING, offset))
        if isinstance(s, StatusSeen)
    ]
    entry = pack_history(seen)
    assert unpack_history(entry) == [(0, 3, seen[0].value), (0, 9, seen[1].value)]
    for cut in (entry[:-1], entry[: -len(seen[1].value) - 3]):
        with pytest.raises(ValueError, match="cut short"):
            unpack_history(cut)


def test_an_index_file_of_another_schema_version_is_emptied_to_be_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE offsets (topic TEXT, partition INTEGER, next_offset INTEGER);"
        "INSERT INTO offsets VALUES ('sj.status', 0, 99);"
        "CREATE TABLE history (task_id, version, value); PRAGMA user_version = 1;"
    )
    old.close()
    store = IndexStore(path)
    try:
        assert store.offsets("sj.status") == {}  # read again from the start of each topic
        assert _apply(store, _status("t-1", TaskState.QUEUED, 0)) == 1
    finally:
        store.close()
    assert IndexStore(path).offsets(STATUS) == {0: 1}  # this version's file is kept as it is
