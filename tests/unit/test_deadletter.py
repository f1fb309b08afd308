"""streamjobs.deadletter: dead-letter values keep what an operator needs, within a size limit."""

from __future__ import annotations

from typing import Any

import pytest

from streamjobs.client import Record
from streamjobs.codec import builtin
from streamjobs.deadletter import decode_dead_letter, encode_dead_letter
from streamjobs.envelope import Envelope

ENVELOPE = Envelope(
    task_id="t-42",
    task="SendEmail",
    queue="emails",
    payload=b"",
    payload_schema=bytes(8),
    submitted_at_ms=1_700_000_000_000,
    attempt=4,
    generation=2,
)


def _origin(value: bytes | None = b"\xc3\x01original", **changes: Any) -> Record:
    fields: dict[str, Any] = {
        "topic": "sj.emails.retry.5s",
        "partition": 3,
        "offset": 1234,
        "timestamp_ms": 1_700_000_000_000,
        "key": b"customer-7",
        "value": value,
        "headers": [("traceparent", b"00-abc-def-01"), ("empty", None)],
    }
    fields.update(changes)
    return Record(**fields)


def _encode(origin: Record, max_bytes: int = 100_000, **kwargs: Any) -> bytes:
    options: dict[str, Any] = {
        "reason": "max_attempts",
        "queue": "emails",
        "worker_id": "w-1",
        "now_ms": 1_700_000_009_000,
        "envelope": ENVELOPE,
    }
    options.update(kwargs)
    return encode_dead_letter(origin, max_bytes=max_bytes, **options)


def test_dead_letter_keeps_the_original_bytes_key_headers_and_coordinates() -> None:
    record = decode_dead_letter(_encode(_origin(), error=TimeoutError("smtp timed out")))
    assert record["original_value"] == b"\xc3\x01original"
    assert record["original_size"] == len(b"\xc3\x01original")
    assert record["truncated"] is False
    assert record["origin_key"] == b"customer-7"
    assert record["original_headers"] == [
        {"key": "traceparent", "value": b"00-abc-def-01"},
        {"key": "empty", "value": None},
    ]
    assert (
        record["origin_topic"],
        record["origin_partition"],
        record["origin_offset"],
        record["origin_timestamp_ms"],
    ) == ("sj.emails.retry.5s", 3, 1234, 1_700_000_000_000)


def test_dead_letter_carries_reason_error_task_and_attempts() -> None:
    record = decode_dead_letter(_encode(_origin(), error=TimeoutError("smtp timed out")))
    assert record["reason"] == "max_attempts"
    assert (record["error_type"], record["error"]) == ("TimeoutError", "smtp timed out")
    assert (record["task_id"], record["task"], record["attempts"]) == ("t-42", "SendEmail", 4)
    assert record["generation"] == 2  # a redrive submits generation 3
    assert (record["queue"], record["worker_id"]) == ("emails", "w-1")
    assert record["failed_at_ms"] == 1_700_000_009_000


def test_dead_letter_value_is_a_framed_dead_letter_record() -> None:
    value = _encode(_origin())
    assert value[:2] == b"\xc3\x01"
    assert value[2:10] == builtin("dead_letter").fingerprint


def test_oversized_value_is_truncated_and_flagged_never_dropped() -> None:
    original = bytes(range(256)) * 400  # 102,400 bytes
    value = _encode(_origin(original), max_bytes=20_000)
    record = decode_dead_letter(value)
    assert len(value) <= 20_000
    assert record["truncated"] is True
    assert record["original_size"] == len(original)
    kept = record["original_value"]
    assert kept is not None
    assert len(kept) > 10_000
    assert original.startswith(kept)


def test_value_that_fits_is_kept_whole() -> None:
    original = b"x" * 5_000
    record = decode_dead_letter(_encode(_origin(original), max_bytes=20_000))
    assert record["original_value"] == original
    assert record["truncated"] is False


def test_dead_letter_fits_max_bytes_even_with_long_error_big_key_and_many_headers() -> None:
    origin = _origin(
        b"v" * 200_000,
        key=b"k" * 4_000,
        headers=[(f"h{i}", b"") for i in range(800)],
    )
    value = _encode(origin, max_bytes=30_000, error=ValueError("\u00e9" * 20_000))
    record = decode_dead_letter(value)
    assert len(value) <= 30_000
    assert record["truncated"] is True
    assert record["original_size"] == 200_000
    assert len(record["error"]) == 8_000  # error text is capped, in characters
    assert record["origin_key"] == b"k" * 4_000
    assert len(record["original_headers"]) == 800


@pytest.mark.parametrize("max_bytes", [1024, 4096, 65_536])
def test_truncated_dead_letter_uses_the_whole_budget(max_bytes: int) -> None:
    value = _encode(_origin(b"z" * 100_000), max_bytes=max_bytes)
    assert max_bytes - 8 <= len(value) <= max_bytes


def test_undecodable_origin_has_no_task_id_and_zero_attempts() -> None:
    value = _encode(_origin(b"\x00garbage"), envelope=None, reason="decode_error")
    record = decode_dead_letter(value)
    assert record["task_id"] is None
    assert record["task"] is None
    assert (record["attempts"], record["generation"]) == (0, 0)
    assert record["reason"] == "decode_error"
    assert record["original_value"] == b"\x00garbage"


def test_record_without_value_keeps_none_and_size_zero() -> None:
    record = decode_dead_letter(_encode(_origin(None), envelope=None, reason="empty_value"))
    assert record["original_value"] is None
    assert record["original_size"] == 0
    assert record["truncated"] is False


def test_no_error_means_no_error_columns() -> None:
    record = decode_dead_letter(_encode(_origin(), reason="discarded"))
    assert (record["error_type"], record["error"]) == (None, None)


def test_error_text_that_is_not_utf8_is_replaced_not_fatal() -> None:
    # a file name read with surrogateescape and put into a message holds lone surrogates
    name = b"report-\xff.csv".decode("utf-8", "surrogateescape")
    record = decode_dead_letter(_encode(_origin(), error=ValueError(f"cannot parse {name}")))
    assert record["error_type"] == "ValueError"
    assert record["error"] == "cannot parse report-?.csv"


def test_exception_whose_str_raises_is_still_dead_lettered() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("broken __str__")

    record = decode_dead_letter(_encode(_origin(), error=Unprintable()))
    assert (record["error_type"], record["error"]) == ("Unprintable", "<unprintable Unprintable>")
