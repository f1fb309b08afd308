"""streamjobs.codec: single-object framing, exact decoding and the CRC-64-AVRO fingerprint.

The fingerprint is checked against the Avro specification's algorithm, written out here from the
spec text rather than taken from fastavro, so a byte-order slip in either is caught.
"""

from __future__ import annotations

import io
import json
import random
from importlib import resources
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from streamjobs.codec import HEADER_SIZE, MAGIC, SchemaCodec, builtin, parse, schema_fingerprint
from streamjobs.errors import BadInput, DecodeError, EncodeError, UnsafeSchema

# --- CRC-64-AVRO exactly as the Avro specification spells it ("Schema Fingerprints") ----------
_EMPTY = 0xC15D213AA4D7A795


def _fp_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY & -(fp & 1))
        table.append(fp)
    return table


_FP_TABLE = _fp_table()


def crc64_avro(data: bytes) -> int:
    fp = _EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _FP_TABLE[(fp ^ byte) & 0xFF]
    return fp


# Two records with identical wire shapes (string, string, long) but different meanings.
TRANSFER = {
    "type": "record",
    "name": "Transfer",
    "namespace": "example.bank",
    "doc": "money moves",
    "fields": [
        {"name": "source", "type": "string", "doc": "debited account"},
        {"name": "target", "type": "string"},
        {"name": "amount", "type": "long"},
    ],
}
# Hand-written Parsing Canonical Form of TRANSFER: full name, no doc, keys in spec order.
TRANSFER_CANONICAL = (
    '{"name":"example.bank.Transfer","type":"record","fields":['
    '{"name":"source","type":"string"},{"name":"target","type":"string"},'
    '{"name":"amount","type":"long"}]}'
)
LOGIN = {
    "type": "record",
    "name": "Login",
    "fields": [
        {"name": "user", "type": "string"},
        {"name": "ip", "type": "string"},
        {"name": "at_ms", "type": "long"},
    ],
}


@pytest.fixture
def transfer() -> SchemaCodec:
    return SchemaCodec(TRANSFER)


@pytest.fixture
def login() -> SchemaCodec:
    return SchemaCodec(LOGIN)


def _reason(excinfo: pytest.ExceptionInfo[DecodeError] | pytest.ExceptionInfo[EncodeError]) -> str:
    return excinfo.value.reason


def test_spec_crc64_of_int_is_the_documented_vector() -> None:
    # Guards the reference implementation above: the Avro spec's known value for "int".
    assert crc64_avro(b'"int"') == 0x7275D51A3F395C8F


def test_fingerprint_of_int_is_the_spec_crc64_in_little_endian() -> None:
    assert schema_fingerprint("int") == (0x7275D51A3F395C8F).to_bytes(8, "little")
    assert schema_fingerprint("int").hex() == "8f5c393f1ad57572"


def test_fingerprint_is_crc64_of_the_parsing_canonical_form(transfer: SchemaCodec) -> None:
    expected = crc64_avro(TRANSFER_CANONICAL.encode()).to_bytes(8, "little")
    assert schema_fingerprint(TRANSFER) == expected
    assert transfer.fingerprint == expected


def test_fingerprint_ignores_docs_and_key_order() -> None:
    reordered = {
        "fields": [{"type": "string", "name": "source"}, *TRANSFER["fields"][1:]],
        "namespace": "example.bank",
        "name": "Transfer",
        "type": "record",
    }
    assert schema_fingerprint(reordered) == schema_fingerprint(TRANSFER)


def test_record_round_trips_through_encode_and_decode(transfer: SchemaCodec) -> None:
    record = {"source": "alice", "target": "bob", "amount": -(2**40)}
    assert transfer.decode(transfer.encode(record)) == record


def test_encoded_value_starts_with_c3_01_and_the_8_byte_fingerprint(
    transfer: SchemaCodec,
) -> None:
    record = {"source": "a", "target": "b", "amount": 1}
    value = transfer.encode(record)
    assert value[:2] == b"\xc3\x01" == MAGIC
    assert HEADER_SIZE == 10
    assert value[2:10] == transfer.fingerprint
    assert value[10:] == transfer.encode_body(record)


def test_value_of_an_unknown_schema_is_rejected_with_reason_unknown_schema(
    transfer: SchemaCodec, login: SchemaCodec
) -> None:
    with pytest.raises(DecodeError, match="expected a Transfer record") as excinfo:
        transfer.decode(login.encode({"user": "eve", "ip": "10.0.0.1", "at_ms": 7}))
    assert _reason(excinfo) == "unknown_schema"


def test_a_known_record_of_the_wrong_type_is_rejected_with_reason_wrong_record_type() -> None:
    status_value = builtin("task_schema").encode(
        {"task": "t", "fingerprint": "00" * 8, "schema": "{}", "registered_at_ms": 1}
    )
    with pytest.raises(DecodeError, match="got a TaskSchema record") as excinfo:
        builtin("task_envelope").decode(status_value)
    assert _reason(excinfo) == "wrong_record_type"


def test_same_shape_record_of_another_schema_is_refused_not_decoded_as_garbage(
    transfer: SchemaCodec, login: SchemaCodec
) -> None:
    value = login.encode({"user": "eve", "ip": "10.0.0.1", "at_ms": 7})
    # Without framing, fastavro happily reads the login as a transfer: the hazard we guard.
    garbage = schemaless_reader(io.BytesIO(value[HEADER_SIZE:]), transfer.parsed, None)
    assert garbage == {"source": "eve", "target": "10.0.0.1", "amount": 7}
    with pytest.raises(DecodeError) as excinfo:
        transfer.decode(value)
    assert _reason(excinfo) == "unknown_schema"


@pytest.mark.parametrize(
    "value",
    [b"", b"\xc3", b"\xc3\x01\x00", b"plain text, not avro", b"\x00\x01" + bytes(20)],
    ids=["empty", "half-magic", "short-header", "text", "wrong-magic"],
)
def test_unframed_bytes_are_rejected_with_reason_decode_error(
    transfer: SchemaCodec, value: bytes
) -> None:
    with pytest.raises(DecodeError) as excinfo:
        transfer.decode(value)
    assert _reason(excinfo) == "decode_error"


def test_truncated_value_is_rejected_with_reason_decode_error(transfer: SchemaCodec) -> None:
    value = transfer.encode({"source": "alice", "target": "bob", "amount": 10**12})
    for cut in range(HEADER_SIZE, len(value)):
        with pytest.raises(DecodeError) as excinfo:
            transfer.decode(value[:cut])
        assert _reason(excinfo) == "decode_error", cut


def test_garbage_body_after_a_valid_header_is_rejected_with_reason_decode_error(
    transfer: SchemaCodec,
) -> None:
    header = MAGIC + transfer.fingerprint
    # a string whose zig-zag length is negative, then nothing
    with pytest.raises(DecodeError) as excinfo:
        transfer.decode(header + b"\x01")
    assert _reason(excinfo) == "decode_error"


def test_trailing_bytes_are_rejected_with_reason_trailing_bytes(transfer: SchemaCodec) -> None:
    value = transfer.encode({"source": "a", "target": "b", "amount": 1})
    with pytest.raises(DecodeError, match="1 trailing bytes") as excinfo:
        transfer.decode(value + b"\x00")
    assert _reason(excinfo) == "trailing_bytes"


def test_trailing_bytes_after_an_unframed_body_are_rejected(transfer: SchemaCodec) -> None:
    body = transfer.encode_body({"source": "a", "target": "b", "amount": 1})
    with pytest.raises(DecodeError) as excinfo:
        transfer.decode_body(body + b"xyz")
    assert _reason(excinfo) == "trailing_bytes"


def test_decode_error_is_bad_input_so_the_record_is_dead_lettered(transfer: SchemaCodec) -> None:
    with pytest.raises(BadInput):
        transfer.decode(b"nope")


def test_record_that_does_not_fit_the_schema_fails_to_encode_with_reason_encode_error(
    transfer: SchemaCodec,
) -> None:
    with pytest.raises(EncodeError) as excinfo:
        transfer.encode({"source": "a", "target": "b"})
    assert _reason(excinfo) == "encode_error"
    with pytest.raises(EncodeError) as excinfo:
        transfer.encode({"source": "a", "target": "b", "amount": "lots"})
    assert _reason(excinfo) == "encode_error"


def test_invalid_schema_is_refused_with_reason_invalid_schema() -> None:
    with pytest.raises(UnsafeSchema) as excinfo:
        parse({"type": "record", "name": "R", "fields": [{"name": "x", "type": "nosuch"}]})
    assert excinfo.value.reason == "invalid_schema"
    with pytest.raises(UnsafeSchema):
        parse("{not json")


def test_parse_accepts_json_text_as_well_as_a_dict() -> None:
    assert parse(json.dumps(TRANSFER)) == parse(TRANSFER)


def _packaged_schema_names() -> list[str]:
    files = resources.files("streamjobs.schemas").iterdir()
    return sorted(f.name.removesuffix(".avsc") for f in files if f.name.endswith(".avsc"))


def test_packaged_schemas_are_the_wire_contracts() -> None:
    assert _packaged_schema_names() == [
        "dead_letter",
        "schedule_control",
        "schedule_definition",
        "schedule_state",
        "task_cancel",
        "task_envelope",
        "task_schema",
        "task_status",
        "worker_report",
    ]


@pytest.mark.parametrize("name", _packaged_schema_names())
def test_builtin_schema_loads_from_package_resources_and_is_cached(name: str) -> None:
    text = resources.files("streamjobs.schemas").joinpath(f"{name}.avsc").read_text("utf-8")
    codec = builtin(name)
    assert codec.schema == json.loads(text)
    assert codec.fingerprint == schema_fingerprint(json.loads(text))
    assert builtin(name) is codec


def test_builtin_schemas_have_distinct_fingerprints() -> None:
    prints = {builtin(n).fingerprint for n in _packaged_schema_names()}
    assert len(prints) == len(_packaged_schema_names())


def test_task_envelope_round_trips_with_nested_origin_and_fixed_fingerprint() -> None:
    codec = builtin("task_envelope")
    envelope: dict[str, Any] = {
        "task_id": "t-1",
        "task": "SendEmail",
        "queue": "emails",
        "key": None,
        "payload": b"\x00\x01\x02",
        "payload_schema": schema_fingerprint("int"),
        "attempt": 2,
        "max_attempts": None,
        "generation": 0,
        "not_before_ms": 1_700_000_000_000,
        "submitted_at_ms": 1_699_999_999_000,
        "origin": {"topic": "sj.emails", "partition": 3, "offset": 42, "timestamp_ms": 5},
    }
    assert codec.decode(codec.encode(envelope)) == envelope


# --- the straight-line writer for flat records must produce fastavro's bytes -----------------

_EDGE_LONGS = [0, 1, -1, 63, -64, 64, -65, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63)]
_TEXTS = ["", "a", "caf\u00e9", "\U0001f600 emoji", "x" * 300]


def _fastavro_body(codec: SchemaCodec, record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    schemaless_writer(buffer, parse_schema(codec.schema), record)
    return buffer.getvalue()


def _random_value(rng: random.Random, avro: Any) -> Any:
    if isinstance(avro, list):  # ["null", X]
        return None if rng.random() < 0.4 else _random_value(rng, avro[1])
    if isinstance(avro, dict) and avro["type"] == "fixed":
        return rng.randbytes(avro["size"])
    if isinstance(avro, dict) and avro["type"] == "record":
        return {f["name"]: _random_value(rng, f["type"]) for f in avro["fields"]}
    if avro == "bytes":
        return rng.choice([b"", b"\x00", rng.randbytes(200)])
    if avro == "string":
        return rng.choice(_TEXTS)
    if avro == "long":
        return rng.choice([*_EDGE_LONGS, rng.randrange(-(2**40), 2**40)])
    if avro == "int":
        return rng.choice([0, -1, 64, 2**31 - 1, -(2**31), rng.randrange(-(2**20), 2**20)])
    raise AssertionError(avro)


@pytest.mark.parametrize("name", ["task_status", "task_schema", "task_envelope"])
def test_flat_record_bytes_are_identical_to_fastavros(name: str) -> None:
    codec = builtin(name)
    assert codec._flat is not None  # the straight-line writer, not fastavro, is under test
    rng = random.Random(name)
    for _ in range(300):
        record = {f["name"]: _random_value(rng, f["type"]) for f in codec.schema["fields"]}
        body = codec.encode_body(record)
        assert body == _fastavro_body(codec, record), record
        assert codec.decode_body(body) == record


FLAT = {
    "type": "record",
    "name": "Flat",
    "fields": [
        {"name": "a", "type": "string"},
        {"name": "b", "type": ["null", "long"], "default": None},
        {"name": "c", "type": "int", "default": 7},
        {"name": "d", "type": "string", "default": "x"},
    ],
}


def test_flat_record_missing_fields_with_defaults_is_written_with_the_defaults() -> None:
    codec = SchemaCodec(FLAT)
    assert codec._flat is not None  # the straight-line writer, not fastavro, is under test
    body = codec.encode_body({"a": "hi"})
    assert body == _fastavro_body(codec, {"a": "hi"})
    assert codec.decode_body(body) == {"a": "hi", "b": None, "c": 7, "d": "x"}


def test_flat_record_missing_a_field_without_default_fails_with_reason_encode_error() -> None:
    with pytest.raises(EncodeError) as excinfo:
        SchemaCodec(FLAT).encode_body({"b": 1})
    assert _reason(excinfo) == "encode_error"


def test_flat_record_with_an_out_of_range_int_fails_with_reason_encode_error() -> None:
    codec = SchemaCodec({"type": "record", "name": "N", "fields": [{"name": "n", "type": "int"}]})
    assert codec.decode_body(codec.encode_body({"n": 2**31 - 1})) == {"n": 2**31 - 1}
    for bad in (2**31, "7", None):
        with pytest.raises(EncodeError) as excinfo:
            codec.encode_body({"n": bad})
        assert _reason(excinfo) == "encode_error"


def test_a_fixed_of_the_wrong_size_fails_with_reason_encode_error() -> None:
    codec = builtin("task_envelope")
    rng = random.Random(7)
    record = {f["name"]: _random_value(rng, f["type"]) for f in codec.schema["fields"]}
    record["payload_schema"] = b"short"
    with pytest.raises(EncodeError) as excinfo:
        codec.encode(record)
    assert _reason(excinfo) == "encode_error"


def test_a_nested_record_missing_a_field_fails_with_reason_encode_error() -> None:
    codec = builtin("task_envelope")
    rng = random.Random(8)
    record = {f["name"]: _random_value(rng, f["type"]) for f in codec.schema["fields"]}
    record["origin"] = {"topic": "t", "partition": 1}  # offset and timestamp_ms missing
    with pytest.raises(EncodeError) as excinfo:
        codec.encode(record)
    assert _reason(excinfo) == "encode_error"
