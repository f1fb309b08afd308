"""The crash ledger's suspect window covers every record a worker took, however far past the
committed offset: behind a task that holds the commit, later tasks keep completing.

A new owner after a crash counts the starts of suspect records only (quarantine.py); a poison
task outside that window would crash-loop uncounted. The window is read here the way a new
owner reads it, while the worker that took the records still holds the partition ``active``,
exactly what the ledger shows after that worker is killed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from streamjobs import Producer, Settings, Task, TaskRegistry, client
from streamjobs.topics import queue_topics
from streamjobs.worker.quarantine import StartLedger
from tests.integration.conftest import ThreadWorker, all_succeeded
from tests.support import wait_for

pytestmark = pytest.mark.integration


class Hold(Task):
    """Runs until the test lets it go: its offset stays the committed one meanwhile."""


class Quick(Task):
    n: int


@pytest.fixture
def released() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # a failing test must not leave the worker's thread blocked


def test_new_owner_suspects_every_record_taken_behind_a_task_holding_the_commit(
    make_settings: Callable[..., Settings],
    worker: Callable[..., ThreadWorker],
    released: threading.Event,
) -> None:
    settings = make_settings(partitions=1, max_in_flight=2, concurrency=2)
    registry = TaskRegistry()
    registry.handler(Hold)(lambda task: released.wait(60))
    registry.handler(Quick)(lambda task: task.n)
    running = worker(registry, settings)
    with Producer(settings) as producer:
        hold = producer.submit(Hold(), key="hold")
        quick = producer.submit_many(
            [Quick(n=n) for n in range(20)], keys=[f"k{n}" for n in range(20)]
        )
    wait_for(
        lambda: all_succeeded(settings, [h.task_id for h in quick]),
        20.0,
        interval=0.2,
        message="the quick tasks to succeed while the first one holds the commit",
    )

    topics = queue_topics(settings)
    main = client.TopicPartition(topics.main, 0)
    reader = client.KafkaClients(settings).consumer(settings.group)
    ledger = StartLedger(settings, topics.starts)
    try:
        [committed] = reader.committed([main], timeout=10.0)
        window = ledger.suspects(reader, [main])[(topics.main, 0)]
    finally:
        ledger.close()
        reader.close()
    assert committed.offset <= hold.offset, "the held task's offset cannot be committed yet"
    taken = [h.offset for h in quick]
    assert max(taken) >= committed.offset + ledger.window, "the quick tasks stay in the default"
    assert all(offset in window for offset in [hold.offset, *taken]), (window, taken)
    assert window.stop <= max(taken) + 1 + ledger.window, f"lease far past what was taken: {window}"
    released.set()
    wait_for(lambda: all_succeeded(settings, [hold.task_id]), 20.0, message="the held task")
    assert running.running
