"""Per-task timeouts against a real broker: a task past its deadline fails as HandlerTimeout,
follows the retry policy, and never stalls its partition beyond the timeout."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest

from streamjobs import (
    Producer,
    Settings,
    StatusView,
    Task,
    TaskRegistry,
    TaskState,
    Worker,
    status,
)
from streamjobs.topics import queue_topics
from tests.integration.conftest import (
    ThreadWorker,
    committed_offset,
    dead_letters,
    read_topic,
    statuses,
)
from tests.support import wait_for

pytestmark = pytest.mark.integration

TIMEOUT_S = 1.0
# how late the next task of a partition may start after a timed-out one began: its timeout plus
# the failure bookkeeping (retry record and status produced, not awaited) on a 2-CPU test box
MARGIN_S = 1.0


class Nap(Task):
    name: str


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at teardown: lets abandoned handler calls (blocked past their timeout) end."""
    event = threading.Event()
    yield event
    event.set()


def _run(instance: Worker, errors: list[BaseException]) -> None:
    try:
        instance.run()
    except BaseException as exc:
        errors.append(exc)


@contextmanager
def _collected_worker(registry: TaskRegistry, settings: Settings) -> Iterator[None]:
    """Run a Worker in a thread like the ``worker`` fixture, then stop it, drop it and collect
    garbage: whatever the stopped worker left open (async handlers get an event loop) fails this
    test, as ResourceWarning is an error, instead of whichever test happens to run next."""
    instance = Worker(settings, registry)
    errors: list[BaseException] = []
    thread = threading.Thread(
        target=_run, args=(instance, errors), name="worker-collected", daemon=True
    )
    thread.start()
    try:
        assert instance.assigned.wait(30.0), "worker got no partitions within 30 s"
        yield
    finally:
        instance.stop()
        thread.join(40.0)
    assert not thread.is_alive(), "worker did not stop"
    assert not errors, f"Worker.run() raised: {errors!r}"
    del instance, thread
    wait_for(
        lambda: not any(t.name == "streamjobs-asyncio" for t in threading.enumerate()),
        10.0,
        message="the stopped worker's event loop thread to end",
    )
    gc.collect()


def _history(settings: Settings, task_ids: list[str]) -> dict[str, list[StatusView]]:
    """Every status record written for ``task_ids``, oldest first (the topic is keyed by id)."""
    wanted = set(task_ids)
    found: dict[str, list[StatusView]] = defaultdict(list)
    for record in read_topic(settings, queue_topics(settings).status):
        if record.value and record.key and record.key.decode() in wanted:
            found[record.key.decode()].append(status.decode_status(record.value))
    return found


def _final(settings: Settings, task_id: str) -> StatusView | None:
    view = statuses(settings).get(task_id)
    final = (TaskState.SUCCEEDED, TaskState.DEAD_LETTERED)
    return view if view is not None and view.state in final else None


def test_sync_handler_past_its_timeout_fails_as_handler_timeout_without_stalling_its_partition(
    make_settings: Callable[..., Settings],
    worker: Callable[..., ThreadWorker],
    release: threading.Event,
) -> None:
    settings = make_settings(partitions=1, concurrency=1, max_attempts=2)
    started: dict[str, list[float]] = defaultdict(list)
    registry = TaskRegistry()

    @registry.handler(Nap, timeout=timedelta(seconds=TIMEOUT_S))
    def nap(task: Nap) -> str:
        started[task.name].append(time.monotonic())
        if task.name == "slow":
            release.wait(30.0)  # the work: far longer than the timeout
        return task.name

    worker(registry, settings)
    with Producer(settings) as producer:
        slow, fast = producer.submit_many([Nap(name="slow"), Nap(name="fast")])

    wait_for(lambda: _final(settings, fast.task_id), 30.0, message="the fast task to finish")
    dead = wait_for(lambda: _final(settings, slow.task_id), 30.0, message="the slow task to finish")

    # the partition moved on at the deadline: the next task did not wait for the abandoned call
    assert started["fast"][0] - started["slow"][0] < TIMEOUT_S + MARGIN_S, started
    assert dead.state is TaskState.DEAD_LETTERED
    assert dead.reason == "max_attempts"
    assert dead.error_type == "HandlerTimeout"
    assert dead.attempt == 2
    history = _history(settings, [slow.task_id, fast.task_id])
    slow_states = [(v.state, v.attempt, v.error_type) for v in history[slow.task_id]]
    assert slow_states == [  # its queued record is on the submitted topic
        (TaskState.RUNNING, 1, None),
        (TaskState.RETRY_SCHEDULED, 1, "HandlerTimeout"),
        (TaskState.RUNNING, 2, None),
        (TaskState.DEAD_LETTERED, 2, "HandlerTimeout"),
    ]
    assert history[fast.task_id][-1].state is TaskState.SUCCEEDED
    letters = [d for d in dead_letters(settings) if d["task_id"] == slow.task_id]
    assert [(d["reason"], d["error_type"], d["attempts"]) for d in letters] == [
        ("max_attempts", "HandlerTimeout", 2)
    ]
    main = queue_topics(settings).main
    wait_for(
        lambda: committed_offset(settings, main, 0) == fast.offset + 1,
        30.0,
        message="both main-topic offsets to be committed",
    )


def test_async_handler_past_the_default_timeout_is_cancelled_and_fails_as_handler_timeout(
    make_settings: Callable[..., Settings],
) -> None:
    # no per-handler timeout: the queue's task_timeout is the default that applies
    settings = make_settings(partitions=1, concurrency=1, task_timeout=f"{TIMEOUT_S}s")
    started: dict[str, float] = {}
    cleaned_up: dict[str, float] = {}
    cancelled = threading.Event()
    registry = TaskRegistry()

    @registry.handler(Nap, max_attempts=1)
    async def nap(task: Nap) -> str:
        started[task.name] = time.monotonic()
        try:
            if task.name == "slow":
                await asyncio.sleep(30.0)  # the work: far longer than the timeout
        except asyncio.CancelledError:
            cancelled.set()
            raise
        finally:
            cleaned_up[task.name] = time.monotonic()
        return task.name

    with _collected_worker(registry, settings):
        with Producer(settings) as producer:
            slow, fast = producer.submit_many([Nap(name="slow"), Nap(name="fast")])

        dead = wait_for(lambda: _final(settings, slow.task_id), 30.0, message="the slow task")
        done = wait_for(lambda: _final(settings, fast.task_id), 30.0, message="the fast task")

    assert cancelled.is_set(), "the timed-out coroutine was not cancelled"
    assert cleaned_up["slow"] - started["slow"] < TIMEOUT_S + MARGIN_S, "finally ran late"
    assert started["fast"] - started["slow"] < TIMEOUT_S + MARGIN_S
    assert dead.state is TaskState.DEAD_LETTERED
    assert (dead.reason, dead.error_type) == ("max_attempts", "HandlerTimeout")
    assert done.state is TaskState.SUCCEEDED
    assert done.result == "fast"


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_handler_raising_its_own_timeout_error_is_not_reported_as_handler_timeout(
    make_settings: Callable[..., Settings], kind: str
) -> None:
    settings = make_settings(partitions=1)
    registry = TaskRegistry()
    limit = timedelta(seconds=30)

    def fail(task: Nap) -> None:
        raise TimeoutError(f"upstream {task.name} did not answer")  # e.g. socket.timeout

    async def fail_async(task: Nap) -> None:
        fail(task)

    registry.handler(Nap, timeout=limit, max_attempts=1)(fail if kind == "sync" else fail_async)
    with _collected_worker(registry, settings):
        with Producer(settings) as producer:
            handle = producer.submit(Nap(name="api"))

        dead = wait_for(lambda: _final(settings, handle.task_id), 30.0, message="the failure")

    assert dead.state is TaskState.DEAD_LETTERED
    assert dead.reason == "max_attempts"
    assert dead.error_type == "TimeoutError"
    assert dead.error is not None
    assert "upstream api did not answer" in dead.error


def test_task_after_abandoned_hung_calls_runs_and_succeeds(
    make_settings: Callable[..., Settings],
    worker: Callable[..., ThreadWorker],
    release: threading.Event,
) -> None:
    """Sync calls that never return are abandoned at their deadline (CPython cannot interrupt
    them); they must not use up the worker's capacity so that healthy tasks time out unrun."""
    settings = make_settings(partitions=1, concurrency=1)
    ran: list[str] = []
    registry = TaskRegistry()

    @registry.handler(Nap, timeout=timedelta(seconds=0.5), max_attempts=1)
    def nap(task: Nap) -> str:
        ran.append(task.name)
        if task.name.startswith("hung"):
            release.wait(60.0)  # e.g. a read from a peer that never answers, without a timeout
        return task.name

    worker(registry, settings)
    hung = [Nap(name=f"hung-{n}") for n in range(8)]
    with Producer(settings) as producer:
        *hung_handles, healthy = producer.submit_many([*hung, Nap(name="healthy")])

    for handle in hung_handles:
        view = wait_for(lambda h=handle: _final(settings, h.task_id), 30.0, message="a hung task")
        assert view.error_type == "HandlerTimeout"
    view = wait_for(
        lambda: _final(settings, healthy.task_id), 30.0, message="the healthy task to finish"
    )

    assert "healthy" in ran, "the healthy task never started: it timed out waiting for a thread"
    assert (view.state, view.error_type) == (TaskState.SUCCEEDED, None)
    assert view.result == "healthy"
