"""Task ids are unique: a submit naming a task id the status topic already knows never writes.

Same arguments (task type, key, payload): the existing task's handle comes back and the task
runs once. Other arguments: DuplicateTask, and the status topic is left as it was. A dead-lettered
task keeps its id (redrive re-runs it); a purged one frees it. Status lookups that cannot read
their partition to the end raise instead of answering "unknown".
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from streamjobs import (
    Discard,
    DuplicateTask,
    Producer,
    Settings,
    Task,
    TaskFailed,
    TaskRegistry,
    TaskState,
    client,
    statusreads,
)
from streamjobs.errors import KafkaUnavailable
from streamjobs.ops.purge import purge
from streamjobs.topics import queue_topics
from tests.integration.conftest import (
    ThreadWorker,
    envelopes,
    read_topic,
    state_of,
    status_history,
)

pytestmark = pytest.mark.integration


class Charge(Task):
    account: str
    cents: int


def _registry(runs: Counter[str]) -> TaskRegistry:
    registry = TaskRegistry()

    @registry.handler(Charge, max_attempts=1)
    def charge(task: Charge) -> int:
        runs[task.account] += 1
        if task.cents < 0:
            raise Discard("negative_amount")
        return task.cents

    return registry


def _status_records(settings: Settings, task_id: str) -> list[bytes | None]:
    key = task_id.encode()
    return [r.value for r in read_topic(settings, queue_topics(settings).status) if r.key == key]


def _task_records(settings: Settings, task_id: str) -> int:
    topic = queue_topics(settings).main
    return sum(1 for _, envelope in envelopes(settings, topic) if envelope.task_id == task_id)


def test_a_submit_retried_with_the_same_id_and_arguments_returns_the_same_task_and_runs_once(
    settings: Settings, producer: Producer, worker: Callable[..., ThreadWorker]
) -> None:
    runs: Counter[str] = Counter()
    worker(_registry(runs))
    task_id = f"order-{uuid.uuid4().hex}"
    first = producer.submit(Charge(account="a", cents=500), key="a", task_id=task_id)
    assert first.wait(30.0) == 500
    again = producer.submit(Charge(account="a", cents=500), key="a", task_id=task_id)

    assert again.task_id == task_id
    assert again.wait(30.0) == 500
    assert runs["a"] == 1
    assert _task_records(settings, task_id) == 1
    running = [v for v in status_history(settings, task_id) if v.state is TaskState.RUNNING]
    assert len(running) == 1


def test_a_submit_retried_while_the_task_is_still_queued_does_not_queue_it_twice(
    settings: Settings, producer: Producer
) -> None:
    task_id = uuid.uuid4().hex
    producer.submit(Charge(account="b", cents=1), task_id=task_id)  # no worker: stays queued
    again = producer.submit(Charge(account="b", cents=1), task_id=task_id)
    assert again.task_id == task_id
    assert again.topic == queue_topics(settings).main
    assert _task_records(settings, task_id) == 1
    assert state_of(settings, task_id) == "queued"


def test_a_submit_with_a_known_id_and_other_arguments_raises_duplicate_task_and_writes_nothing(
    settings: Settings, producer: Producer, worker: Callable[..., ThreadWorker]
) -> None:
    runs: Counter[str] = Counter()
    worker(_registry(runs))
    task_id = uuid.uuid4().hex
    assert producer.submit(Charge(account="c", cents=700), task_id=task_id).wait(30.0) == 700
    before = _status_records(settings, task_id)

    for other, key in [
        (Charge(account="c", cents=701), None),
        (Charge(account="c", cents=700), "k"),
    ]:
        with pytest.raises(DuplicateTask, match="other arguments") as raised:
            producer.submit(other, key=key, task_id=task_id)
        assert raised.value.task_id == task_id

    assert _status_records(settings, task_id) == before
    assert _task_records(settings, task_id) == 1
    view = statusreads.latest(settings, task_id)
    assert view is not None
    assert (view.state, view.result) == (TaskState.SUCCEEDED, 700)
    assert runs["c"] == 1


def test_a_dead_lettered_task_keeps_its_id_the_same_submit_returns_it_without_running_again(
    settings: Settings, producer: Producer, worker: Callable[..., ThreadWorker]
) -> None:
    runs: Counter[str] = Counter()
    worker(_registry(runs))
    task_id = uuid.uuid4().hex
    first = producer.submit(Charge(account="d", cents=-1), task_id=task_id)
    with pytest.raises(TaskFailed, match="negative_amount"):
        first.wait(30.0)

    again = producer.submit(Charge(account="d", cents=-1), task_id=task_id)
    with pytest.raises(TaskFailed, match="negative_amount"):
        again.wait(5.0)  # the same dead letter: redrive is the way to run it again
    with pytest.raises(DuplicateTask):
        producer.submit(Charge(account="d", cents=5), task_id=task_id)
    assert runs["d"] == 1
    assert _task_records(settings, task_id) == 1


def test_a_purged_task_id_is_free_again(
    settings: Settings, producer: Producer, worker: Callable[..., ThreadWorker]
) -> None:
    runs: Counter[str] = Counter()
    worker(_registry(runs))
    task_id = uuid.uuid4().hex
    assert producer.submit(Charge(account="e", cents=1), task_id=task_id).wait(30.0) == 1
    assert purge(settings, timedelta(0)) == 1
    assert statusreads.latest(settings, task_id) is None

    reused = producer.submit(Charge(account="e", cents=2), task_id=task_id)
    assert reused.wait(30.0) == 2
    assert runs["e"] == 2


def test_a_submit_with_an_id_fails_rather_than_writes_when_the_status_cannot_be_read(
    settings: Settings,
) -> None:
    unreachable = settings.model_copy(update={"bootstrap_servers": "127.0.0.1:1"})
    with (
        Producer(unreachable, timeout=timedelta(seconds=2)) as producer,
        pytest.raises(KafkaUnavailable),
    ):
        producer.submit(Charge(account="f", cents=1), task_id="any")


# -- status reads never pretend -----------------------------------------------------------------


def test_a_status_lookup_on_an_unreachable_broker_raises_instead_of_answering_unknown(
    settings: Settings,
) -> None:
    unreachable = settings.model_copy(update={"bootstrap_servers": "127.0.0.1:1"})
    with pytest.raises(KafkaUnavailable):
        statusreads.latest(unreachable, "some-task", timeout=1.0)


class _Stalled:
    """A status reader whose fetches never return records (a broker that stopped serving)."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def consume(self, _count: int, timeout: float) -> list[Any]:
        time.sleep(min(timeout, 0.05))  # what a fetch with nothing to return costs
        return []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_a_status_lookup_that_cannot_read_to_the_end_in_time_raises_instead_of_unknown(
    settings: Settings, producer: Producer, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = producer.submit(Charge(account="g", cents=1))
    assert statusreads.latest(settings, handle.task_id) is not None  # readable with time to do it
    new_reader = client.new_reader
    monkeypatch.setattr(client, "new_reader", lambda s, **kw: _Stalled(new_reader(s, **kw)))

    started = time.monotonic()
    with pytest.raises(KafkaUnavailable, match="not read to its end"):
        statusreads.latest(settings, handle.task_id, timeout=1.0)
    assert time.monotonic() - started < 5.0
