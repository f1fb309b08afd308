"""Dead-letter records: what an operator needs to understand and re-drive a failed record.

Owns the layout of ``<prefix>.<queue>.dlq`` values (see ``schemas/dead_letter.avsc``): the
original bytes (truncated with a flag when too large, never dropped), coordinates, reason code,
error and attempts. Does not decide that something is dead (:mod:`streamjobs.retry`) or produce.
"""

from __future__ import annotations

from typing import Any

from streamjobs.client import Record
from streamjobs.codec import builtin
from streamjobs.envelope import Envelope
from streamjobs.errors import error_text

CODEC = builtin("dead_letter")
_ERROR_CHARS = 8000


def encode_dead_letter(
    dead: Record,
    *,
    reason: str,
    queue: str,
    worker_id: str,
    now_ms: int,
    max_bytes: int,
    envelope: Envelope | None = None,
    error: BaseException | None = None,
) -> bytes:
    """The dead-letter value for the record ``dead``; its value is cut to fit ``max_bytes``."""
    value = dead.value
    size = len(value) if value is not None else 0
    headers = [{"key": k, "value": v} for k, v in dead.headers]
    letter: dict[str, Any] = {
        "reason": reason,
        "error_type": type(error).__name__ if error is not None else None,
        "error": error_text(error, _ERROR_CHARS) if error is not None else None,
        "task_id": envelope.task_id if envelope is not None else None,
        "task": envelope.task if envelope is not None else None,
        "queue": queue,
        "attempts": envelope.attempt if envelope is not None else 0,
        "generation": envelope.generation if envelope is not None else 0,
        "worker_id": worker_id,
        "failed_at_ms": now_ms,
        "origin_topic": dead.topic,
        "origin_partition": dead.partition,
        "origin_offset": dead.offset,
        "origin_timestamp_ms": dead.timestamp_ms,
        "origin_key": dead.key,
        "original_value": value,
        "original_size": size,
        "truncated": False,
        "original_headers": headers,
    }
    encoded = CODEC.encode(letter)
    if value is None or len(encoded) <= max_bytes:
        return encoded
    # Measured, not estimated: the error text, key and headers vary. Everything but the value's
    # bytes stays; a shorter value never needs a longer length prefix, so the result fits.
    keep = max(0, max_bytes - (len(encoded) - size))
    return CODEC.encode({**letter, "original_value": value[:keep], "truncated": True})


def decode_dead_letter(value: bytes) -> dict[str, Any]:
    return CODEC.decode(value)
