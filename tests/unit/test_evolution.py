"""streamjobs.evolution: which schema changes strand queued tasks, both ways, through nesting."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from streamjobs.evolution import breaking_changes, check_compatible
from streamjobs.models import Task
from streamjobs.tasktypes import derive_schema


def _schema(*fields: dict[str, Any], name: str = "T") -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": list(fields)}


def _address(*extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "record",
        "name": "Address",
        "namespace": "io.streamjobs.tasks",
        "fields": [{"name": "city", "type": "string"}, *extra],
    }


def test_identical_schemas_have_no_breaking_change() -> None:
    schema = _schema({"name": "a", "type": "long"}, {"name": "b", "type": ["null", "string"]})

    assert breaking_changes(schema, schema) == []


def test_a_field_added_with_a_default_breaks_nothing_either_way() -> None:
    old = _schema({"name": "a", "type": "long"})
    new = _schema({"name": "a", "type": "long"}, {"name": "b", "type": "string", "default": "x"})

    assert breaking_changes(new, old) == []


def test_a_field_added_without_a_default_cannot_read_old_tasks() -> None:
    old = _schema({"name": "a", "type": "long"})
    new = _schema({"name": "a", "type": "long"}, {"name": "b", "type": "string"})

    assert breaking_changes(new, old) == ["new field 'b' has no default"]


def test_removing_a_field_without_a_default_strands_old_workers() -> None:
    old = _schema({"name": "a", "type": "long"}, {"name": "gone", "type": "string"})
    new = _schema({"name": "a", "type": "long"})

    assert check_compatible(new, old) == []  # the new model reads old tasks fine
    assert breaking_changes(new, old) == [
        "removed field 'gone' has no default (workers on the old model cannot read new tasks)"
    ]


def test_removing_a_field_that_had_a_default_breaks_nothing() -> None:
    old = _schema({"name": "a", "type": "long"}, {"name": "gone", "type": "string", "default": ""})
    new = _schema({"name": "a", "type": "long"})

    assert breaking_changes(new, old) == []


def test_a_changed_type_is_named_once_with_old_and_new_type() -> None:
    old = _schema({"name": "width", "type": "long"})
    new = _schema({"name": "width", "type": "string"})

    assert breaking_changes(new, old) == ["field 'width' changed type long -> string"]


def test_a_field_added_without_default_inside_a_nested_record_is_named_by_its_path() -> None:
    old = _schema({"name": "home", "type": _address()})
    new = _schema({"name": "home", "type": _address({"name": "zip", "type": "string"})})

    assert breaking_changes(new, old) == ["new field 'home.zip' has no default"]


def test_a_type_change_inside_a_nested_record_is_detected() -> None:
    old = _schema({"name": "home", "type": _address({"name": "zip", "type": "long"})})
    new = _schema({"name": "home", "type": _address({"name": "zip", "type": "string"})})

    assert breaking_changes(new, old) == ["field 'home.zip' changed type long -> string"]


def test_nested_records_are_followed_through_arrays_maps_optionals_and_named_references() -> None:
    changed = _address({"name": "zip", "type": "string"})
    old = _schema(
        {"name": "home", "type": _address({"name": "zip", "type": "long"})},
        {"name": "others", "type": {"type": "array", "items": "io.streamjobs.tasks.Address"}},
        {"name": "by_name", "type": {"type": "map", "values": "io.streamjobs.tasks.Address"}},
        {"name": "work", "type": ["null", "io.streamjobs.tasks.Address"], "default": None},
    )
    new = _schema(
        {"name": "home", "type": changed},
        {"name": "others", "type": {"type": "array", "items": "io.streamjobs.tasks.Address"}},
        {"name": "by_name", "type": {"type": "map", "values": "io.streamjobs.tasks.Address"}},
        {"name": "work", "type": ["io.streamjobs.tasks.Address", "null"], "default": None},
    )

    assert breaking_changes(new, old) == [
        "field 'home.zip' changed type long -> string",
        "field 'others[].zip' changed type long -> string",
        "field 'by_name{}.zip' changed type long -> string",
        "field 'work.zip' changed type long -> string",
    ]


def test_a_renamed_nested_record_is_a_type_change() -> None:
    old = _schema({"name": "home", "type": _address()})
    renamed = {**_address(), "name": "Place"}
    new = _schema({"name": "home", "type": renamed})

    assert breaking_changes(new, old) == [
        "field 'home' changed type record Address -> record Place"
    ]


def test_derived_schemas_of_two_model_versions_with_a_nested_change() -> None:
    def version(with_zip: bool) -> type[Task]:
        class Address(BaseModel):
            city: str
            if with_zip:
                zip: str

        class Ship(Task):
            task_name = "Ship"
            to: Address
            note: str = ""

        return Ship

    old, new = derive_schema(version(False), "Ship"), derive_schema(version(True), "Ship")

    assert breaking_changes(new, old) == ["new field 'to.zip' has no default"]
    assert breaking_changes(old, new) == [
        "removed field 'to.zip' has no default (workers on the old model cannot read new tasks)"
    ]
