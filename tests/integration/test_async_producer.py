"""AsyncProducer against a real broker: concurrent submits confirmed, run, and awaited."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

import pytest

from streamjobs import AsyncProducer, DuplicateTask, Settings, Task, TaskRegistry, TaskState
from streamjobs.topics import queue_topics
from tests.integration.conftest import ThreadWorker, envelopes, latest

pytestmark = pytest.mark.integration


class Double(Task):
    n: int


def test_two_hundred_concurrent_async_submits_are_each_confirmed_and_run(
    settings: Settings, worker: Callable[..., ThreadWorker]
) -> None:
    registry = TaskRegistry()

    @registry.handler(Double)
    def double(task: Double) -> int:
        return task.n * 2

    worker(registry)

    async def main() -> list[int]:
        async with AsyncProducer(settings) as producer:
            handles = await asyncio.gather(*(producer.submit(Double(n=i)) for i in range(200)))
            assert len({h.task_id for h in handles}) == 200
            assert all(h.offset >= 0 for h in handles)
            return list(await asyncio.gather(*(h.wait(30) for h in handles[:5])))

    assert asyncio.run(main()) == [0, 2, 4, 6, 8]
    assert len(envelopes(settings, queue_topics(settings).main)) == 200


def test_async_submit_takes_the_sync_arguments_key_task_id_delay_and_max_attempts(
    settings: Settings,
) -> None:
    async def main() -> tuple[str, str]:
        async with AsyncProducer(settings) as producer:
            now = await producer.submit(Double(n=1), key="k1", task_id="id-now", max_attempts=7)
            later = await producer.submit(Double(n=2), task_id="id-later", delay=timedelta(hours=1))
            return now.task_id, later.task_id

    assert asyncio.run(main()) == ("id-now", "id-later")
    topics = queue_topics(settings)
    found = envelopes(settings, topics.main) + envelopes(settings, topics.delay[max(topics.delay)])
    by_id = {e.task_id: e for _, e in found}
    assert by_id["id-now"].key == "k1"
    assert by_id["id-now"].max_attempts == 7
    assert by_id["id-later"].not_before_ms is not None
    now, later = latest(settings, "id-now"), latest(settings, "id-later")
    assert now is not None
    assert now.state is TaskState.QUEUED
    assert later is not None
    assert later.state is TaskState.SCHEDULED


def test_async_handle_status_answers_queued_before_any_worker_runs_it(
    settings: Settings,
) -> None:
    async def main() -> TaskState | None:
        async with AsyncProducer(settings) as producer:
            handle = await producer.submit(Double(n=3))
            view = await handle.status()
            return None if view is None else view.state

    assert asyncio.run(main()) is TaskState.QUEUED


def test_async_submit_of_a_known_task_id_returns_its_handle_or_raises_duplicate_task(
    settings: Settings,
) -> None:
    async def main() -> tuple[str, str, BaseException | None]:
        async with AsyncProducer(settings) as producer:
            first = await producer.submit(Double(n=5), task_id="order-1")
            again = await producer.submit(Double(n=5), task_id="order-1")
            try:
                await producer.submit(Double(n=6), task_id="order-1")
            except DuplicateTask as exc:
                return first.task_id, again.task_id, exc
            return first.task_id, again.task_id, None

    first, again, error = asyncio.run(main())

    assert first == again == "order-1"
    assert isinstance(error, DuplicateTask)
    main_records = envelopes(settings, queue_topics(settings).main)
    assert [e.task_id for _, e in main_records] == ["order-1"]  # written once
