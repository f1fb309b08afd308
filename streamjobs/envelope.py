"""The task envelope: one task as it travels on the task, retry-tier and delay-tier topics.

Owns :class:`Envelope`, the frozen record every part of streamjobs hands around (a derived
envelope, the next attempt, a replay or a redrive, is a ``dataclasses.replace`` of one), and its
wire form, ``schemas/task_envelope.avsc`` in single-object encoding: :func:`encode_envelope` and
:func:`decode_envelope`. Does not interpret the payload (the task type's own schema does,
:mod:`streamjobs.tasktypes`) or touch Kafka; fastavro stays in :mod:`streamjobs.codec`, whose
primitives this module composes.

The worker decodes an envelope per task, so both directions are straight-line code for this one
schema: an import-time check holds the field order to the ``.avsc`` and unit tests hold the bytes
to fastavro's. The fast reader accepts only plainly valid input and must consume every byte;
anything else goes to the general codec, which raises its usual DecodeError (``unknown_schema``,
``wrong_record_type``, ``trailing_bytes``, ``decode_error``) or, for odd but valid Avro (an
over-long varint), decodes it exactly as fastavro does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from streamjobs.client import Position
from streamjobs.codec import (
    HEADER_SIZE,
    MAGIC,
    NOT_NULL,
    NULL,
    builtin,
    misfit_path,
    optional_int,
    optional_long,
    optional_string,
    write_bytes,
    write_int,
    write_long,
    write_string,
)
from streamjobs.errors import EncodeError

_CODEC = builtin("task_envelope")
_HEADER = MAGIC + _CODEC.fingerprint
_FINGERPRINT_SIZE = 8


@dataclass(frozen=True, slots=True)
class Envelope:
    """One task on the wire. Field names are the wire names; times are Unix milliseconds.

    ``task_id`` is stable across attempts, retries, redrives and replays; ``task`` names the task
    type (handler and payload schema); ``key`` orders tasks (None: the task id is the record key);
    ``payload`` holds the arguments in the task type's own Avro schema, whose CRC-64-AVRO
    fingerprint is ``payload_schema``; ``attempt`` starts at 1; ``max_attempts`` overrides the
    queue's policy; ``generation`` grows with each redrive or replay and orders status versions;
    ``not_before_ms`` is the due time on a tier; ``origin`` is where the task sat before a retry,
    hop, redrive or replay.
    """

    # required fields first (the reader builds envelopes positionally, in this order)
    task_id: str
    task: str
    queue: str
    payload: bytes
    payload_schema: bytes
    submitted_at_ms: int
    key: str | None = None
    attempt: int = 1
    max_attempts: int | None = None
    generation: int = 0
    not_before_ms: int | None = None
    origin: Position | None = None

    @property
    def record_key(self) -> str:
        """The Kafka record key: the ordering key, else the task id."""
        return self.key or self.task_id

    def as_dict(self) -> dict[str, Any]:
        """The wire record's fields in schema order (``origin`` a dict), for JSON and display."""
        fields = {name: getattr(self, name) for name in _WIRE_ORDER}
        if self.origin is not None:
            fields["origin"] = asdict(self.origin)
        return fields


# -- writing -----------------------------------------------------------------------------------

_WIRE_ORDER = (
    "task_id", "task", "queue", "key", "payload", "payload_schema", "attempt", "max_attempts",
    "generation", "not_before_ms", "submitted_at_ms", "origin",
)  # fmt: skip
_ORIGIN_ORDER = ("topic", "partition", "offset", "timestamp_ms")


def _check_schema() -> None:
    """The straight-line code below follows ``task_envelope.avsc``; refuse to load if not."""
    fields = _CODEC.schema["fields"]
    origin = next(f for f in fields if f["name"] == "origin")["type"][1]
    if tuple(f["name"] for f in fields) != _WIRE_ORDER or (
        tuple(f["name"] for f in origin["fields"]) != _ORIGIN_ORDER
    ):
        raise ImportError("task_envelope.avsc and streamjobs.envelope disagree on the fields")


_check_schema()


def encode_envelope(envelope: Envelope) -> bytes:
    """The single-object encoding of ``envelope``: ``C3 01``, the schema fingerprint, the body.

    EncodeError (reason ``encode_error``, naming the field) when a field does not fit its Avro
    type.
    """
    e = envelope
    try:
        return b"".join(
            (
                _HEADER,
                write_string(e.task_id),
                write_string(e.task),
                write_string(e.queue),
                optional_string(e.key),
                write_bytes(e.payload),
                _fingerprint(e.payload_schema),
                write_int(e.attempt),
                optional_int(e.max_attempts),
                write_int(e.generation),
                optional_long(e.not_before_ms),
                write_long(e.submitted_at_ms),
                _position(e.origin),
            )
        )
    except (TypeError, ValueError, AttributeError, OverflowError) as exc:
        field = _misfit(envelope)
        where = f" (field {field})" if field else ""
        raise EncodeError(f"cannot encode TaskEnvelope{where}: {exc}", path=field) from exc


def _misfit(envelope: Envelope) -> str | None:
    """The first envelope field whose value does not fit the schema, for the error."""
    for field in _CODEC.schema["fields"]:
        name = str(field["name"])
        value = getattr(envelope, name, None)
        if name != "origin" and misfit_path(field["type"], value) is not None:
            return name
    return None


def _fingerprint(data: bytes) -> bytes:
    if not isinstance(data, bytes) or len(data) != _FINGERPRINT_SIZE:
        raise ValueError(f"expected {_FINGERPRINT_SIZE} bytes for the payload_schema fingerprint")
    return data


def _position(origin: Position | None) -> bytes:
    if origin is None:
        return NULL
    return b"".join(
        (
            NOT_NULL,
            write_string(origin.topic),
            write_int(origin.partition),
            write_long(origin.offset),
            write_long(origin.timestamp_ms),
        )
    )


# -- reading -----------------------------------------------------------------------------------


def decode_envelope(data: bytes) -> Envelope:
    """The envelope framed in ``data``, which it must fill exactly; DecodeError otherwise."""
    if data[:HEADER_SIZE] == _HEADER:
        try:
            return _read(data)
        except (IndexError, ValueError):  # past the end, a bad length or branch, not UTF-8...
            pass
    # not ours or not plain: the general codec names the problem (or decodes odd valid Avro)
    return _from_record(_CODEC.decode(data))


def _from_record(record: dict[str, Any]) -> Envelope:
    origin = record["origin"]
    position = None if origin is None else Position(**origin)
    return Envelope(**{**record, "origin": position})


def _read(data: bytes) -> Envelope:
    """The fast path: plain Avro of exactly this schema, every byte consumed."""
    task_id, pos = _string(data, HEADER_SIZE)
    task, pos = _string(data, pos)
    queue, pos = _string(data, pos)
    key, pos = _optional_string(data, pos)
    payload, pos = _bytes(data, pos)
    payload_schema, pos = data[pos : pos + _FINGERPRINT_SIZE], pos + _FINGERPRINT_SIZE
    attempt, pos = _long(data, pos)
    max_attempts, pos = _optional_long(data, pos)
    generation, pos = _long(data, pos)
    not_before_ms, pos = _optional_long(data, pos)
    submitted_at_ms, pos = _long(data, pos)
    origin, pos = _optional_position(data, pos)
    if pos != len(data):
        raise ValueError("trailing bytes")
    # positional: keywords would cost about 0.5 us more per envelope, i.e. per task
    return Envelope(
        task_id,
        task,
        queue,
        payload,
        payload_schema,
        submitted_at_ms,
        key,
        attempt,
        max_attempts,
        generation,
        not_before_ms,
        origin,
    )


def _long(data: bytes, pos: int) -> tuple[int, int]:
    """The zigzag varint at ``pos`` and the position after it."""
    byte = data[pos]
    if byte < 0x80:
        return (byte >> 1) ^ -(byte & 1), pos + 1
    z = shift = 0
    while byte >= 0x80:
        z |= (byte & 0x7F) << shift
        shift += 7
        pos += 1
        byte = data[pos]
    z |= byte << shift
    if z >> 64:
        raise ValueError("varint beyond 64 bits")  # fastavro wraps it: let it decide
    return (z >> 1) ^ -(z & 1), pos + 1


# the length of a bytes or string is under 64 (one byte) in most envelopes: that case is inlined


def _bytes(data: bytes, pos: int) -> tuple[bytes, int]:
    size = data[pos]
    if size < 0x80:
        size, pos = (size >> 1) ^ -(size & 1), pos + 1
    else:
        size, pos = _long(data, pos)
    end = pos + size
    if size < 0 or end > len(data):
        raise ValueError("bad length")
    return data[pos:end], end


def _string(data: bytes, pos: int) -> tuple[str, int]:
    size = data[pos]
    if size < 0x80:
        size, pos = (size >> 1) ^ -(size & 1), pos + 1
    else:
        size, pos = _long(data, pos)
    end = pos + size
    if size < 0 or end > len(data):
        raise ValueError("bad length")
    return data[pos:end].decode(), end


def _optional_string(data: bytes, pos: int) -> tuple[str | None, int]:
    if data[pos] == 0:
        return None, pos + 1
    if data[pos] != 2:
        raise ValueError("not a plain union branch")
    return _string(data, pos + 1)


def _optional_long(data: bytes, pos: int) -> tuple[int | None, int]:
    if data[pos] == 0:
        return None, pos + 1
    if data[pos] != 2:
        raise ValueError("not a plain union branch")
    return _long(data, pos + 1)


def _optional_position(data: bytes, pos: int) -> tuple[Position | None, int]:
    if data[pos] == 0:
        return None, pos + 1
    if data[pos] != 2:
        raise ValueError("not a plain union branch")
    topic, pos = _string(data, pos + 1)
    partition, pos = _long(data, pos)
    offset, pos = _long(data, pos)
    timestamp_ms, pos = _long(data, pos)
    return Position(topic, partition, offset, timestamp_ms), pos
