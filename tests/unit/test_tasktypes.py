"""streamjobs.tasktypes: deterministic Avro schemas from pydantic models, safety and evolution."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import json
import uuid
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

from streamjobs.codec import builtin, schema_fingerprint
from streamjobs.errors import UnsafeSchema
from streamjobs.evolution import check_compatible
from streamjobs.models import Task
from streamjobs.tasktypes import TaskType, check_safe, derive_schema


class Address(BaseModel):
    street: str
    city: str


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class SendEmail(Task):
    to: str
    subject: str = "hello"
    cc: list[str] = Field(default_factory=list)
    note: str | None = None
    retries: int | None = 3
    home: Address
    work: Address | None = None
    tags: dict[str, int] = Field(default_factory=dict)
    color: Color = Color.RED
    mode: Literal["fast", "slow"] = "fast"


class Invoice(Task):
    issued_at: dt.datetime
    due: dt.date
    invoice_id: uuid.UUID
    total: decimal.Decimal
    grace: dt.timedelta


class Node(BaseModel):
    label: str
    children: list[Node] = Field(default_factory=list)


class Empty(BaseModel):
    pass


class OnlyEmpty(BaseModel):
    inner: Empty


def _field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in schema["fields"] if f["name"] == name)


# --- derivation --------------------------------------------------------------------------------


def test_derivation_is_deterministic_same_model_same_schema_and_fingerprint() -> None:
    first, second = TaskType(SendEmail, "SendEmail"), TaskType(SendEmail, "SendEmail")
    assert first.codec.schema == second.codec.schema
    assert json.dumps(first.codec.schema) == json.dumps(second.codec.schema)
    assert first.fingerprint == second.fingerprint
    assert first.fingerprint == schema_fingerprint(derive_schema(SendEmail, "SendEmail"))


def test_schema_is_a_record_named_after_the_task_in_the_tasks_namespace() -> None:
    schema = derive_schema(SendEmail, "SendEmail")
    assert (schema["type"], schema["name"], schema["namespace"]) == (
        "record",
        "SendEmail",
        "io.streamjobs.tasks",
    )
    assert [f["name"] for f in schema["fields"]] == list(SendEmail.model_fields)


def test_task_name_that_is_not_an_avro_name_is_sanitised() -> None:
    assert derive_schema(Address, "billing.send-invoice")["name"] == "billing_send_invoice"
    assert derive_schema(Address, "3d-render")["name"] == "T_3d_render"


def test_primitive_fields_map_to_avro_primitives() -> None:
    schema = derive_schema(SendEmail, "SendEmail")
    assert _field(schema, "to") == {"name": "to", "type": "string"}
    assert _field(schema, "cc") == {
        "name": "cc",
        "type": {"type": "array", "items": "string"},
        "default": [],
    }
    assert _field(schema, "tags")["type"] == {"type": "map", "values": "long"}
    assert _field(schema, "color") == {"name": "color", "type": "string", "default": "red"}
    assert _field(schema, "mode") == {"name": "mode", "type": "string", "default": "fast"}


def test_optional_with_none_default_is_null_first_union_defaulting_to_null() -> None:
    note = _field(derive_schema(SendEmail, "SendEmail"), "note")
    assert note == {"name": "note", "type": ["null", "string"], "default": None}


def test_optional_with_a_value_default_puts_the_value_branch_first() -> None:
    # Avro: a union's default must match its first branch.
    retries = _field(derive_schema(SendEmail, "SendEmail"), "retries")
    assert retries == {"name": "retries", "type": ["long", "null"], "default": 3}


def test_required_optional_field_has_no_default() -> None:
    class Reply(BaseModel):
        parent: int | None

    assert _field(derive_schema(Reply, "Reply"), "parent") == {
        "name": "parent",
        "type": ["null", "long"],
    }


def test_nested_model_becomes_a_record_defined_once_then_referenced_by_full_name() -> None:
    schema = derive_schema(SendEmail, "SendEmail")
    home = _field(schema, "home")["type"]
    assert home["type"] == "record"
    assert home["name"] == "Address"
    assert [f["name"] for f in home["fields"]] == ["street", "city"]
    assert _field(schema, "work")["type"] == ["null", "io.streamjobs.tasks.Address"]


def test_task_with_nested_models_round_trips_through_its_codec() -> None:
    task_type = TaskType(SendEmail, "SendEmail")
    task = SendEmail(
        to="a@example.com",
        cc=["b@example.com"],
        home=Address(street="1 Main St", city="Springfield"),
        work=Address(street="2 Side St", city="Shelbyville"),
        tags={"prio": 2},
        color=Color.BLUE,
        mode="slow",
    )
    record = task_type.codec.decode_body(task_type.encode(task))
    assert SendEmail.model_validate(record) == task


def test_datetime_uuid_decimal_and_timedelta_fields_round_trip_without_loss() -> None:
    task_type = TaskType(Invoice, "Invoice")
    task = Invoice(
        issued_at=dt.datetime(2024, 2, 29, 23, 59, 59, 123456, tzinfo=dt.UTC),
        due=dt.date(2024, 3, 31),
        invoice_id=uuid.UUID("12345678-1234-5678-1234-567812345678"),
        total=decimal.Decimal("12345678901234567890.000000001"),
        grace=dt.timedelta(days=3, microseconds=7),
    )
    assert {f["type"] for f in task_type.codec.schema["fields"]} == {"string"}
    decoded = Invoice.model_validate(task_type.codec.decode_body(task_type.encode(task)))
    assert decoded == task
    assert decoded.total == decimal.Decimal("12345678901234567890.000000001")


def test_recursive_model_is_refused_as_unsafe() -> None:
    with pytest.raises(UnsafeSchema, match="recursive"):
        derive_schema(Node, "Node")


def test_list_of_none_is_refused_as_a_decoding_bomb() -> None:
    class Nulls(BaseModel):
        xs: list[None]

    with pytest.raises(UnsafeSchema, match="null"):
        derive_schema(Nulls, "Nulls")


def test_list_of_an_empty_model_is_refused_as_a_decoding_bomb() -> None:
    class Empties(BaseModel):
        xs: list[Empty]

    with pytest.raises(UnsafeSchema, match="empty"):
        derive_schema(Empties, "Empties")


def test_list_of_an_empty_model_already_defined_by_an_earlier_field_is_refused() -> None:
    # The second use is a by-name reference, not the record itself.
    class Sneaky(BaseModel):
        one: Empty
        many: list[Empty]

    with pytest.raises(UnsafeSchema, match="empty"):
        derive_schema(Sneaky, "Sneaky")


def test_list_of_a_model_whose_only_fields_are_empty_models_is_refused() -> None:
    # Each item is zero bytes on the wire: four bytes of count would make millions of items.
    class Wrapped(BaseModel):
        xs: list[OnlyEmpty]

    with pytest.raises(UnsafeSchema, match="empty"):
        derive_schema(Wrapped, "Wrapped")


def test_map_of_an_empty_model_is_refused() -> None:
    class EmptyMap(BaseModel):
        xs: dict[str, Empty]

    with pytest.raises(UnsafeSchema, match="empty"):
        derive_schema(EmptyMap, "EmptyMap")


def test_unsupported_field_types_are_refused() -> None:
    class Union3(BaseModel):
        x: int | str

    class IntKeys(BaseModel):
        x: dict[int, str]

    class Anything(BaseModel):
        x: object

    for model in (Union3, IntKeys, Anything):
        with pytest.raises(UnsafeSchema):
            derive_schema(model, model.__name__)


# --- evolution ---------------------------------------------------------------------------------


class ResizeV1(Task):
    image: str
    width: int


class ResizeV2(Task):
    image: str
    width: int
    height: int = 600
    fmt: str | None = None


class ResizeV3(Task):
    image: str
    width: str
    quality: int


def test_payload_written_with_v1_decodes_with_v2_filling_new_defaults() -> None:
    v1, v2 = TaskType(ResizeV1, "Resize"), TaskType(ResizeV2, "Resize")
    payload = v1.encode(ResizeV1(image="cat.png", width=300))
    record = v2.codec.decode_body(payload, writer=v1.codec.parsed)
    assert record == {"image": "cat.png", "width": 300, "height": 600, "fmt": None}
    assert ResizeV2.model_validate(record) == ResizeV2(image="cat.png", width=300)


def test_defaults_are_written_in_the_json_form_the_model_reads_back() -> None:
    class ResizeV4(Task):
        image: str
        width: int
        color: Color = Color.BLUE
        grace: dt.timedelta = dt.timedelta(minutes=5)
        sizes: set[int] = Field(default_factory=lambda: {2, 1})
        due: dt.datetime = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
        home: Address = Address(street="1 Main St", city="Springfield")

    v1, v4 = TaskType(ResizeV1, "Resize"), TaskType(ResizeV4, "Resize")
    schema = v4.codec.schema
    assert _field(schema, "color")["default"] == "blue"
    assert _field(schema, "sizes")["default"] == [1, 2]
    assert _field(schema, "home")["default"] == {"street": "1 Main St", "city": "Springfield"}
    payload = v1.encode(ResizeV1(image="cat.png", width=300))
    record = v4.codec.decode_body(payload, writer=v1.codec.parsed)
    assert ResizeV4.model_validate(record) == ResizeV4(image="cat.png", width=300)


def test_versions_with_different_fields_have_different_fingerprints() -> None:
    assert TaskType(ResizeV1, "Resize").fingerprint != TaskType(ResizeV2, "Resize").fingerprint


def test_adding_a_field_with_a_default_is_compatible() -> None:
    reader, writer = derive_schema(ResizeV2, "Resize"), derive_schema(ResizeV1, "Resize")
    assert check_compatible(reader, writer) == []


def test_new_field_without_default_and_type_change_are_both_flagged() -> None:
    reader, writer = derive_schema(ResizeV3, "Resize"), derive_schema(ResizeV1, "Resize")
    assert check_compatible(reader, writer) == [
        "field 'width' changed type long -> string",
        "new field 'quality' has no default",
    ]


def test_reordered_union_branches_are_not_a_type_change() -> None:
    writer = {"type": "record", "name": "R", "fields": [{"name": "x", "type": ["null", "long"]}]}
    reader = {"type": "record", "name": "R", "fields": [{"name": "x", "type": ["long", "null"]}]}
    assert check_compatible(reader, writer) == []


# --- check_safe (writer schemas read from Kafka) ----------------------------------------------


def _record(name: str, *fields: tuple[str, Any]) -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": [{"name": n, "type": t} for n, t in fields]}


def test_check_safe_accepts_derived_and_packaged_schemas() -> None:
    check_safe(derive_schema(SendEmail, "SendEmail"))
    check_safe(derive_schema(Invoice, "Invoice"))
    for name in ("task_envelope", "task_status", "dead_letter", "task_schema"):
        check_safe(builtin(name).schema)


def test_check_safe_accepts_a_named_type_reused_by_a_sibling_field() -> None:
    point = _record("Point", ("x", "long"), ("y", "long"))
    check_safe(_record("Line", ("start", point), ("end", "Point")))


def test_check_safe_refuses_a_record_referring_to_itself_by_name() -> None:
    linked = _record("Link", ("value", "long"), ("next", ["null", "Link"]))
    with pytest.raises(UnsafeSchema, match="recursive"):
        check_safe(linked)


def test_check_safe_refuses_a_self_reference_by_full_name_through_an_array() -> None:
    tree = {
        "type": "record",
        "name": "Tree",
        "namespace": "evil",
        "fields": [{"name": "kids", "type": {"type": "array", "items": "evil.Tree"}}],
    }
    with pytest.raises(UnsafeSchema, match="recursive"):
        check_safe(tree)


def test_check_safe_refuses_mutual_recursion() -> None:
    inner = _record("B", ("a", ["null", "A"]))
    with pytest.raises(UnsafeSchema, match="recursive"):
        check_safe(_record("A", ("b", inner)))


@pytest.mark.parametrize(
    "container",
    [
        {"type": "array", "items": "null"},
        {"type": "array", "items": ["null"]},
        {"type": "map", "values": "null"},
        {"type": "array", "items": {"type": "record", "name": "E", "fields": []}},
        {"type": "array", "items": {"type": "fixed", "name": "Z", "size": 0}},
        {"type": "array", "items": _record("N", ("a", "null"), ("b", {"type": "null"}))},
    ],
    ids=["array-null", "array-union-null", "map-null", "array-empty", "fixed0", "all-null"],
)
def test_check_safe_refuses_containers_of_zero_byte_items(container: dict[str, Any]) -> None:
    with pytest.raises(UnsafeSchema, match="null or empty"):
        check_safe(_record("Bomb", ("xs", container)))


def test_check_safe_refuses_an_array_of_a_named_empty_record_defined_elsewhere() -> None:
    empty = {"type": "record", "name": "E", "namespace": "x", "fields": []}
    schema = _record("Bomb", ("e", empty), ("xs", {"type": "array", "items": "x.E"}))
    with pytest.raises(UnsafeSchema, match="null or empty"):
        check_safe(schema)


def test_check_safe_refuses_absurdly_deep_nesting_before_the_stack_does() -> None:
    deep: Any = "long"
    for _ in range(5000):
        deep = {"type": "array", "items": deep}
    with pytest.raises(UnsafeSchema, match="deeper"):
        check_safe(_record("Deep", ("x", deep)))


def test_check_safe_refuses_nodes_that_are_not_schemas() -> None:
    with pytest.raises(UnsafeSchema):
        check_safe(_record("R", ("x", 42)))
    with pytest.raises(UnsafeSchema):
        check_safe({"type": "record", "name": "R", "fields": ["not-a-field"]})


def test_check_safe_accepts_arrays_of_items_that_take_at_least_one_byte() -> None:
    for items in ("long", "string", ["null", "long"], {"type": "array", "items": "long"}):
        check_safe(_record("Ok", ("xs", {"type": "array", "items": items})))
