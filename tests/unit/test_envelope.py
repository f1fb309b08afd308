"""streamjobs.envelope: the typed task envelope and its wire form, held to fastavro's bytes."""

from __future__ import annotations

import dataclasses
import io
import random
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from streamjobs.client import Position
from streamjobs.codec import HEADER_SIZE, MAGIC, builtin, write_long
from streamjobs.envelope import Envelope, decode_envelope, encode_envelope
from streamjobs.errors import DecodeError, EncodeError
from streamjobs.models import TaskState
from streamjobs.status import encode_status

_SCHEMA = builtin("task_envelope").schema
_PARSED = parse_schema(_SCHEMA)
_TEXTS = ["", "a", "caf\u00e9", "\U0001f600 emoji", "x" * 300]
_LONGS = [0, 1, -1, 63, -64, 64, -65, 8191, 8192, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63)]
_INTS = [0, 1, -1, 63, 64, 2**31 - 1, -(2**31)]


def _envelope(**changes: Any) -> Envelope:
    envelope = Envelope(
        task_id="3f0c9a",
        task="SendEmail",
        queue="emails",
        key="customer-7",
        payload=b"\x02\x04",
        payload_schema=bytes(range(8)),
        submitted_at_ms=1_700_000_000_000,
    )
    return dataclasses.replace(envelope, **changes)


def _random_envelope(rng: random.Random) -> Envelope:
    def maybe(value: Any) -> Any:
        return None if rng.random() < 0.4 else value

    origin = Position(rng.choice(_TEXTS), rng.choice(_INTS), rng.choice(_LONGS), rng.choice(_LONGS))
    return Envelope(
        task_id=rng.choice(_TEXTS),
        task=rng.choice(_TEXTS),
        queue=rng.choice(_TEXTS),
        key=maybe(rng.choice(_TEXTS)),
        payload=rng.choice([b"", b"\x00", rng.randbytes(200), rng.randbytes(20_000)]),
        payload_schema=rng.randbytes(8),
        attempt=rng.choice(_INTS),
        max_attempts=maybe(rng.choice(_INTS)),
        generation=rng.choice(_INTS),
        not_before_ms=maybe(rng.choice(_LONGS)),
        submitted_at_ms=rng.choice(_LONGS),
        origin=maybe(origin),
    )


def _fastavro_encoded(envelope: Envelope) -> bytes:
    buffer = io.BytesIO()
    schemaless_writer(buffer, _PARSED, envelope.as_dict())
    return MAGIC + builtin("task_envelope").fingerprint + buffer.getvalue()


def _fastavro_decoded(value: bytes) -> dict[str, Any]:
    buffer = io.BytesIO(value[HEADER_SIZE:])
    record = schemaless_reader(buffer, _PARSED, None)
    assert isinstance(record, dict)
    return record


def _reason(excinfo: pytest.ExceptionInfo[DecodeError]) -> str:
    return excinfo.value.reason


# --- the type ----------------------------------------------------------------------------------


def test_an_envelope_is_frozen_and_derived_envelopes_leave_the_original_alone() -> None:
    first = _envelope()
    retried = dataclasses.replace(first, attempt=2, origin=Position("sj.emails", 3, 42, 7))
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.attempt = 5  # type: ignore[misc]
    assert (first.attempt, first.origin) == (1, None)
    assert (retried.attempt, retried.origin) == (2, Position("sj.emails", 3, 42, 7))
    assert retried.task_id == first.task_id


def test_a_new_envelope_is_a_first_attempt_of_generation_zero_not_yet_due_from_nowhere() -> None:
    envelope = _envelope()
    assert (envelope.attempt, envelope.generation) == (1, 0)
    assert (envelope.max_attempts, envelope.not_before_ms, envelope.origin) == (None, None, None)


def test_the_record_key_is_the_ordering_key_else_the_task_id() -> None:
    assert _envelope(key="customer-7").record_key == "customer-7"
    assert _envelope(key=None).record_key == "3f0c9a"
    assert _envelope(key="").record_key == "3f0c9a"


def test_as_dict_lists_the_wire_fields_in_schema_order_with_the_origin_as_a_record() -> None:
    fields = _envelope(origin=Position("sj.emails", 3, 42, 7)).as_dict()
    assert list(fields) == [f["name"] for f in _SCHEMA["fields"]]
    assert fields["origin"] == {
        "topic": "sj.emails",
        "partition": 3,
        "offset": 42,
        "timestamp_ms": 7,
    }


def test_the_envelope_type_has_exactly_the_schemas_fields() -> None:
    assert {f.name for f in dataclasses.fields(Envelope)} == {f["name"] for f in _SCHEMA["fields"]}


# --- the wire form -----------------------------------------------------------------------------


def test_encoded_envelopes_are_fastavros_bytes_and_decode_back_to_equal_envelopes() -> None:
    rng = random.Random("envelope")
    for _ in range(400):
        envelope = _random_envelope(rng)
        value = encode_envelope(envelope)
        assert value == _fastavro_encoded(envelope), envelope
        assert decode_envelope(value) == envelope


def test_bytes_fastavro_wrote_decode_to_the_envelope_it_was_given() -> None:
    rng = random.Random("fastavro")
    for _ in range(200):
        envelope = _random_envelope(rng)
        assert decode_envelope(_fastavro_encoded(envelope)) == envelope


def test_decoding_consumes_exactly_all_bytes_trailing_bytes_are_refused() -> None:
    value = encode_envelope(_envelope(origin=Position("sj.emails", 3, 42, 7)))
    for extra in (b"\x00", b"\x02", b"\x00" * 9, b"garbage"):
        with pytest.raises(DecodeError) as excinfo:
            decode_envelope(value + extra)
        assert _reason(excinfo) == "trailing_bytes"


def test_every_truncation_of_an_envelope_is_a_decode_error_never_a_partial_envelope() -> None:
    value = encode_envelope(_envelope(max_attempts=5, origin=Position("sj.emails", 3, 42, 7)))
    for cut in range(len(value)):
        with pytest.raises(DecodeError):
            decode_envelope(value[:cut])


def test_another_record_type_is_named_and_an_unknown_schema_is_refused() -> None:
    status = encode_status(_envelope(), TaskState.QUEUED)
    with pytest.raises(DecodeError) as excinfo:
        decode_envelope(status)
    assert _reason(excinfo) == "wrong_record_type"
    body = encode_envelope(_envelope())[HEADER_SIZE:]
    with pytest.raises(DecodeError) as excinfo:
        decode_envelope(MAGIC + b"\xff" * 8 + body)
    assert _reason(excinfo) == "unknown_schema"
    with pytest.raises(DecodeError):
        decode_envelope(b"\x00not an envelope")


def test_odd_but_valid_avro_decodes_exactly_as_fastavro_decodes_it() -> None:
    # attempt 1 as an over-long varint (two bytes instead of one): valid Avro, unusual bytes
    plain = encode_envelope(_envelope(attempt=1, max_attempts=None))
    fingerprint_end = plain.index(bytes(range(8))) + 8
    odd = plain[:fingerprint_end] + b"\x82\x00" + plain[fingerprint_end + 1 :]
    assert decode_envelope(odd) == _envelope(attempt=1)
    assert _fastavro_decoded(odd)["attempt"] == 1


def test_decoding_agrees_with_the_general_codec_on_corrupted_envelopes() -> None:
    general = builtin("task_envelope")
    rng = random.Random("corrupt")
    for _ in range(1500):
        value = bytearray(encode_envelope(_random_envelope(rng)))
        for _ in range(rng.randrange(1, 4)):
            value[rng.randrange(HEADER_SIZE, len(value))] = rng.randrange(256)
        try:
            expected: dict[str, Any] | None = general.decode(bytes(value))
        except DecodeError:
            expected = None
        try:
            decoded: dict[str, Any] | None = decode_envelope(bytes(value)).as_dict()
        except DecodeError:
            decoded = None
        assert decoded == expected, bytes(value)


def test_an_int_field_beyond_32_bits_still_decodes_for_the_worker_to_refuse() -> None:
    plain = encode_envelope(_envelope())
    fingerprint_end = plain.index(bytes(range(8))) + 8
    huge = plain[:fingerprint_end] + write_long(2**40) + plain[fingerprint_end + 1 :]
    assert decode_envelope(huge).attempt == 2**40


@pytest.mark.parametrize(
    "changes",
    [
        {"payload_schema": b"short"},
        {"attempt": 2**31},
        {"submitted_at_ms": 2**63},
        {"task_id": None},
        {"payload": "not bytes"},
        {"origin": Position("t", 2**31, 0, 0)},
    ],
    ids=[
        "short-fingerprint",
        "attempt-over-int",
        "time-over-long",
        "no-id",
        "str-payload",
        "origin",
    ],
)
def test_a_field_that_does_not_fit_its_avro_type_fails_with_reason_encode_error(
    changes: dict[str, Any],
) -> None:
    with pytest.raises(EncodeError) as excinfo:
        encode_envelope(_envelope(**changes))
    assert _reason(excinfo) == "encode_error"


def test_an_encode_error_names_the_envelope_field_that_does_not_fit() -> None:
    with pytest.raises(EncodeError, match="field attempt") as excinfo:
        encode_envelope(_envelope(attempt="1"))
    assert excinfo.value.path == "attempt"
