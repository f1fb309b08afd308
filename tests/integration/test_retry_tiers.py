"""Retry tiers: failed attempts move through the tier topics, then to the dead-letter topic.

Tiers here are 300ms and 600ms, max_attempts 3 (see ``TEST_SETTINGS``).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import timedelta

import pytest

from streamjobs import (
    Discard,
    Producer,
    Retry,
    Settings,
    Task,
    TaskFailed,
    TaskRegistry,
    TaskState,
)
from streamjobs.envelope import Envelope, decode_envelope
from streamjobs.topics import queue_topics
from tests.integration.conftest import (
    ThreadWorker,
    dead_letters,
    envelopes,
    key_for_partition,
    latest,
    read_topic,
    state_of,
)
from tests.support import wait_for

pytestmark = pytest.mark.integration

TIER_1, TIER_2 = timedelta(milliseconds=300), timedelta(milliseconds=600)


class Job(Task):
    name: str


class Attempts:
    """What a handler saw: wall-clock start time (ms) of every call, per task name."""

    def __init__(self) -> None:
        self.started: dict[str, list[int]] = defaultdict(list)
        self._lock = threading.Lock()

    def record(self, name: str) -> int:
        with self._lock:
            self.started[name].append(time.time_ns() // 1_000_000)
            return len(self.started[name])

    def count(self, name: str) -> int:
        with self._lock:
            return len(self.started[name])


def _on_topic(settings: Settings, topic: str, task_id: str) -> list[Envelope]:
    return [envelope for _, envelope in envelopes(settings, topic) if envelope.task_id == task_id]


def test_task_failing_twice_then_succeeding_ends_succeeded_at_attempt_3_via_two_tiers(
    settings: Settings, producer: Producer, worker: Callable[..., ThreadWorker]
) -> None:
    names = queue_topics(settings)
    attempts = Attempts()
    registry = TaskRegistry()

    @registry.handler(Job)
    def flaky(task: Job) -> str:
        attempt = attempts.record(task.name)
        if attempt < 3:
            raise ConnectionError(f"attempt {attempt} failed")
        return f"ok after {attempt}"

    worker(registry)
    handle = producer.submit(Job(name="flaky"), key="k1")

    assert handle.wait(30.0) == "ok after 3"
    view = latest(settings, handle.task_id)
    assert view is not None
    assert view.state is TaskState.SUCCEEDED
    assert view.attempt == 3
    assert view.topic == names.retry[TIER_2]
    (original,) = _on_topic(settings, names.main, handle.task_id)
    (second,) = _on_topic(settings, names.retry[TIER_1], handle.task_id)
    (third,) = _on_topic(settings, names.retry[TIER_2], handle.task_id)
    assert (second.attempt, third.attempt) == (2, 3)
    assert second.payload == third.payload == original.payload
    assert second.origin.topic == names.main
    assert second.origin.offset == handle.offset
    assert third.origin.topic == names.retry[TIER_1]
    # each attempt started no earlier than the due time its retry record carried
    starts = attempts.started["flaky"]
    assert starts[1] >= second.not_before_ms
    assert starts[2] >= third.not_before_ms
    assert second.not_before_ms - starts[0] >= TIER_1 // timedelta(milliseconds=1)
    assert third.not_before_ms - starts[1] >= TIER_2 // timedelta(milliseconds=1)
    assert dead_letters(settings) == []


def test_always_failing_task_is_dead_lettered_after_max_attempts_with_its_original_bytes(
    settings: Settings, producer: Producer, worker: Callable[..., ThreadWorker]
) -> None:
    names = queue_topics(settings)
    attempts = Attempts()
    registry = TaskRegistry()

    @registry.handler(Job)
    def broken(task: Job) -> None:
        attempts.record(task.name)
        raise ValueError("never works")

    worker(registry)
    handle = producer.submit(Job(name="broken"), key="k2")

    with pytest.raises(TaskFailed) as failed:
        handle.wait(30.0)
    assert failed.value.reason == "max_attempts"
    assert attempts.count("broken") == settings.max_attempts == 3
    (letter,) = dead_letters(settings)
    assert letter["reason"] == "max_attempts"
    assert letter["task_id"] == handle.task_id
    assert letter["attempts"] == 3
    assert letter["error_type"] == "ValueError"
    assert letter["error"] == "never works"
    assert letter["truncated"] is False
    assert letter["origin_topic"] == names.retry[TIER_2]
    # the original bytes are exactly those of the record the last attempt was read from
    (source,) = [
        r
        for r in read_topic(settings, letter["origin_topic"])
        if (r.partition, r.offset) == (letter["origin_partition"], letter["origin_offset"])
    ]
    assert letter["original_value"] == source.value
    assert letter["original_size"] == len(source.value or b"")
    assert letter["origin_key"] == b"k2"
    (first,) = _on_topic(settings, names.main, handle.task_id)
    assert decode_envelope(letter["original_value"]).payload == first.payload
    view = latest(settings, handle.task_id)
    assert view is not None
    assert view.state is TaskState.DEAD_LETTERED
    assert view.topic == names.dlq


def test_retry_with_delay_runs_the_next_attempt_no_earlier_than_that_delay(
    settings: Settings, producer: Producer, worker: Callable[..., ThreadWorker]
) -> None:
    names = queue_topics(settings)
    attempts = Attempts()
    registry = TaskRegistry()
    asked = timedelta(milliseconds=700)

    @registry.handler(Job)
    def later(task: Job) -> int:
        if attempts.record(task.name) == 1:
            raise Retry(delay=asked)
        return attempts.count(task.name)

    worker(registry)
    handle = producer.submit(Job(name="later"))

    assert handle.wait(30.0) == 2
    # 700 ms fits the 600 ms tier best (never a shorter wait than asked: it may hop on)
    (retried,) = _on_topic(settings, names.retry[TIER_2], handle.task_id)
    first, second = attempts.started["later"]
    assert retried.not_before_ms - first >= asked // timedelta(milliseconds=1)
    assert second >= retried.not_before_ms
    assert dead_letters(settings) == []


def test_discard_dead_letters_the_task_at_once_with_its_reason(
    settings: Settings, producer: Producer, worker: Callable[..., ThreadWorker]
) -> None:
    names = queue_topics(settings)
    attempts = Attempts()
    registry = TaskRegistry()

    @registry.handler(Job)
    def refuse(task: Job) -> None:
        attempts.record(task.name)
        raise Discard("duplicate_order")

    worker(registry)
    handle = producer.submit(Job(name="refused"))

    with pytest.raises(TaskFailed) as failed:
        handle.wait(30.0)
    assert failed.value.reason == "duplicate_order"
    (letter,) = dead_letters(settings)
    assert letter["reason"] == "duplicate_order"
    assert letter["attempts"] == 1
    assert letter["origin_topic"] == names.main
    assert attempts.count("refused") == 1
    assert all(read_topic(settings, topic) == [] for topic in names.retry.values())


def test_non_retryable_exception_goes_straight_to_the_dead_letter_topic(
    settings: Settings, producer: Producer, worker: Callable[..., ThreadWorker]
) -> None:
    names = queue_topics(settings)
    attempts = Attempts()
    registry = TaskRegistry()

    @registry.handler(Job, non_retryable=(PermissionError,))
    def forbidden(task: Job) -> None:
        attempts.record(task.name)
        raise PermissionError("not allowed")

    worker(registry)
    handle = producer.submit(Job(name="forbidden"))

    with pytest.raises(TaskFailed) as failed:
        handle.wait(30.0)
    assert failed.value.reason == "non_retryable"
    assert failed.value.error_type == "PermissionError"
    (letter,) = dead_letters(settings)
    assert letter["reason"] == "non_retryable"
    assert letter["attempts"] == 1
    assert letter["error_type"] == "PermissionError"
    assert attempts.count("forbidden") == 1
    assert all(read_topic(settings, topic) == [] for topic in names.retry.values())


@pytest.mark.slow
def test_not_yet_due_retry_record_does_not_delay_an_unrelated_key_on_the_main_topic(
    make_settings: Callable[..., Settings], worker: Callable[..., ThreadWorker]
) -> None:
    tier = timedelta(seconds=3)
    settings = make_settings(retry_tiers="3s")
    names = queue_topics(settings)
    attempts = Attempts()
    registry = TaskRegistry()

    @registry.handler(Job)
    def job(task: Job) -> int:
        attempt = attempts.record(task.name)
        if task.name == "failing" and attempt == 1:
            raise ConnectionError("first attempt fails")
        return attempt

    worker(registry, settings)
    with Producer(settings) as producer:
        failing = producer.submit(Job(name="failing"), key=key_for_partition(0, 3, "failing"))
        wait_for(
            lambda: state_of(settings, failing.task_id) == "retry_scheduled",
            30.0,
            message="the failing task's retry to be scheduled",
        )
        # unrelated keys on the main topic, one of them on the same partition number as the
        # held tier partition: each runs at once while the retry record waits out its tier
        latencies = []
        for n in range(3):
            key = key_for_partition(n, 3, f"other{n}")
            handle = producer.submit(Job(name=f"other{n}"), key=key)
            assert handle.wait(10.0) == 1
            latencies.append(attempts.started[f"other{n}"][0] - handle.submitted_at_ms)

        assert failing.wait(30.0) == 2
    (retried,) = _on_topic(settings, names.retry[tier], failing.task_id)
    retry_started = attempts.started["failing"][1]
    assert retry_started >= retried.not_before_ms
    assert all(attempts.started[f"other{n}"][0] < retry_started for n in range(3))
    assert max(latencies) < 1000, f"submit-to-start latencies (ms): {latencies}"
