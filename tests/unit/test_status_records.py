"""Status records (streamjobs.status encode/decode, StatusView) and their ordering (models)."""

from __future__ import annotations

import io
import itertools
import random
from dataclasses import replace
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from pydantic import ValidationError

from streamjobs.codec import MAGIC, builtin
from streamjobs.envelope import Envelope
from streamjobs.errors import DecodeError, EncodeError
from streamjobs.models import Task, TaskState, status_version
from streamjobs.status import (
    AttemptStatuses,
    StatusView,
    SubmittedStatuses,
    decode_status,
    encode_status,
    status_values,
)


def _envelope(**changes: Any) -> Envelope:
    envelope = Envelope(
        task_id="3f0c9a",
        task="SendEmail",
        queue="emails",
        key="customer-7",
        payload=b"\x02\x03",
        payload_schema=bytes(8),
        submitted_at_ms=1_700_000_000_000,
    )
    return replace(envelope, **changes)


# --- status versions (models) ------------------------------------------------------------------


def test_status_version_strictly_increases_through_a_retried_task_and_its_redrive() -> None:
    lifecycle = [
        (0, 1, TaskState.QUEUED),
        (0, 1, TaskState.RUNNING),
        (0, 1, TaskState.RETRY_SCHEDULED),
        (0, 2, TaskState.RUNNING),
        (0, 2, TaskState.RETRY_SCHEDULED),
        (0, 3, TaskState.RUNNING),
        (0, 3, TaskState.DEAD_LETTERED),
        (1, 1, TaskState.QUEUED),  # re-driven: a new generation starts again at attempt 1
        (1, 1, TaskState.RUNNING),
        (1, 1, TaskState.SUCCEEDED),
    ]
    versions = [status_version(*step) for step in lifecycle]
    assert all(a < b for a, b in itertools.pairwise(versions)), versions


def test_scheduled_and_queued_share_a_rank_below_running() -> None:
    assert status_version(0, 1, TaskState.SCHEDULED) == status_version(0, 1, TaskState.QUEUED)
    assert status_version(0, 1, TaskState.SCHEDULED) < status_version(0, 1, TaskState.RUNNING)


def test_a_late_write_of_an_older_attempt_never_outranks_a_newer_attempt() -> None:
    newest = status_version(0, 2, TaskState.RUNNING)
    for state in TaskState:
        assert status_version(0, 1, state) < newest


def test_huge_attempt_numbers_never_spill_into_the_generation() -> None:
    assert status_version(0, 10**9, TaskState.SUCCEEDED) < status_version(1, 1, TaskState.QUEUED)
    assert status_version(0, -5, TaskState.RUNNING) == status_version(0, 0, TaskState.RUNNING)


def test_only_succeeded_dead_lettered_and_cancelled_are_final() -> None:
    final = {s for s in TaskState if s.final}
    assert final == {TaskState.SUCCEEDED, TaskState.DEAD_LETTERED, TaskState.CANCELLED}


def test_task_states_are_lowercase_strings_on_the_wire() -> None:
    assert [s.value for s in TaskState] == [
        "queued",
        "scheduled",
        "running",
        "retry_scheduled",
        "succeeded",
        "dead_lettered",
        "cancelled",
    ]
    assert TaskState("running") is TaskState.RUNNING
    assert f"{TaskState.SUCCEEDED}" == "succeeded"


def test_task_name_defaults_to_the_class_name_and_can_be_overridden() -> None:
    class Resize(Task):
        width: int

    class Legacy(Task):
        task_name = "images.resize.v0"

    assert Resize.task_name == "Resize"
    assert Legacy.task_name == "images.resize.v0"
    assert "task_name" not in Resize.model_fields


def test_tasks_are_frozen_and_refuse_unknown_arguments() -> None:
    class Resize(Task):
        width: int

    task = Resize(width=3)
    with pytest.raises(ValidationError):
        task.width = 4  # type: ignore[misc]
    with pytest.raises(ValidationError, match="height"):
        Resize(width=3, height=4)  # type: ignore[call-arg]


# --- status records ----------------------------------------------------------------------------


def test_status_record_round_trips_with_its_version_and_optional_columns() -> None:
    envelope = _envelope(attempt=2, generation=1, not_before_ms=1_700_000_005_000)
    value = encode_status(
        envelope,
        TaskState.SUCCEEDED,
        result='{"sent": 3}',
        topic="sj.emails.retry.5s",
        partition=4,
        offset=99,
        worker_id="w-1",
        trace_id="0af7651916cd43dd8448eb211c80319c",
        note="re-driven by ops from sj.emails.dlq 0@17",
    )
    view = decode_status(value)
    assert isinstance(view, StatusView)
    assert (view.task_id, view.task, view.queue, view.key) == (
        "3f0c9a",
        "SendEmail",
        "emails",
        "customer-7",
    )
    assert view.state is TaskState.SUCCEEDED
    assert view.version == status_version(1, 2, TaskState.SUCCEEDED)
    assert (view.attempt, view.generation) == (2, 1)
    assert (view.topic, view.partition, view.offset) == ("sj.emails.retry.5s", 4, 99)
    assert (view.worker_id, view.trace_id) == ("w-1", "0af7651916cd43dd8448eb211c80319c")
    assert (view.not_before_ms, view.submitted_at_ms) == (1_700_000_005_000, 1_700_000_000_000)
    assert view.updated_at_ms > 1_600_000_000_000
    assert view.result_json == '{"sent": 3}'
    assert view.note == "re-driven by ops from sj.emails.dlq 0@17"


def test_status_value_is_a_framed_task_status_record() -> None:
    value = encode_status(_envelope(), TaskState.QUEUED)
    assert value[:2] == b"\xc3\x01"
    assert value[2:10] == builtin("task_status").fingerprint


def test_result_decodes_the_json_of_the_handler_return_value() -> None:
    value = encode_status(_envelope(), TaskState.SUCCEEDED, result='{"ids": [1, 2], "ok": true}')
    assert decode_status(value).result == {"ids": [1, 2], "ok": True}


def test_result_is_none_when_no_result_was_written() -> None:
    assert decode_status(encode_status(_envelope(), TaskState.RUNNING)).result is None


def test_dead_lettered_status_carries_reason_and_error() -> None:
    value = encode_status(
        _envelope(),
        TaskState.DEAD_LETTERED,
        reason="max_attempts",
        error_type="TimeoutError",
        error="smtp timed out",
    )
    view = decode_status(value)
    assert (view.reason, view.error_type, view.error) == (
        "max_attempts",
        "TimeoutError",
        "smtp timed out",
    )
    assert view.state.final


def test_as_dict_has_the_state_string_and_the_decoded_result_instead_of_its_json() -> None:
    view = decode_status(encode_status(_envelope(), TaskState.SUCCEEDED, result="[1, 2]"))
    out = view.as_dict()
    assert out["state"] == "succeeded"
    assert out["result"] == [1, 2]
    assert "result_json" not in out
    assert out["task_id"] == "3f0c9a"
    assert set(out) == (set(StatusView.__dataclass_fields__) - {"result_json"}) | {"result"}


def test_unknown_state_string_is_rejected_as_a_decode_error() -> None:
    record = builtin("task_status").decode(encode_status(_envelope(), TaskState.QUEUED))
    record["state"] = "pending"
    with pytest.raises(DecodeError, match="unknown state 'pending'") as excinfo:
        decode_status(builtin("task_status").encode(record))
    assert excinfo.value.reason == "decode_error"


def test_a_record_of_another_type_is_not_read_as_a_status() -> None:
    other = builtin("task_schema").encode(
        {"task": "t", "fingerprint": "00" * 8, "schema": "{}", "registered_at_ms": 1}
    )
    with pytest.raises(DecodeError) as excinfo:
        decode_status(other)
    assert excinfo.value.reason == "wrong_record_type"


# --- the straight-line status encoders must write exactly what fastavro writes ----------------

_STATUS = builtin("task_status")
_TEXTS = [None, "", "caf\u00e9 \U0001f600", "x" * 300]


def _fastavro_framed(record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    schemaless_writer(buffer, parse_schema(_STATUS.schema), record)
    return MAGIC + _STATUS.fingerprint + buffer.getvalue()


def _fastavro_decoded(value: bytes) -> dict[str, Any]:
    record: dict[str, Any] = schemaless_reader(
        io.BytesIO(value[10:]), parse_schema(_STATUS.schema), None
    )
    return record


def _random_columns(rng: random.Random) -> dict[str, Any]:
    def long() -> int | None:
        return rng.choice([None, 0, -1, 64, -65, 2**40, 2**63 - 1, -(2**63)])

    return {
        "key": rng.choice(_TEXTS),
        "result": rng.choice(_TEXTS),
        "error_type": rng.choice(_TEXTS),
        "error": rng.choice(_TEXTS),
        "reason": rng.choice(_TEXTS),
        "topic": rng.choice(_TEXTS),
        "partition": rng.choice([None, 0, 5, 2**31 - 1]),
        "offset": long(),
        "worker_id": rng.choice(_TEXTS),
        "trace_id": rng.choice(_TEXTS),
        "not_before_ms": long(),
        "submitted_at_ms": long(),
        "note": rng.choice(_TEXTS),
    }


@pytest.mark.parametrize("state", list(TaskState))
def test_encoded_status_bytes_are_fastavros_for_random_columns(state: TaskState) -> None:
    rng = random.Random(state.value)
    for _ in range(200):
        envelope = _envelope(attempt=rng.choice([1, 2, 2**31 - 1]), generation=rng.randrange(9))
        columns = _random_columns(rng)
        value = encode_status(envelope, state, **columns)
        decoded = _fastavro_decoded(value)
        assert _fastavro_framed(decoded) == value
        expected = {
            "task_id": envelope.task_id,
            "task": envelope.task,
            "queue": envelope.queue,
            "state": state.value,
            "version": status_version(envelope.generation, envelope.attempt, state),
            "attempt": envelope.attempt,
            "generation": envelope.generation,
            "updated_at_ms": decoded["updated_at_ms"],
            **columns,
        }
        assert decoded == expected


def test_unset_key_and_times_come_from_the_envelope() -> None:
    envelope = _envelope(not_before_ms=1_700_000_001_000)
    view = decode_status(encode_status(envelope, TaskState.QUEUED))
    assert (view.key, view.not_before_ms, view.submitted_at_ms) == (
        "customer-7",
        1_700_000_001_000,
        1_700_000_000_000,
    )


def test_a_column_the_status_record_does_not_have_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="colour"):
        encode_status(_envelope(), TaskState.QUEUED, colour="red")


def test_a_column_of_the_wrong_type_fails_with_reason_encode_error() -> None:
    with pytest.raises(EncodeError) as excinfo:
        encode_status(_envelope(), TaskState.QUEUED, partition="three")
    assert excinfo.value.reason == "encode_error"


@pytest.mark.parametrize("state", [TaskState.RUNNING, TaskState.SUCCEEDED])
@pytest.mark.parametrize("result", [None, '{"sent": true}'])
def test_a_runs_pre_encoded_statuses_equal_encode_status(
    state: TaskState, result: str | None
) -> None:
    rng = random.Random(f"{state}{result}")
    for _ in range(100):
        envelope = _envelope(key=rng.choice(_TEXTS), attempt=rng.randrange(1, 9))
        where = {
            "topic": "sj.emails",
            "partition": rng.randrange(12),
            "offset": rng.randrange(2**40),
            "worker_id": "w-1",
            "trace_id": rng.choice([None, "ab" * 16]),
        }
        fast = _fastavro_decoded(AttemptStatuses(envelope, where).encode(state, result))
        general = _fastavro_decoded(encode_status(envelope, state, result=result, **where))
        assert abs(fast.pop("updated_at_ms") - general.pop("updated_at_ms")) < 1000
        assert fast == general


@pytest.mark.parametrize("state", [TaskState.QUEUED, TaskState.SCHEDULED])
def test_a_new_tasks_prebuilt_status_record_is_the_general_encoders_bytes(
    state: TaskState,
) -> None:
    rng = random.Random(f"submitted-{state.value}")
    statuses = SubmittedStatuses("SendEmail", "emails", state, "sj.emails.delay.60s")
    for _ in range(200):
        envelope = _envelope(
            task_id=rng.choice(["a" * 32, "é-ü", ""]),
            key=rng.choice([None, "", "customer-7", "ключ"]),
            not_before_ms=rng.choice([None, 0, 1_700_000_060_000]),
            submitted_at_ms=rng.choice([0, 1_700_000_000_000, 2**62]),
            attempt=rng.choice([1, 1, 1, 2]),
            generation=rng.choice([0, 0, 0, 3]),
        )
        fast = _fastavro_decoded(statuses.encode(envelope))
        general = _fastavro_decoded(encode_status(envelope, state, topic="sj.emails.delay.60s"))
        assert abs(fast.pop("updated_at_ms") - general.pop("updated_at_ms")) < 1000
        assert fast == general


def test_a_new_tasks_prebuilt_status_record_refuses_what_the_general_encoder_refuses() -> None:
    statuses = SubmittedStatuses("SendEmail", "emails", TaskState.QUEUED, "sj.emails")
    with pytest.raises(EncodeError):
        statuses.encode(_envelope(submitted_at_ms=2**64))


@pytest.mark.parametrize("state", list(TaskState))
def test_the_straight_line_status_reader_agrees_with_fastavro_for_random_columns(
    state: TaskState,
) -> None:
    rng = random.Random(f"read-{state.value}")
    for _ in range(200):
        envelope = _envelope(attempt=rng.choice([1, 2, 2**31 - 1]), generation=rng.randrange(9))
        value = encode_status(envelope, state, **_random_columns(rng))
        by_fastavro = _fastavro_decoded(value)
        values = status_values(value)
        assert values == [by_fastavro[name] for name in by_fastavro]
        view = decode_status(value)
        assert (view.state, view.note, view.result_json) == (
            state,
            by_fastavro["note"],
            by_fastavro["result"],
        )


def test_the_straight_line_status_reader_refuses_what_fastavro_refuses() -> None:
    value = encode_status(_envelope(), TaskState.SUCCEEDED, result='"ok"')
    broken = [
        value[:-1],  # truncated
        value + b"\x00",  # a trailing byte
        value[:10] + b"\x7f" + value[11:],  # a task id longer than the record
    ]
    for bad in broken:
        with pytest.raises(DecodeError):
            status_values(bad)
    unknown_state = encode_status(_envelope(), TaskState.QUEUED).replace(b"queued", b"queuex")
    with pytest.raises(DecodeError, match="unknown state"):
        status_values(unknown_state)
