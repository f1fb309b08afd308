"""What a handler hands back, as the worker sees it, without a broker: results that cannot be
stored are ``bad_result``/``result_too_large``, an async handler's BaseExceptions reach the
caller's thread and leave the event loop running, and a dead worker thread is noticed."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from streamjobs import Settings, Task, TaskRegistry
from streamjobs.envelope import Envelope
from streamjobs.errors import BadResult, ResultTooLarge, WorkerCrashed
from streamjobs.retry import DeadLetter, RetryAt, RetryPolicy, decide
from streamjobs.schemastore import SchemaStore
from streamjobs.status import AttemptStatuses
from streamjobs.topics import queue_topics
from streamjobs.worker.executor import KeyedExecutor
from streamjobs.worker.handler_call import HandlerRunner, result_json
from streamjobs.worker.outcomes import Builder
from streamjobs.worker.watchdog import Watchdog

DEADLINE = 10.0


class Echo(Task):
    text: str


def _cycle() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


def _deep(levels: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(
    "make",
    [object, lambda: {1j: 1}, _cycle, lambda: _deep(100_000), lambda: {"a": {1, 2}}],
    ids=["object", "complex-key", "cycle", "deep", "set"],
)
def test_a_result_json_cannot_hold_is_bad_result(make: Any) -> None:
    with pytest.raises(BadResult) as raised:
        result_json(make())
    assert raised.value.reason == "bad_result"


def test_results_json_can_hold_and_models_are_encoded() -> None:
    assert result_json(None) is None
    assert result_json({"ok": [1, "x"]}) == '{"ok": [1, "x"]}'
    assert result_json(Echo(text="hi")) == '{"text":"hi"}'


@pytest.mark.parametrize(
    ("error", "decision"),
    [
        (KeyboardInterrupt(), RetryAt),
        (SystemExit(2), RetryAt),
        (GeneratorExit(), RetryAt),
        (BadResult("x"), DeadLetter),
        (ResultTooLarge("x"), DeadLetter),
    ],
)
def test_base_exceptions_follow_the_policy_and_unstorable_results_dead_letter_at_once(
    error: BaseException, decision: type
) -> None:
    policy = RetryPolicy(max_attempts=4, tiers=(timedelta(seconds=1),))
    assert isinstance(decide(policy, 1, error, 0), decision)


def _envelope(**changes: Any) -> Envelope:
    envelope = Envelope(
        task_id="t-1",
        task="Echo",
        queue="default",
        payload=b"\x02a",
        payload_schema=b"\x00" * 8,
        submitted_at_ms=1,
    )
    return replace(envelope, **changes)


def test_a_succeeded_status_too_large_for_a_record_is_result_too_large() -> None:
    settings = Settings(max_message_bytes=4096, dlq_max_bytes=2048)
    build = Builder(settings, queue_topics(settings), "w-1")
    envelope = _envelope()
    where = {"topic": "t", "partition": 0, "offset": 1, "worker_id": "w", "trace_id": None}
    statuses = AttemptStatuses(envelope, where)
    assert build.succeeded(envelope, statuses, '"' + "x" * 3000 + '"').value
    with pytest.raises(ResultTooLarge, match="max_message_bytes=4096") as raised:
        build.succeeded(envelope, statuses, '"' + "x" * 4000 + '"')
    assert raised.value.reason == "result_too_large"


def _runner_with(handler_func: Any) -> tuple[HandlerRunner, Any]:
    registry = TaskRegistry()
    registry.handler(Echo)(handler_func)
    handler = registry.get("Echo")
    settings = Settings()
    runner = HandlerRunner(settings, SchemaStore(settings), needs_loop=True)
    return runner, handler


@pytest.mark.parametrize(
    "error",
    [KeyboardInterrupt("k"), SystemExit(3), asyncio.CancelledError("mine"), GeneratorExit()],
    ids=repr,
)
def test_an_async_handlers_base_exception_reaches_the_caller_and_the_loop_keeps_running(
    error: BaseException,
) -> None:
    async def handler(task: Echo) -> str:
        if task.text == "raise":
            raise error
        return task.text

    runner, registered = _runner_with(handler)
    try:
        envelope = _envelope(
            payload=registered.task_type.encode(Echo(text="raise")),
            payload_schema=registered.task_type.fingerprint,
        )
        with pytest.raises(type(error)):
            runner.call(registered, envelope, 0)
        assert runner.dead_threads() == []
        envelope = replace(envelope, payload=registered.task_type.encode(Echo(text="fine")))
        assert runner.call(registered, envelope, 0) == '"fine"'
    finally:
        runner.close()


def test_a_runner_whose_event_loop_stopped_reports_its_thread_dead() -> None:
    async def handler(task: Echo) -> str:
        asyncio.get_running_loop().stop()
        return task.text

    runner, registered = _runner_with(handler)
    try:
        envelope = _envelope(
            payload=registered.task_type.encode(Echo(text="x")),
            payload_schema=registered.task_type.fingerprint,
        )
        # the call itself may never return (the loop stopped before completing its future):
        # that abandoned wait is what the worker's watchdog exists for
        threading.Thread(target=runner.call, args=(registered, envelope, 0), daemon=True).start()
        assert runner._loop_thread is not None
        runner._loop_thread.join(DEADLINE)
        assert runner.dead_threads() == ["streamjobs-asyncio"]
    finally:
        runner.close()


# -- executor and watchdog -----------------------------------------------------------------------


def test_anything_escaping_a_work_item_goes_to_on_crash_and_the_pool_keeps_serving() -> None:
    crashes: list[tuple[str, BaseException]] = []
    ran = threading.Event()
    pool = KeyedExecutor(1, name="probe", on_crash=lambda t, e: crashes.append((t, e)))
    try:
        pool.submit("k", lambda: (_ for _ in ()).throw(KeyboardInterrupt("escaped")))
        pool.submit("k", ran.set)
        assert ran.wait(DEADLINE)
        assert [(t, type(e)) for t, e in crashes] == [("probe-0", KeyboardInterrupt)]
        assert pool.dead_threads() == []
    finally:
        pool.shutdown(DEADLINE)
    assert pool.dead_threads() == []  # a shut-down pool's threads ended on purpose


def test_a_pool_thread_that_ended_is_reported_dead(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(KeyedExecutor, "_serve", lambda self: None)
    pool = KeyedExecutor(2, name="probe")
    for thread in pool._threads:
        thread.join(DEADLINE)
    assert pool.dead_threads() == ["probe-0", "probe-1"]


def test_the_watchdog_turns_the_first_dead_thread_into_worker_crashed() -> None:
    dead: list[str] = []
    watchdog = Watchdog([lambda: [], lambda: list(dead)], interval=0.0)
    assert watchdog.check() is None
    dead.append("streamjobs-task-3")
    crash = watchdog.check()
    assert isinstance(crash, WorkerCrashed)
    assert "streamjobs-task-3" in str(crash)


def test_the_watchdog_checks_at_most_once_per_interval() -> None:
    calls: list[int] = []
    watchdog = Watchdog([lambda: calls.append(1) or []], interval=3600.0)
    watchdog.check()
    watchdog.check()
    assert len(calls) == 1
