"""``streamjobs schemas check`` against the writer schemas a producer published on a real broker.

Each test submits a ``Ship`` task with the first model (which publishes its writer schema on the
``<prefix>.schemas`` topic), then checks a registry holding a later model of the same task type.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from streamjobs import Producer, Settings, Task, TaskRegistry
from streamjobs.cli import app

pytestmark = pytest.mark.integration


def _address(with_zip: bool) -> type[BaseModel]:
    class Address(BaseModel):  # one record name in both versions, as a real model change keeps
        city: str
        if with_zip:
            zip: str

    return Address


AddressV1, AddressV2 = _address(with_zip=False), _address(with_zip=True)


class ShipV1(Task):
    task_name = "Ship"
    to: AddressV1  # type: ignore[valid-type]
    weight: int
    note: str


class ShipAddedDefault(Task):
    task_name = "Ship"
    to: AddressV1  # type: ignore[valid-type]
    weight: int
    note: str
    express: bool = False


class ShipRemovedField(Task):
    task_name = "Ship"
    to: AddressV1  # type: ignore[valid-type]
    weight: int


class ShipRetyped(Task):
    task_name = "Ship"
    to: AddressV1  # type: ignore[valid-type]
    weight: str
    note: str


class ShipNestedChange(Task):
    task_name = "Ship"
    to: AddressV2  # type: ignore[valid-type]
    weight: int
    note: str


def _registry(model: type[Task]) -> TaskRegistry:
    registry = TaskRegistry()
    registry.handler(model)(lambda task: None)
    return registry


added_default = _registry(ShipAddedDefault)
removed_field = _registry(ShipRemovedField)
retyped = _registry(ShipRetyped)
nested_change = _registry(ShipNestedChange)
unchanged = _registry(ShipV1)


@pytest.fixture
def check(settings: Settings, producer: Producer) -> Callable[[str], Any]:
    """Publish ShipV1's schema (by submitting one), then ``schemas check`` a registry here."""
    producer.submit(ShipV1(to=AddressV1(city="Oslo"), weight=3, note="fragile"))
    runner = CliRunner()
    clean_env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("STREAMJOBS_")}
    where = ["--bootstrap-servers", settings.bootstrap_servers]
    where += ["--topic-prefix", settings.topic_prefix]

    def invoke(registry: str) -> Any:
        spec = f"tests.integration.test_schemas_cli:{registry}"
        return runner.invoke(app, ["schemas", "check", spec, *where], env=clean_env)

    return invoke


def test_a_field_added_with_a_default_passes(check: Callable[[str], Any]) -> None:
    result = check("added_default")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["ok       Ship (1 published schema)"]


def test_the_published_model_itself_passes(check: Callable[[str], Any]) -> None:
    result = check("unchanged")

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok       Ship")


def test_removing_a_field_without_default_fails_naming_the_field(
    check: Callable[[str], Any],
) -> None:
    result = check("removed_field")

    assert result.exit_code == 1, result.output
    assert result.stdout.startswith("breaking Ship (1 published schema)")
    assert "removed field 'note' has no default" in result.stdout


def test_changing_a_field_type_fails_naming_the_field(check: Callable[[str], Any]) -> None:
    result = check("retyped")

    assert result.exit_code == 1, result.output
    assert "field 'weight' changed type long -> string" in result.stdout


def test_a_change_inside_a_nested_record_is_detected(check: Callable[[str], Any]) -> None:
    result = check("nested_change")

    assert result.exit_code == 1, result.output
    assert "new field 'to.zip' has no default" in result.stdout
