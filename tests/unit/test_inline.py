"""Inline mode: tasks run at once, but every one through the real encode and decode path."""

from __future__ import annotations

from datetime import timedelta

import pytest

from streamjobs import Discard, Retry, Task, TaskFailed, TaskRegistry, TaskState
from streamjobs.errors import EncodeError, PayloadTooLarge
from streamjobs.settings import Settings
from streamjobs.testing import InlineProducer


class Greet(Task):
    name: str


class Flaky(Task):
    fail_times: int


class Count(Task):
    n: int


class GreetV2(Task):
    """The worker's newer model of Greet: a required field the submitter never writes."""

    task_name = "Greet"
    address: str


def test_inline_submit_runs_the_handler_with_the_decoded_task_and_keeps_its_json_result() -> None:
    registry = TaskRegistry()
    seen: list[Greet] = []

    @registry.handler(Greet)
    def greet(task: Greet) -> dict[str, str]:
        seen.append(task)
        return {"hello": task.name}

    run = InlineProducer(registry).submit(Greet(name="ada"), key="k", task_id="t1")

    assert run.state is TaskState.SUCCEEDED
    assert run.wait() == {"hello": "ada"}
    assert (run.task_id, run.key, run.task) == ("t1", "k", Greet.task_name)
    assert seen == [Greet(name="ada")]
    assert seen[0] is not None


def test_a_value_the_wire_format_cannot_carry_fails_at_submit_like_the_real_producer() -> None:
    registry = TaskRegistry()
    registry.handler(Count)(lambda task: None)

    with pytest.raises(EncodeError):
        InlineProducer(registry).submit(Count(n=2**70))  # over Avro's long


def test_a_handler_model_that_cannot_read_the_submitted_schema_dead_letters_the_task() -> None:
    registry = TaskRegistry()
    registry.handler(GreetV2)(lambda task: task.address)

    run = InlineProducer(registry).submit(Greet(name="ada"))

    assert run.state is TaskState.DEAD_LETTERED
    assert run.reason is not None
    assert run.attempts[-1].error_type is not None


def test_failing_attempts_are_retried_up_to_max_attempts_then_dead_lettered() -> None:
    registry = TaskRegistry()

    @registry.handler(Flaky)
    def flaky(task: Flaky) -> None:
        raise ValueError("boom")

    run = InlineProducer(registry).submit(Flaky(fail_times=9), max_attempts=3)

    assert [a.state for a in run.attempts] == [
        TaskState.RETRY_SCHEDULED,
        TaskState.RETRY_SCHEDULED,
        TaskState.DEAD_LETTERED,
    ]
    assert run.reason == "max_attempts"
    assert run.attempts[0].error_type == "ValueError"
    with pytest.raises(TaskFailed, match="boom"):
        run.wait()


def test_a_task_that_succeeds_on_its_second_attempt_reports_both_attempts() -> None:
    registry = TaskRegistry()
    calls: list[int] = []

    @registry.handler(Flaky)
    def flaky(task: Flaky) -> int:
        calls.append(1)
        if len(calls) <= task.fail_times:
            raise Retry(delay=timedelta(seconds=7))
        return len(calls)

    run = InlineProducer(registry).submit(Flaky(fail_times=1))

    assert run.result == 2
    assert run.attempts[0].retry_in == timedelta(seconds=7)
    assert [a.attempt for a in run.attempts] == [1, 2]


def test_discard_dead_letters_at_once_with_its_reason() -> None:
    registry = TaskRegistry()

    @registry.handler(Greet)
    def greet(task: Greet) -> None:
        raise Discard("unknown_user")

    run = InlineProducer(registry).submit(Greet(name="x"))

    assert run.state is TaskState.DEAD_LETTERED
    assert run.reason == "unknown_user"
    assert len(run.attempts) == 1


def test_a_task_without_a_handler_is_dead_lettered_as_unknown_task() -> None:
    run = InlineProducer(TaskRegistry()).submit(Greet(name="x"))

    assert run.reason == "unknown_task"


def test_a_result_the_status_topic_cannot_hold_is_a_failed_attempt() -> None:
    registry = TaskRegistry()

    @registry.handler(Greet)
    def greet(task: Greet) -> object:
        return object()

    run = InlineProducer(registry).submit(Greet(name="x"))

    assert run.reason == "bad_result"


def test_an_async_handler_runs_inline_too() -> None:
    registry = TaskRegistry()

    @registry.handler(Greet)
    async def greet(task: Greet) -> str:
        return task.name.upper()

    assert InlineProducer(registry).submit(Greet(name="ada")).wait() == "ADA"


def test_a_task_over_max_message_bytes_is_refused_at_submit() -> None:
    registry = TaskRegistry()
    registry.handler(Greet)(lambda task: None)
    small = Settings(topic_prefix="inline", max_message_bytes=1024, dlq_max_bytes=1024)

    with pytest.raises(PayloadTooLarge):
        InlineProducer(registry, small).submit(Greet(name="x" * 2000))


def test_every_inline_run_is_kept_in_submit_order() -> None:
    registry = TaskRegistry()
    registry.handler(Greet)(lambda task: task.name)
    producer = InlineProducer(registry)

    producer.submit_many([Greet(name="a"), Greet(name="b")])

    assert [r.result for r in producer.runs] == ["a", "b"]


def test_inline_handlers_see_their_current_task_never_cancelled() -> None:
    from streamjobs import current_task

    registry = TaskRegistry()

    @registry.handler(Greet)
    def greet(task: Greet) -> list[object]:
        current = current_task()
        return [current.task_id, current.attempt, current.cancelled]

    @registry.handler(Count)
    async def count(task: Count) -> list[object]:
        return [current_task().task_id, current_task().cancelled]

    assert InlineProducer(registry).submit(Greet(name="a"), task_id="t1").wait() == ["t1", 1, False]
    assert InlineProducer(registry).submit(Count(n=1), task_id="t2").wait() == ["t2", False]
