"""Ordering across retries, per queue: ``non_blocking`` (default) or ``key_ordered``.

A task of key ``k`` fails once and goes to a retry tier. Under ``non_blocking`` the next task of
``k`` runs at once; under ``key_ordered`` it waits until the retry has run, while other keys
keep flowing in both modes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from streamjobs import Producer, Settings, Task, TaskRegistry
from tests.integration.conftest import ThreadWorker
from tests.support import wait_for

pytestmark = pytest.mark.integration


class Step(Task):
    key: str
    seq: int


def _registry(runs: list[tuple[str, int, float]], failed: set[tuple[str, int]]) -> TaskRegistry:
    registry = TaskRegistry()

    @registry.handler(Step)
    def step(task: Step) -> None:
        runs.append((task.key, task.seq, time.monotonic()))
        if (task.key, task.seq) == ("k", 0) and ("k", 0) not in failed:
            failed.add(("k", 0))
            raise ConnectionError("transient")  # the first attempt fails; the retry succeeds

    return registry


def _run(settings: Settings, worker: Callable[..., ThreadWorker]) -> list[tuple[str, int, float]]:
    runs: list[tuple[str, int, float]] = []
    worker(_registry(runs, set()), settings)
    with Producer(settings) as producer:
        tasks = [Step(key="k", seq=0), Step(key="k", seq=1), Step(key="k", seq=2)]
        tasks.append(Step(key="other", seq=0))
        handles = producer.submit_many(tasks, keys=[t.key for t in tasks])
        for handle in handles:
            handle.wait(30.0)
    wait_for(lambda: len(runs) == 5, 10.0, message="4 tasks, one of them twice")
    return runs


def test_key_ordered_later_tasks_of_a_key_wait_for_its_retry_while_other_keys_flow(
    make_settings: Callable[..., Settings], worker: Callable[..., ThreadWorker]
) -> None:
    runs = _run(make_settings(ordering="key_ordered", retry_tiers="1s"), worker)

    of_k = [seq for key, seq, _ in runs if key == "k"]
    assert of_k == [0, 0, 1, 2], f"key k ran out of order: {of_k}"
    retry_at = [at for key, seq, at in runs if (key, seq) == ("k", 0)][1]
    other_at = next(at for key, _, at in runs if key == "other")
    assert other_at < retry_at, "another key waited behind k's retry"


def test_non_blocking_later_tasks_of_a_key_run_before_its_retry(
    make_settings: Callable[..., Settings], worker: Callable[..., ThreadWorker]
) -> None:
    runs = _run(make_settings(ordering="non_blocking", retry_tiers="1s"), worker)

    of_k = [seq for key, seq, _ in runs if key == "k"]
    assert of_k == [0, 1, 2, 0], f"non_blocking should not hold key k: {of_k}"


def test_key_ordered_needs_the_consumer_group_protocol() -> None:
    with pytest.raises(ValueError, match="key_ordered needs group_protocol=consumer"):
        Settings(ordering="key_ordered", group_protocol="classic")
