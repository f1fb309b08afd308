"""Whatever a handler does is its task's outcome, never the worker's: against a real broker.

Each test runs one misbehaving task, then a well-behaved task of the same key on the same worker,
and checks: the misbehaving task's status and reason on the status topic, the next task
succeeded, and the worker is still running (a Worker thread that has not raised, or a
``streamjobs consume`` process with the same PID). A dead worker thread, in turn, must stop the
worker with a non-zero exit at once.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from streamjobs import Producer, Settings, StatusView, TaskState, Worker
from streamjobs.errors import WorkerCrashed
from streamjobs.worker.attempt import Attempts
from tests.integration import misbehaving
from tests.integration.conftest import (
    ThreadWorker,
    WorkerProcesses,
    dead_letters,
    latest,
    status_history,
)
from tests.integration.misbehaving import AsyncMisbehave, Misbehave, registry
from tests.support import wait_for

pytestmark = pytest.mark.integration

REGISTRY = "tests.integration.misbehaving:registry"
FINAL = 60.0  # seconds; only reached when the behaviour under test is broken


@pytest.fixture(autouse=True)
def _release_blocked_handlers() -> Iterator[None]:
    misbehaving.RELEASE.clear()
    yield
    misbehaving.RELEASE.set()  # ends what a handler left blocked (hung calls, spawned threads)


def _final(settings: Settings, task_id: str, timeout: float = FINAL) -> StatusView:
    return wait_for(
        lambda: (v := latest(settings, task_id)) is not None and v.state.final and v,
        timeout,
        interval=0.2,
        message=f"task {task_id} to reach a final state",
    )


def _run_then_next(
    settings: Settings, task: Misbehave | AsyncMisbehave, *, max_attempts: int = 2
) -> tuple[StatusView, StatusView]:
    """Submit ``task`` then an ``ok`` task of the same key; both final views."""
    ok = type(task)(kind="ok", n=7)
    with Producer(settings) as producer:
        bad = producer.submit(task, key="same-key", max_attempts=max_attempts)
        good = producer.submit(ok, key="same-key")
    return _final(settings, bad.task_id), _final(settings, good.task_id)


def _assert_next_ran(view: StatusView) -> None:
    assert view.state is TaskState.SUCCEEDED
    assert view.result == 7


def _assert_retried_then_dead(settings: Settings, view: StatusView, error_type: str) -> None:
    """A failed attempt that followed the retry policy: one retry, then max_attempts."""
    assert view.state is TaskState.DEAD_LETTERED
    assert (view.reason, view.error_type, view.attempt) == ("max_attempts", error_type, 2)
    states = [(v.state, v.error_type) for v in status_history(settings, view.task_id)]
    assert (TaskState.RETRY_SCHEDULED, error_type) in states


@pytest.mark.parametrize(
    ("kind", "error_type"),
    [
        ("keyboard_interrupt", "KeyboardInterrupt"),
        ("system_exit", "SystemExit"),
        ("generator_exit", "GeneratorExit"),
        ("custom_base", "CustomBaseError"),
        ("mutate", "ValidationError"),
    ],
)
def test_a_handler_raising_any_base_exception_fails_its_attempt_and_the_worker_goes_on(
    settings: Settings, worker: Callable[..., ThreadWorker], kind: str, error_type: str
) -> None:
    running = worker(registry)
    bad, good = _run_then_next(settings, Misbehave(kind=kind))
    _assert_retried_then_dead(settings, bad, error_type)
    _assert_next_ran(good)
    assert running.running


@pytest.mark.parametrize(
    ("kind", "error_type"),
    [
        ("keyboard_interrupt", "KeyboardInterrupt"),
        ("system_exit", "SystemExit"),
        ("cancelled", "CancelledError"),
    ],
)
def test_an_async_handler_raising_a_base_exception_fails_its_attempt_and_the_loop_goes_on(
    settings: Settings, worker: Callable[..., ThreadWorker], kind: str, error_type: str
) -> None:
    running = worker(registry)
    bad, good = _run_then_next(settings, AsyncMisbehave(kind=kind))
    _assert_retried_then_dead(settings, bad, error_type)
    _assert_next_ran(good)
    assert running.running


@pytest.mark.parametrize(
    ("kind", "reason", "error_type"),
    [
        ("not_json", "bad_result", "BadResult"),
        ("cyclic", "bad_result", "BadResult"),
        ("too_large", "result_too_large", "ResultTooLarge"),
    ],
)
def test_a_result_that_cannot_be_stored_is_dead_lettered_at_once_with_its_reason(
    settings: Settings,
    worker: Callable[..., ThreadWorker],
    kind: str,
    reason: str,
    error_type: str,
) -> None:
    running = worker(registry)
    bad, good = _run_then_next(settings, Misbehave(kind=kind), max_attempts=4)
    assert (bad.state, bad.reason, bad.error_type, bad.attempt) == (
        TaskState.DEAD_LETTERED,
        reason,
        error_type,
        1,  # no retry: the same handler would return the same result
    )
    assert [d["reason"] for d in dead_letters(settings)] == [reason]
    _assert_next_ran(good)
    assert running.running


def test_a_hanging_handler_times_out_and_the_next_task_runs(
    make_settings: Callable[..., Settings], worker: Callable[..., ThreadWorker]
) -> None:
    settings = make_settings(task_timeout="500ms")
    running = worker(registry, settings)
    bad, good = _run_then_next(settings, Misbehave(kind="hang"))
    _assert_retried_then_dead(settings, bad, "HandlerTimeout")
    _assert_next_ran(good)
    assert running.running


@pytest.mark.parametrize("kind", ["spawn_thread", "print_megabytes", "hold_gil"])
def test_a_handler_that_spawns_threads_prints_megabytes_or_holds_the_gil_just_succeeds(
    settings: Settings, worker: Callable[..., ThreadWorker], kind: str
) -> None:
    running = worker(registry)
    started = time.monotonic()
    bad, good = _run_then_next(settings, Misbehave(kind=kind))
    assert bad.state is TaskState.SUCCEEDED, bad
    _assert_next_ran(good)
    assert running.running
    if kind == "hold_gil":  # the worker was frozen, not broken: it resumed where it was
        assert time.monotonic() - started >= misbehaving.GIL_SECONDS


# -- a real `streamjobs consume` process --------------------------------------------------------


@pytest.mark.parametrize("kind", ["keyboard_interrupt", "system_exit", "generator_exit"])
def test_a_consume_process_survives_a_handler_raising_base_exceptions_and_still_stops_on_sigint(
    settings: Settings, worker_process: WorkerProcesses, kind: str
) -> None:
    proc = worker_process.start(settings, REGISTRY)
    bad, good = _run_then_next(settings, Misbehave(kind=kind))
    assert bad.state is TaskState.DEAD_LETTERED, bad
    assert bad.reason == "max_attempts"
    _assert_next_ran(good)
    assert proc.poll() is None, worker_process.log_of(proc)  # the same process, never exited
    proc.send_signal(signal.SIGINT)  # the real signal still means: stop gracefully
    assert proc.wait(30.0) == 0, worker_process.log_of(proc)


def test_a_consume_process_whose_handler_left_a_thread_running_still_exits_on_sigterm(
    settings: Settings, worker_process: WorkerProcesses
) -> None:
    proc = worker_process.start(settings, REGISTRY)
    bad, good = _run_then_next(settings, Misbehave(kind="spawn_thread"))
    assert bad.state is TaskState.SUCCEEDED
    _assert_next_ran(good)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30.0) == 0, worker_process.log_of(proc)
    assert "thread(s) started by handlers: left-by-handler" in worker_process.log_of(proc)


def test_a_consume_process_whose_handler_closed_stdout_and_stderr_goes_on_logging(
    settings: Settings, worker_process: WorkerProcesses
) -> None:
    proc = worker_process.start(settings, REGISTRY)
    closed, _ = _run_then_next(settings, Misbehave(kind="close_stdio"))
    assert closed.state is TaskState.SUCCEEDED
    # the worker logs to its own copy of stderr: a dead letter is still logged
    dead, after = _run_then_next(settings, Misbehave(kind="not_json"))
    assert dead.reason == "bad_result"
    _assert_next_ran(after)
    assert proc.poll() is None
    assert "bad_result" in worker_process.log_of(proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30.0) == 0, worker_process.log_of(proc)


# -- a dead worker thread stops the worker --------------------------------------------------------


def test_a_consume_process_whose_event_loop_thread_died_exits_non_zero_at_once(
    settings: Settings, worker_process: WorkerProcesses
) -> None:
    proc = worker_process.start(settings, REGISTRY)
    with Producer(settings) as producer:
        producer.submit(AsyncMisbehave(kind="stop_loop"))
    wait_for(lambda: latest_running(settings) or proc.poll() is not None, FINAL, interval=0.1)
    died_at = time.monotonic()
    code = proc.wait(FINAL)
    assert code != 0, worker_process.log_of(proc)
    assert time.monotonic() - died_at < 5.0
    assert "streamjobs-asyncio" in worker_process.log_of(proc)


def latest_running(settings: Settings) -> bool:
    from tests.integration.conftest import statuses

    return any(v.state is TaskState.RUNNING for v in statuses(settings).values())


def test_a_worker_whose_task_thread_dies_raises_worker_crashed_within_two_seconds(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = threading.Event()

    def bug(*_args: Any) -> None:
        broken.set()
        raise RuntimeError("a bug in the worker's own bookkeeping")

    monkeypatch.setattr(Attempts, "run", bug)
    instance = Worker(settings, registry)
    errors: list[BaseException] = []
    ended = threading.Event()

    def run() -> None:
        try:
            instance.run()
        except BaseException as exc:
            errors.append(exc)
        ended.set()

    threading.Thread(target=run, name="worker-crashing", daemon=True).start()
    assert instance.assigned.wait(30.0)
    with Producer(settings) as producer:
        producer.submit(Misbehave(kind="ok"))
    assert broken.wait(FINAL)
    started = time.monotonic()
    assert ended.wait(FINAL)
    assert time.monotonic() - started < 2.0
    [error] = errors
    assert isinstance(error, WorkerCrashed), errors
    assert "a bug in the worker's own bookkeeping" in str(error)


def test_the_watchdog_stops_a_worker_whose_executor_thread_ended(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread that ends without passing through ``on_crash`` (an asynchronous exception,
    say) is found by the watchdog: here every executor thread returns at once."""
    from streamjobs.worker.executor import KeyedExecutor

    monkeypatch.setattr(KeyedExecutor, "_serve", lambda self: None)
    instance = Worker(settings, registry)
    started = time.monotonic()
    with pytest.raises(WorkerCrashed, match="streamjobs-task-0"):
        instance.run()
    assert time.monotonic() - started < 10.0  # the join of the group dominates
