"""schemastore.check_task_types: registered task types against published writer schemas (pure)."""

from __future__ import annotations

from streamjobs.models import Task
from streamjobs.schemastore import PublishedSchema, check_task_types
from streamjobs.tasktypes import TaskType


class ResizeV1(Task):
    task_name = "Resize"
    image: str
    width: int


class ResizeV2(Task):
    task_name = "Resize"
    image: str
    width: int
    quality: int = 90


class ResizeRetyped(Task):
    task_name = "Resize"
    image: str
    width: str


class Other(Task):
    note: str


def _published(model: type[Task], task: str = "Resize") -> PublishedSchema:
    task_type = TaskType(model, task)
    return PublishedSchema(task, task_type.fingerprint.hex(), task_type.codec.schema)


def test_a_type_is_checked_only_against_writer_schemas_of_its_own_name() -> None:
    [resize, other] = check_task_types(
        [TaskType(ResizeV2, "Resize"), TaskType(Other, "Other")],
        [_published(ResizeV1), _published(ResizeV2), _published(ResizeRetyped, "Elsewhere")],
    )

    assert (resize.task, resize.writers, resize.ok, resize.problems) == ("Resize", 2, True, ())
    assert (other.task, other.writers, other.ok) == ("Other", 0, True)


def test_each_problem_is_named_once_with_the_first_schema_it_breaks() -> None:
    v1, v2 = _published(ResizeV1), _published(ResizeV2)

    [check] = check_task_types([TaskType(ResizeRetyped, "Resize")], [v1, v2])

    assert not check.ok
    assert check.problems == (
        f"field 'width' changed type long -> string (vs schema {v1.fingerprint[:16]})",
    )
