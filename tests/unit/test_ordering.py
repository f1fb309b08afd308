"""streamjobs.worker.keyorder: the key_ordered gate parks tasks behind a retry and counts them."""

from __future__ import annotations

from streamjobs.worker.keyorder import KeyGate


def test_tasks_of_a_key_in_retry_are_parked_and_released_in_order_when_it_ends() -> None:
    gate = KeyGate()
    ran: list[int] = []
    assert gate.park_if_blocked((0, b"k"), lambda: ran.append(0)) is False, "nothing in retry"
    gate.retry_scheduled((0, b"k"))
    for n in (1, 2, 3):
        assert gate.park_if_blocked((0, b"k"), lambda n=n: ran.append(n)) is True
    assert gate.park_if_blocked((0, b"other"), lambda: ran.append(99)) is False
    assert gate.parked() == 3

    for release in gate.retry_finished((0, b"k")):
        release()

    assert ran == [1, 2, 3]
    assert gate.parked() == 0


def test_parked_count_waits_for_the_last_retry_of_a_key() -> None:
    gate = KeyGate()
    gate.retry_scheduled((0, b"k"))
    gate.retry_scheduled((0, b"k"))
    gate.park_if_blocked((0, b"k"), lambda: None)
    assert gate.retry_finished((0, b"k")) == []
    assert gate.parked() == 1
    assert len(gate.retry_finished((0, b"k"))) == 1
    assert gate.parked() == 0


def test_forgetting_partitions_drops_their_parked_tasks_from_the_count() -> None:
    gate = KeyGate()
    for partition in (0, 1):
        gate.retry_scheduled((partition, b"k"))
        for _ in range(3):
            gate.park_if_blocked((partition, b"k"), lambda: None)
    assert gate.parked() == 6

    gate.forget([1])

    assert gate.parked() == 3
    assert gate.park_if_blocked((1, b"k"), lambda: None) is False, "partition 1's retry lingers"
    assert len(gate.retry_finished((0, b"k"))) == 3
    assert gate.parked() == 0
