"""The public API is exactly what ``streamjobs.__all__`` lists, and the error tree is as drawn."""

from __future__ import annotations

import importlib
import inspect

import streamjobs
from streamjobs import errors


def _error_classes() -> list[type]:
    members = inspect.getmembers(errors, inspect.isclass)
    return [cls for _, cls in members if cls.__module__ == errors.__name__]


PUBLIC = {
    "AsyncProducer",
    "AsyncTaskHandle",
    "BadInput",
    "CancelResult",
    "Cancelled",
    "CurrentTask",
    "Discard",
    "DuplicateTask",
    "Producer",
    "Retry",
    "Settings",
    "StatusView",
    "StreamJobsError",
    "SubmitError",
    "Task",
    "TaskCancelled",
    "TaskFailed",
    "TaskHandle",
    "TaskRegistry",
    "TaskState",
    "TaskTimeout",
    "Worker",
    "current_task",
}


def test_all_is_exactly_the_pinned_public_names() -> None:
    assert set(streamjobs.__all__) == PUBLIC
    assert len(streamjobs.__all__) == len(PUBLIC)


def test_every_public_name_is_importable_from_the_package() -> None:
    module = importlib.import_module("streamjobs")
    for name in sorted(PUBLIC):
        assert getattr(module, name).__name__ == name


def test_star_import_gives_exactly_the_public_names() -> None:
    namespace: dict[str, object] = {}
    exec("from streamjobs import *", namespace)
    assert set(namespace) - {"__builtins__"} == PUBLIC


def test_public_errors_are_the_ones_defined_in_the_errors_module() -> None:
    for name in ("BadInput", "Discard", "Retry", "StreamJobsError", "SubmitError"):
        assert getattr(streamjobs, name) is getattr(errors, name)
    for name in ("TaskFailed", "TaskTimeout"):
        assert getattr(streamjobs, name) is getattr(errors, name)


def test_every_library_error_descends_from_the_one_root_or_the_control_branch() -> None:
    classes = _error_classes()
    for cls in classes:
        assert issubclass(cls, errors.StreamJobsError) != issubclass(cls, errors.TaskControl), cls


def test_handler_control_flow_is_not_an_error() -> None:
    assert not issubclass(streamjobs.Retry, streamjobs.StreamJobsError)
    assert not issubclass(streamjobs.Discard, streamjobs.StreamJobsError)
    assert issubclass(streamjobs.BadInput, streamjobs.StreamJobsError)


def test_errors_docstring_draws_every_error_class() -> None:
    doc = errors.__doc__ or ""
    classes = _error_classes()
    for cls in classes:
        assert cls.__name__ in doc, cls.__name__
