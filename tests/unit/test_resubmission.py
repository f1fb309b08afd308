"""Re-submissions before Kafka: Producer.prepare_resubmit checks, and replay's Chunks batching.

No broker: the producer here points at a closed port, and nothing in these tests produces.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from streamjobs import Producer, Settings, Task
from streamjobs.client import Position
from streamjobs.envelope import Envelope
from streamjobs.errors import ConfigError, PayloadTooLarge
from streamjobs.models import TaskState
from streamjobs.ops.rerun import Chunks
from streamjobs.producer import Resubmission
from streamjobs.status import decode_status
from streamjobs.tasktypes import TaskType


class Note(Task):
    text: str


def envelope(settings: Settings, text: str = "hi", **changes: Any) -> Envelope:
    task_type = TaskType(Note, Note.task_name)
    found = Envelope(
        task_id=f"id-{text[:8]}",
        task=task_type.name,
        queue=settings.queue,
        key="customer-1",
        payload=task_type.encode(Note(text=text)),
        payload_schema=task_type.fingerprint,
        attempt=3,
        max_attempts=3,
        generation=2,
        not_before_ms=1_700_000_000_000,
        submitted_at_ms=1_700_000_000_000,
    )
    return replace(found, **changes)


@pytest.fixture
def settings() -> Settings:
    # port 9 (discard) is closed here: a client would fail to connect, and none needs to
    return Settings(
        bootstrap_servers="127.0.0.1:9",
        topic_prefix="unit",
        max_message_bytes=4096,
        dlq_max_bytes=4096,
        kafka={"log_level": 0},  # and no "connection refused" lines on stderr
    )


@pytest.fixture
def producer(settings: Settings) -> Iterator[Producer]:
    with Producer(settings) as unconnected:
        yield unconnected


def prepare(producer: Producer, task_envelope: Envelope) -> Resubmission:
    return producer.prepare_resubmit(
        task_envelope,
        note="replayed by ops@test",
        origin=Position("unit.default", 0, 7, 1),
    )


def test_prepared_resubmission_queues_attempt_one_at_the_given_generation_with_the_note(
    settings: Settings, producer: Producer
) -> None:
    prepared = prepare(producer, envelope(settings))

    queued = decode_status(prepared.queued_status)
    assert (prepared.task_id, prepared.key) == ("id-hi", "customer-1")
    assert (queued.task_id, queued.state, queued.attempt) == ("id-hi", TaskState.QUEUED, 1)
    assert queued.generation == 2
    assert queued.note == "replayed by ops@test"
    assert queued.not_before_ms is None
    assert queued.submitted_at_ms is not None
    assert queued.submitted_at_ms > 1_700_000_000_000


def test_prepare_resubmit_refuses_a_task_that_no_longer_fits_max_message_bytes(
    settings: Settings, producer: Producer
) -> None:
    prepare(producer, envelope(settings, "x" * 3000))  # fits: 4096 with the record overhead

    with pytest.raises(PayloadTooLarge, match="over max_message_bytes=4096") as refused:
        prepare(producer, envelope(settings, "x" * 3600))
    assert refused.value.reason == "payload_too_large"


def test_prepare_resubmit_refuses_a_task_of_another_queue(
    settings: Settings, producer: Producer
) -> None:
    with pytest.raises(ConfigError, match="belongs to queue 'billing'"):
        prepare(producer, envelope(settings, queue="billing"))


def test_resubmit_many_of_an_empty_batch_writes_nothing(producer: Producer) -> None:
    assert producer.resubmit_many([]) == []


# -- Chunks ---------------------------------------------------------------------------------


class Writes:
    """A ``write`` for Chunks that records each chunk and marks its items as written."""

    def __init__(self) -> None:
        self.chunks: list[list[tuple[str, str]]] = []

    def __call__(self, chunk: list[tuple[str, Resubmission]]) -> list[str]:
        self.chunks.append([(item, r.task_id) for item, r in chunk])
        return [f"{item}:written" for item, _ in chunk]


def test_chunks_write_every_full_chunk_at_once_and_the_rest_on_flush_in_order(
    settings: Settings, producer: Producer
) -> None:
    writes = Writes()
    chunks: Chunks[str] = Chunks(3, writes)
    waiting = {n: prepare(producer, envelope(settings, f"n{n}")) for n in range(8) if n != 4}

    for n in range(8):
        chunks.add(f"item{n}", waiting.get(n))  # item4 is final already (say, skipped)
        if n == 2:
            assert writes.chunks == [[("item0", "id-n0"), ("item1", "id-n1"), ("item2", "id-n2")]]
    chunks.flush()
    chunks.flush()  # nothing left: no empty write

    assert [len(chunk) for chunk in writes.chunks] == [3, 3, 1]
    assert [item for chunk in writes.chunks for item, _ in chunk] == [
        f"item{n}" for n in range(8) if n != 4
    ]
    assert chunks.items == [f"item{n}" if n == 4 else f"item{n}:written" for n in range(8)]


def test_chunks_refuse_a_size_below_one() -> None:
    with pytest.raises(ConfigError, match="at least 1"):
        Chunks(0, Writes())
