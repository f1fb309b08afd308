"""Submitting threads share one poller: while one thread serves librdkafka's delivery reports,
the others sleep on their own record's event and are woken by its report (never by a timer, nor
by another thread's flush); a thread whose records are confirmed hands the polling over."""

from __future__ import annotations

import threading
import time

import pytest

from streamjobs import client
from streamjobs import deliveries as deliveries_module
from streamjobs.deliveries import Deliveries, Pending
from tests.support import wait_for


class CountingClient:
    """Stands in for the librdkafka producer: counts polls; a poll serves what ``serve`` holds."""

    def __init__(self) -> None:
        self.polls = 0
        self.serve: list[Pending] = []

    def poll(self, timeout: float) -> int:
        self.polls += 1
        served, self.serve = self.serve, []
        for pending in served:
            pending.report(client.Delivery(None, 0, 1))
        if not served:
            time.sleep(timeout)  # nothing arrived within the timeout
        return len(served)


def _deliveries(counting: CountingClient) -> Deliveries:
    return Deliveries(lambda: counting)  # type: ignore[arg-type, return-value]


def test_a_submitter_sleeps_until_another_threads_poll_delivers_its_report() -> None:
    counting = CountingClient()
    deliveries = _deliveries(counting)
    pending = Pending()
    deliveries._polling.acquire()  # another submitting thread is serving the reports
    waiter = threading.Thread(target=deliveries.wait, args=([pending], time.monotonic() + 30))
    waiter.start()
    wait_for(lambda: pending.wake is not None, 5.0)  # asleep on its own event

    pending.report(client.Delivery(None, 0, 7))  # the serving thread's poll delivers it
    waiter.join(5.0)
    deliveries._polling.release()

    assert not waiter.is_alive()
    assert counting.polls == 0


def test_a_lone_submitter_serves_its_own_reports() -> None:
    counting = CountingClient()
    pending = Pending()
    counting.serve = [pending]

    _deliveries(counting).wait([pending], time.monotonic() + 30)

    assert counting.polls == 1
    assert (pending.done, pending.offset) == (True, 1)


def test_a_leader_whose_records_are_confirmed_hands_the_polling_to_a_sleeping_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(deliveries_module, "_FOLLOW_S", 60.0)  # no safety net within the test
    counting = CountingClient()
    deliveries = _deliveries(counting)
    mine, theirs = Pending(), Pending()
    deliveries._polling.acquire()  # the leader, polling for ``mine``
    waiter = threading.Thread(target=deliveries.wait, args=([theirs], time.monotonic() + 30))
    waiter.start()
    wait_for(lambda: theirs.wake is not None, 5.0)

    mine.report(client.Delivery(None, 0, 1))  # the leader's own report: it stops polling ...
    deliveries._polling.release()
    deliveries._hand_over()  # ... and wakes the sleeper, which polls for itself
    counting.serve = [theirs]
    waiter.join(5.0)

    assert not waiter.is_alive()
    assert counting.polls >= 1
    assert theirs.done
