"""The shipped pytest plugin's worker fixture against a real broker: ``run_until_idle`` waits
for retries too, and reads idleness from the group's committed offsets."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from streamjobs import Producer, Retry, Settings, Task, TaskRegistry, TaskState
from streamjobs.testing import RunningWorker
from tests.integration.conftest import latest

pytestmark = pytest.mark.integration


class Once(Task):
    name: str


def test_run_until_idle_returns_after_a_retried_task_has_succeeded(
    settings: Settings, streamjobs_worker: Callable[..., RunningWorker]
) -> None:
    registry = TaskRegistry()
    calls: list[str] = []

    @registry.handler(Once)
    def once(task: Once) -> int:
        calls.append(task.name)
        if len(calls) == 1:
            raise Retry()
        return len(calls)

    worker = streamjobs_worker(registry, settings)
    with Producer(settings) as producer:
        handle = producer.submit(Once(name="a"))
    worker.run_until_idle(timeout=30)

    assert worker.behind() == {}
    view = latest(settings, handle.task_id)
    assert view is not None
    assert view.state is TaskState.SUCCEEDED
    assert view.result == 2


def test_the_plugin_settings_fixture_gives_each_test_its_own_ensured_queue(
    streamjobs_settings: Settings, streamjobs_producer: Producer
) -> None:
    handle = streamjobs_producer.submit(Once(name="b"))

    assert handle.topic == f"{streamjobs_settings.topic_prefix}.{streamjobs_settings.queue}"
    assert streamjobs_producer.settings is streamjobs_settings
