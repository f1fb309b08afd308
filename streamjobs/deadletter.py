"""Dead-letter records: what an operator needs to understand and re-drive a failed record.

Owns the layout of ``<prefix>.<queue>.dlq`` values (see ``schemas/dead_letter.avsc``): the
original bytes (truncated with a flag when too large, never dropped), coordinates, reason code,
error and attempts. Does not decide that something is dead (:mod:`streamjobs.retry`) or produce.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streamjobs.codec import builtin

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
    budget = max_bytes - 2048 - sum(len(k) + len(v or b"") for k, v in origin.headers)
    truncated = value is not None and size > budget
    if truncated and value is not None:
        value = value[: max(0, budget)]
    return CODEC.encode(
        {
            "reason": reason,
            "error_type": type(error).__name__ if error is not None else None,
            "error": str(error)[:_ERROR_CHARS] if error is not None else None,
            "task_id": envelope["task_id"] if envelope else None,
            "task": envelope["task"] if envelope else None,
            "queue": queue,
            "attempts": envelope["attempt"] if envelope else 0,
            "worker_id": worker_id,
            "failed_at_ms": now_ms,
            "origin_topic": origin.topic,
            "origin_partition": origin.partition,
            "origin_offset": origin.offset,
            "origin_timestamp_ms": origin.timestamp_ms,
            "origin_key": origin.key,
            "original_value": value,
            "original_size": size,
            "truncated": truncated,
            "original_headers": headers,
        }
    )


def decode_dead_letter(value: bytes) -> dict[str, Any]:
    return CODEC.decode(value)
