"""streamjobs.worker.partitions: why a partition is paused, and that it resumes only with no
reason left.

No broker: a recording stand-in for the consumer notes every pause, resume and seek.
"""

from __future__ import annotations

from typing import Any

import pytest

from streamjobs.settings import Settings
from streamjobs.worker import partitions
from streamjobs.worker.partitions import Assigned, ParkingLimit, Partition, Pause, TopicKey

MAIN = "sj.default"
TIER = "sj.default.retry.1s"


class RecordingConsumer:
    """The three calls flow control makes, and the pause state librdkafka would keep."""

    def __init__(self) -> None:
        self.paused: set[TopicKey] = set()
        self.seeks: list[tuple[str, int, int]] = []

    def pause(self, tps: list[Any]) -> None:
        self.paused.update((tp.topic, tp.partition) for tp in tps)

    def resume(self, tps: list[Any]) -> None:
        self.paused.difference_update((tp.topic, tp.partition) for tp in tps)

    def seek(self, tp: Any) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))


@pytest.fixture
def consumer() -> RecordingConsumer:
    return RecordingConsumer()


def _assigned(*keys: TopicKey, max_parked: int = 4, max_in_flight: int = 10) -> Assigned:
    assigned = Assigned(Settings(max_parked=max_parked, max_in_flight=max_in_flight), MAIN)
    for key in keys:
        assigned[key] = Partition(key)
        assigned[key].next_offset = 100  # records before 100 were taken
    return assigned


# -- the pure decision ----------------------------------------------------------------------


def test_parking_limit_engages_at_the_limit_and_lets_go_at_half_of_it() -> None:
    limit = ParkingLimit(10)
    assert [limit.update(n) for n in (0, 5, 9)] == [False, False, False]
    assert limit.update(10) is True
    # between half and the limit it stays engaged: no flapping while a few tasks are released
    assert [limit.update(n) for n in (12, 9, 6)] == [True, True, True]
    assert limit.update(5) is False
    assert [limit.update(n) for n in (6, 9)] == [False, False], "re-engaged below the limit"
    assert limit.update(11) is True


def test_parking_limit_of_one_engages_on_the_first_parked_task_and_lets_go_at_none() -> None:
    limit = ParkingLimit(1)
    assert limit.update(0) is False
    assert limit.update(1) is True
    assert limit.update(1) is True
    assert limit.update(0) is False


def test_max_parked_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_parked"):
        Settings(max_parked=0)
    assert Settings().max_parked == 1000


# -- applying it to partitions --------------------------------------------------------------


def test_parking_pauses_only_main_topic_partitions(consumer: RecordingConsumer) -> None:
    assigned = _assigned((MAIN, 0), (MAIN, 1), (TIER, 0), (TIER, 1), max_parked=4)

    assigned.limit_parking(consumer, 3)
    assert consumer.paused == set()
    assigned.limit_parking(consumer, 4)
    assert consumer.paused == {(MAIN, 0), (MAIN, 1)}, "retry tiers must keep flowing"
    assert assigned[(TIER, 0)].pauses == set()

    assigned.limit_parking(consumer, 3)
    assert consumer.paused == {(MAIN, 0), (MAIN, 1)}, "resumed above half the limit"
    assigned.limit_parking(consumer, 2)
    assert consumer.paused == set()
    assert sorted(consumer.seeks) == [(MAIN, 0, 100), (MAIN, 1, 100)]


@pytest.mark.parametrize("parking_ends_first", [True, False])
def test_a_partition_paused_for_parking_and_backpressure_resumes_only_when_both_end(
    consumer: RecordingConsumer, monkeypatch: pytest.MonkeyPatch, parking_ends_first: bool
) -> None:
    monkeypatch.setattr(partitions, "_PAUSE_AFTER_S", -1.0)  # pause on the first full look
    assigned = _assigned((MAIN, 0), (TIER, 0), max_parked=4, max_in_flight=10)
    assigned.limit_parking(consumer, 4)
    assigned.apply_backpressure(consumer, 10)
    assert assigned[(MAIN, 0)].pauses == {Pause.PARKING, Pause.BACKPRESSURE}
    assert consumer.paused == {(MAIN, 0), (TIER, 0)}

    if parking_ends_first:
        assigned.limit_parking(consumer, 0)
    else:
        assigned.apply_backpressure(consumer, 0)
    assert (MAIN, 0) in consumer.paused, "resumed while one reason was still there"
    assert consumer.seeks == ([] if parking_ends_first else [(TIER, 0, 100)])

    if parking_ends_first:
        assigned.apply_backpressure(consumer, 0)
    else:
        assigned.limit_parking(consumer, 0)
    assert consumer.paused == set()
    assert (MAIN, 0, 100) in consumer.seeks


def test_a_held_tier_partition_stays_paused_past_its_due_time_while_backpressure_lasts(
    consumer: RecordingConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(partitions, "_PAUSE_AFTER_S", -1.0)
    assigned = _assigned((TIER, 0), max_in_flight=10)
    part = assigned[(TIER, 0)]
    assigned.hold(consumer, part, 120, until_ms=0)  # due at once
    assigned.apply_backpressure(consumer, 10)

    assigned.resume_due(consumer)
    assert part.held_until_ms is None
    assert consumer.paused == {(TIER, 0)}, "the hold ended but the executor is still full"

    assigned.apply_backpressure(consumer, 5)
    assert consumer.paused == set()
    assert consumer.seeks == [(TIER, 0, 120)], "the held head must be read again"


def test_a_main_partition_assigned_during_a_parking_pause_joins_it_at_its_first_record(
    consumer: RecordingConsumer,
) -> None:
    assigned = _assigned((MAIN, 0), (TIER, 1), max_parked=2)
    assigned.limit_parking(consumer, 2)
    assigned[(MAIN, 1)] = late = Partition((MAIN, 1))

    assert assigned.refuse(consumer, late, 40) is True
    assert late.pauses == {Pause.PARKING}
    assert assigned.refuse(consumer, late, 41) is True, "a record of a paused partition"
    assert assigned.refuse(consumer, assigned[(TIER, 1)], 7) is False, "tiers are not refused"

    assigned.limit_parking(consumer, 0)
    assert consumer.paused == set()
    assert (MAIN, 1, 40) in consumer.seeks, "must resume at the first record it refused"


def test_records_of_a_partition_paused_before_anything_was_taken_are_read_again(
    consumer: RecordingConsumer,
) -> None:
    assigned = _assigned(max_parked=1)
    assigned[(MAIN, 0)] = part = Partition((MAIN, 0))  # nothing taken: next_offset unknown
    assigned.limit_parking(consumer, 1)

    assert assigned.refuse(consumer, part, 9) is True
    assigned.limit_parking(consumer, 0)
    assert consumer.seeks == [(MAIN, 0, 9)]


def test_partitions_given_up_leave_no_pause_behind(consumer: RecordingConsumer) -> None:
    assigned = _assigned((MAIN, 0), (MAIN, 1), (TIER, 0), max_parked=1)
    assigned.limit_parking(consumer, 1)
    assigned.hold(consumer, assigned[(TIER, 0)], 5, until_ms=2**62)
    leaving = [assigned.pop((MAIN, 1)), assigned.pop((TIER, 0))]

    assigned.drop_pauses(consumer, leaving)

    assert consumer.paused == {(MAIN, 0)}, "a re-assigned partition would start paused"
    assert all(not p.pauses for p in leaving)
    assigned.limit_parking(consumer, 0)
    assert consumer.paused == set()
