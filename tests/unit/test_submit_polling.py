"""Submitting threads share one poller: while one thread serves librdkafka's delivery reports,
the others wait to be woken instead of polling for themselves (a report served by another
thread's poll was otherwise only seen when the waiting thread's own poll timed out)."""

from __future__ import annotations

import threading

from streamjobs import Producer, Settings
from streamjobs.confirmed import Pending

# an unconnected producer, and no "connection refused" lines on stderr
_SETTINGS = Settings(bootstrap_servers="127.0.0.1:9", topic_prefix="t0", kafka={"log_level": 0})


class CountingClient:
    """Stands in for the librdkafka producer: counts polls, serves nothing."""

    def __init__(self) -> None:
        self.polls = 0

    def poll(self, timeout: float) -> int:
        self.polls += 1
        return 0

    def flush(self, timeout: float) -> int:
        return 0


def test_a_submitter_waits_to_be_woken_while_another_thread_serves_the_reports() -> None:
    producer = Producer(_SETTINGS)
    counting = CountingClient()
    producer._client = counting  # type: ignore[assignment]
    pending = Pending()
    producer._writer._polling.acquire()  # another submitting thread is serving the reports
    waiter = threading.Thread(target=producer._writer.wait, args=([pending],))
    waiter.start()

    pending.done = True  # the serving thread's poll delivered this thread's report ...
    with producer._writer._served:
        producer._writer._served.notify_all()  # ... and wakes the waiting threads
    waiter.join(5.0)
    producer._writer._polling.release()
    producer.close()

    assert not waiter.is_alive()
    assert counting.polls == 0


def test_a_lone_submitter_serves_its_own_reports() -> None:
    producer = Producer(_SETTINGS)
    counting = CountingClient()
    producer._client = counting  # type: ignore[assignment]
    pending = Pending()

    def poll(timeout: float) -> int:
        counting.polls += 1
        pending.done = True  # its own report arrives
        return 1

    counting.poll = poll  # type: ignore[method-assign]
    producer._writer.wait([pending])
    producer.close()

    assert counting.polls == 1
