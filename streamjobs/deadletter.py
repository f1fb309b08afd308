"""Dead-letter records: what an operator needs to understand and re-drive a failed record.

Owns the layout of ``<prefix>.<queue>.dlq`` values (see ``schemas/dead_letter.avsc``): the
original bytes (truncated with a flag when too large, never dropped), coordinates, reason code,
error and attempts. Does not decide that something is dead (:mod:`streamjobs.retry`) or produce.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streamjobs.codec import builtin
from streamjobs.errors import error_text

CODEC = builtin("dead_letter")
_ERROR_CHARS = 8000


@dataclass(frozen=True, slots=True)
class Origin:
    """Where the dead record was read from."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


def encode_dead_letter(
    origin: Origin,
    *,
    reason: str,
    queue: str,
    worker_id: str,
    now_ms: int,
    max_bytes: int,
    envelope: dict[str, Any] | None = None,
    error: BaseException | None = None,
) -> bytes:
    """The dead-letter value for ``origin``; the original value is cut to fit ``max_bytes``."""
    value = origin.value
    size = len(value) if value is not None else 0
    headers = [{"key": k, "value": v} for k, v in origin.headers]
    record: dict[str, Any] = {
        "reason": reason,
        "error_type": type(error).__name__ if error is not None else None,
        "error": error_text(error, _ERROR_CHARS) if error is not None else None,
        "task_id": envelope["task_id"] if envelope else None,
        "task": envelope["task"] if envelope else None,
        "queue": queue,
        "attempts": envelope["attempt"] if envelope else 0,
        "generation": envelope["generation"] if envelope else 0,
        "worker_id": worker_id,
        "failed_at_ms": now_ms,
        "origin_topic": origin.topic,
        "origin_partition": origin.partition,
        "origin_offset": origin.offset,
        "origin_timestamp_ms": origin.timestamp_ms,
        "origin_key": origin.key,
        "original_value": value,
        "original_size": size,
        "truncated": False,
        "original_headers": headers,
    }
    encoded = CODEC.encode(record)
    if value is None or len(encoded) <= max_bytes:
        return encoded
    # Measured, not estimated: the error text, key and headers vary. Everything but the value's
    # bytes stays; a shorter value never needs a longer length prefix, so the result fits.
    keep = max(0, max_bytes - (len(encoded) - size))
    return CODEC.encode({**record, "original_value": value[:keep], "truncated": True})


def decode_dead_letter(value: bytes) -> dict[str, Any]:
    return CODEC.decode(value)
