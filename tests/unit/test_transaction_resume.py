"""A transactional call resumed after retriable failures stays within its time budget."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from confluent_kafka import KafkaError, KafkaException

from streamjobs.client.producer import Unreturned, bounded, resumed


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _timing_out(clock: Clock, seen: list[float], spent: float) -> Callable[[float], None]:
    def call(left: float) -> None:
        seen.append(left)
        clock.now += min(left, spent)
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "timed out", retriable=True))

    return call


def test_each_resume_gets_what_is_left_of_the_budget_and_none_starts_after_it() -> None:
    clock, seen = Clock(), list[float]()
    with pytest.raises(KafkaException):
        resumed(_timing_out(clock, seen, spent=6.0), 10.0, clock)
    assert seen == [10.0, 4.0]  # the second try used the rest: no third
    assert clock.now == 110.0


def test_quick_retriable_failures_are_resumed_a_few_times_only() -> None:
    clock, seen = Clock(), list[float]()
    with pytest.raises(KafkaException):
        resumed(_timing_out(clock, seen, spent=0.5), 10.0, clock)
    assert seen == [10.0, 9.5, 9.0]


def test_a_resumed_call_that_succeeds_returns_and_a_fatal_one_is_not_resumed() -> None:
    clock, calls = Clock(), list[float]()

    def second_time_lucky(left: float) -> None:
        calls.append(left)
        if len(calls) == 1:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "t", retriable=True))

    resumed(second_time_lucky, 10.0, clock)
    assert len(calls) == 2

    fenced = list[float]()

    def fatal(left: float) -> None:
        fenced.append(left)
        raise KafkaException(KafkaError(KafkaError._FENCED, "fenced", fatal=True))

    with pytest.raises(KafkaException):
        resumed(fatal, 10.0, clock)
    assert len(fenced) == 1


def test_a_bounded_call_returns_or_raises_what_it_raised() -> None:
    done = list[int]()
    bounded(lambda: done.append(1), 5.0)
    assert done == [1]

    def fails() -> None:
        raise KafkaException(KafkaError(KafkaError._FENCED, "fenced", fatal=True))

    with pytest.raises(KafkaException):
        bounded(fails, 5.0)


def test_a_call_that_does_not_return_in_time_is_given_up_and_left_running() -> None:
    # librdkafka's send_offsets_to_transaction can block far past its timeout when the group
    # coordinator's broker is gone (confluentinc/librdkafka#5456): the poll thread must not
    release = threading.Event()
    finished = threading.Event()

    def stuck() -> None:
        release.wait(30.0)
        finished.set()

    with pytest.raises(Unreturned, match=r"did not return within 0\.2s"):
        bounded(stuck, 0.2)
    assert not finished.is_set()  # still running on its own thread
    release.set()
    assert finished.wait(5.0)
