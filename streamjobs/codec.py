"""Avro on the wire: single-object framing, exact decoding, schema resolution. fastavro's home.

Owns the encoding of every value streamjobs writes (task envelopes, payloads, statuses, dead
letters, schema records) and the rules that make decoding safe: a value must start with the
``C3 01`` marker and the fingerprint of a schema we know, must decode to exactly its length, and
a payload is decoded with its writer schema resolved against the reader's. Does not choose
schemas for task types (:mod:`streamjobs.schemas`) or know about Kafka.

fastavro, tried with hostile input, returns garbage for a record of the same shape written with
another schema and ignores trailing bytes; hence the fingerprint check and the length check.
"""

from __future__ import annotations

import io
import json
from functools import cache
from importlib import resources
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from streamjobs.errors import DecodeError, EncodeError, UnsafeSchema

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8

Record = dict[str, Any]


def schema_fingerprint(schema: dict[str, Any] | str) -> bytes:
    """CRC-64-AVRO of the parsing canonical form, little endian, as in single-object encoding."""
    parsed = parse_schema(schema, _write_hint=False)
    # fastavro already returns the hex of the little-endian bytes (as Java's SchemaNormalization)
    digest = _fastavro_fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO")
    return bytes.fromhex(digest)


def parse(schema: dict[str, Any] | str) -> Any:
    """Validate and parse an Avro schema (dict or JSON text); raises UnsafeSchema if invalid."""
    try:
        loaded = json.loads(schema) if isinstance(schema, str) else schema
        # keep fastavro's "already parsed" marker, or every write parses the schema again
        return parse_schema(loaded)
    except Exception as exc:  # fastavro raises several unrelated types for bad schemas
        raise UnsafeSchema(f"invalid Avro schema: {exc}", reason="invalid_schema") from exc


class SchemaCodec:
    """Encode and decode records of one Avro schema, exactly and with resolution."""

    __slots__ = ("_flat", "fingerprint", "name", "parsed", "schema")

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self.parsed = parse(schema)
        self.fingerprint = schema_fingerprint(schema)
        self.name = str(schema.get("name", "?"))
        self._flat = _compile_flat_writer(schema)

    def encode_body(self, record: Record) -> bytes:
        """Avro binary without framing (task payloads: the envelope carries the fingerprint)."""
        if self._flat is not None:
            try:
                encoded: bytes = self._flat(record)
                return encoded
            except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
                raise self._encode_error(record, exc) from exc
        buffer = io.BytesIO()
        try:
            schemaless_writer(buffer, self.parsed, record)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise self._encode_error(record, exc) from exc
        return buffer.getvalue()

    def _encode_error(self, record: Record, cause: Exception) -> EncodeError:
        path = misfit_path(self.schema, record)
        where = f" field {path}" if path else ""
        return EncodeError(f"cannot encode {self.name}{where}: {cause}", path=path)

    def encode(self, record: Record) -> bytes:
        """Single-object encoding: ``C3 01``, the 8-byte fingerprint, then the Avro body."""
        return MAGIC + self.fingerprint + self.encode_body(record)

    def decode(self, data: bytes) -> Record:
        """Decode a framed value of exactly this schema; anything else raises DecodeError."""
        if len(data) < HEADER_SIZE or data[:2] != MAGIC:
            raise DecodeError(f"not a single-object Avro value ({len(data)} bytes)")
        if data[2:HEADER_SIZE] != self.fingerprint:
            found = data[2:HEADER_SIZE]
            other = next((c.name for c in _builtins() if c.fingerprint == found), None)
            if other is not None:
                raise DecodeError(
                    f"expected a {self.name} record, got a {other} record",
                    reason="wrong_record_type",
                )
            raise DecodeError(
                f"expected a {self.name} record, got unknown fingerprint {found.hex()}",
                reason="unknown_schema",
            )
        return decode_body(self.parsed, data, HEADER_SIZE)

    def decode_body(self, data: bytes, writer: Any = None) -> Record:
        """Decode an unframed body written with ``writer`` (default: this schema)."""
        return decode_body(writer if writer is not None else self.parsed, data, 0, self.parsed)


def decode_body(writer: Any, data: bytes, start: int, reader: Any = None) -> Record:
    """Decode ``data[start:]`` and insist that every byte was consumed."""
    buffer = io.BytesIO(data)
    buffer.seek(start)
    try:
        if reader is None or reader is writer:
            record = schemaless_reader(buffer, writer, None)
        else:
            record = schemaless_reader(buffer, writer, reader)
    except Exception as exc:  # truncated input surfaces as EOFError, StopIteration, ValueError...
        raise DecodeError(f"undecodable Avro body: {type(exc).__name__}: {exc}") from exc
    if buffer.tell() != len(data):
        raise DecodeError(
            f"{len(data) - buffer.tell()} trailing bytes after the record", reason="trailing_bytes"
        )
    if not isinstance(record, dict):
        raise DecodeError("record body is not a record", reason="wrong_record_type")
    return record


# -- a compiled writer for flat records ---------------------------------------------------------
# Status records (21 fields, 13 of them nullable) are written twice per task and envelopes once;
# fastavro's generic union handling costs ~3x these straight-line writers. Same bytes (tests
# compare with fastavro for every builtin schema).

_LONG_MIN, _LONG_MAX, _INT_MIN, _INT_MAX = -(2**63), 2**63 - 1, -(2**31), 2**31 - 1
NULL = b"\x00"  # the branch index of "null" in a ["null", X] union
NOT_NULL = b"\x02"  # the branch index of X


def _varint(z: int) -> bytes:
    """Unsigned LEB128 (the zigzag is the caller's), unrolled for the common short cases."""
    if z < 0x4000:
        return bytes((z & 0x7F | 0x80, z >> 7)) if z >= 0x80 else bytes((z,))
    if z < 0x200000:
        return bytes((z & 0x7F | 0x80, z >> 7 & 0x7F | 0x80, z >> 14))
    out = bytearray()
    while z >= 0x80:
        out.append(z & 0x7F | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_SMALL_LONGS = [_varint((n << 1) ^ (n >> 63)) for n in range(-64, 64)]


def write_long(n: int) -> bytes:
    """An Avro ``long``: zigzag varint; OverflowError outside 64 bits, TypeError if not int."""
    if -64 <= n < 64:
        return _SMALL_LONGS[n + 64]
    if not _LONG_MIN <= n <= _LONG_MAX:
        raise OverflowError(f"{n} does not fit an Avro long")
    return _varint((n << 1) ^ (n >> 63))


def write_int(n: int) -> bytes:
    if not _INT_MIN <= n <= _INT_MAX:
        raise OverflowError(f"{n} does not fit an Avro int")
    return write_long(n)


def write_string(text: str) -> bytes:
    data = text.encode()
    return write_long(len(data)) + data


def write_bytes(data: bytes) -> bytes:
    if not isinstance(data, bytes):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    return write_long(len(data)) + data


def write_boolean(value: bool) -> bytes:
    if not isinstance(value, bool):
        raise TypeError(f"expected bool, got {type(value).__name__}")
    return b"\x01" if value else b"\x00"


def optional_string(text: str | None) -> bytes:
    """A ``["null", "string"]`` value."""
    return NULL if text is None else NOT_NULL + write_string(text)


def optional_long(n: int | None) -> bytes:
    """A ``["null", "long"]`` value."""
    return NULL if n is None else NOT_NULL + write_long(n)


def optional_int(n: int | None) -> bytes:
    """A ``["null", "int"]`` value."""
    return NULL if n is None else NOT_NULL + write_int(n)


_PRIMITIVE_WRITERS: dict[str, Any] = {
    "string": write_string,
    "long": write_long,
    "int": write_int,
    "bytes": write_bytes,
    "boolean": write_boolean,
}


def _fixed_writer(size: int) -> Any:
    def write(data: bytes) -> bytes:
        if not isinstance(data, bytes) or len(data) != size:
            raise ValueError(f"expected {size} bytes for a fixed({size})")
        return data

    return write


def _type_writer(kind: Any) -> Any:
    """The writer of a primitive, a ``fixed`` or a flat record type, else None."""
    if isinstance(kind, str):
        return _PRIMITIVE_WRITERS.get(kind)
    if isinstance(kind, dict) and kind.get("type") == "fixed":
        return _fixed_writer(int(kind["size"]))
    if isinstance(kind, dict) and kind.get("type") == "record":
        return _compile_flat_writer(kind)
    return None


def _compile_flat_writer(schema: dict[str, Any]) -> Any:
    """A writer for a record of primitives, fixeds, flat records and ``["null", X]`` of those
    (nested records inline, as in the envelope's origin); None for anything else."""
    if schema.get("type") != "record":
        return None
    plan: list[tuple[str, Any, bool, Any]] = []
    for field in schema.get("fields", []):
        kind = field["type"]
        nullable = isinstance(kind, list)
        if nullable:
            if len(kind) != 2 or kind[0] != "null":
                return None
            kind = kind[1]
        writer = _type_writer(kind)
        if writer is None:
            return None
        plan.append((field["name"], writer, nullable, field.get("default")))

    def write(record: Record) -> bytes:
        out: list[bytes] = []
        append = out.append
        for name, writer, nullable, default in plan:
            value = record.get(name, default)  # as fastavro: a missing field takes its default
            if nullable:
                if value is None:
                    append(NULL)
                    continue
                append(NOT_NULL)
            append(writer(value))
        return b"".join(out)

    return write


def _builtins() -> list[SchemaCodec]:
    names = (
        *("task_envelope", "task_status", "dead_letter", "task_schema"),
        *("schedule_definition", "schedule_state", "schedule_control"),
        *("worker_report", "task_cancel"),
    )
    return [builtin(name) for name in names]


@cache
def builtin(name: str) -> SchemaCodec:
    """The codec of a packaged schema: ``task_envelope``, ``task_status``, ``dead_letter``..."""
    text = resources.files("streamjobs.schemas").joinpath(f"{name}.avsc").read_text("utf-8")
    return SchemaCodec(json.loads(text))


# -- which field does not fit ----------------------------------------------------------------

_FITS: dict[str, Any] = {
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool) and -(2**31) <= v < 2**31,
    "long": lambda v: isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**63,
    "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "double": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "bytes": lambda v: isinstance(v, bytes),
}


def misfit_path(schema: Any, value: Any) -> str | None:
    """The path of the first value in ``value`` that does not fit ``schema`` (``items[0].qty``;
    ``""`` for the whole value), or None if all fits: pure, for an encode error's message."""
    return _Misfit().find(schema, value, "")


class _Misfit:
    """Walks a schema and a value together, remembering named types as it meets them."""

    def __init__(self) -> None:
        self.named: dict[str, Any] = {}

    def find(self, schema: Any, value: Any, path: str) -> str | None:
        if isinstance(schema, list):  # a union: fits if one branch fits
            misses = [self.find(branch, value, path) for branch in schema]
            return None if None in misses else path
        if isinstance(schema, str):
            if schema in _FITS:
                return None if _FITS[schema](value) else path
            return self.find(self.named.get(schema, "null"), value, path)
        return self._complex(schema, value, path)

    def _complex(self, schema: dict[str, Any], value: Any, path: str) -> str | None:
        kind = schema["type"]
        if "name" in schema:
            self.named[schema["name"]] = schema
            self.named[f"{schema.get('namespace', '')}.{schema['name']}".lstrip(".")] = schema
        if kind == "record":
            return self._record(schema, value, path)
        if kind == "array":
            if not isinstance(value, list | tuple):
                return path
            items = (self.find(schema["items"], v, f"{path}[{i}]") for i, v in enumerate(value))
            return next((p for p in items if p is not None), None)
        if kind == "map":
            if not isinstance(value, dict):
                return path
            entries = (self.find(schema["values"], v, f"{path}[{k!r}]") for k, v in value.items())
            return next((p for p in entries if p is not None), None)
        if kind == "enum":
            return None if value in schema["symbols"] else path
        if kind == "fixed":
            return None if isinstance(value, bytes) and len(value) == schema["size"] else path
        return self.find(kind, value, path)  # {"type": "string", "logicalType": ...}

    def _record(self, schema: dict[str, Any], value: Any, path: str) -> str | None:
        if not isinstance(value, dict):
            return path
        for field in schema["fields"]:
            where = f"{path}.{field['name']}" if path else field["name"]
            if field["name"] not in value and "default" not in field:
                return where
            found = self.find(field["type"], value.get(field["name"], field.get("default")), where)
            if found is not None:
                return found
        return None
