"""Schema evolution: a worker with a newer task model decodes tasks queued with the older one.

The producer announces each writer schema on the compacted ``<prefix>.schemas`` topic before the
first task of that type; a worker resolves fingerprints it does not know from there. A payload
whose fingerprint is on no schema record is dead-lettered as ``unknown_schema``, never guessed.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable

import pytest

from streamjobs import Producer, Settings, Task, TaskRegistry, TaskState
from streamjobs.envelope import encode_envelope
from streamjobs.topics import queue_topics
from tests.integration.conftest import (
    RawProducer,
    ThreadWorker,
    committed_offset,
    dead_letters,
    latest,
    make_envelope,
    read_topic,
)
from tests.support import wait_for

pytestmark = pytest.mark.integration


class EvolveV1(Task):
    task_name = "Evolve"
    order: int
    note: str


class EvolveV3(Task):
    """A later producer's model: one field more, which the V2 worker does not know."""

    task_name = "Evolve"
    order: int
    note: str
    priority: str = "normal"
    retries: int | None = None
    region: str = "eu"


class EvolveV2(Task):
    task_name = "Evolve"
    order: int
    note: str
    priority: str = "normal"
    retries: int | None = None


def _v2_registry(seen: list[EvolveV2]) -> TaskRegistry:
    registry = TaskRegistry()

    @registry.handler(EvolveV2)
    def evolve(task: EvolveV2) -> dict[str, object]:
        seen.append(task)
        return task.model_dump()

    return registry


def test_task_queued_with_an_older_model_decodes_with_the_new_fields_defaults(
    settings: Settings, producer: Producer, worker: Callable[..., ThreadWorker]
) -> None:
    seen: list[EvolveV2] = []
    handle = producer.submit(EvolveV1(order=42, note="queued before the upgrade"))
    worker(_v2_registry(seen))

    assert handle.wait(30.0) == {
        "order": 42,
        "note": "queued before the upgrade",
        "priority": "normal",
        "retries": None,
    }
    assert seen == [EvolveV2(order=42, note="queued before the upgrade")]
    # the worker could only know V1's schema from the schemas topic
    announced = read_topic(settings, queue_topics(settings).schemas)
    assert len(announced) == 1
    assert dead_letters(settings) == []


def test_task_written_with_a_schema_announced_moments_ago_is_not_dead_lettered(
    settings: Settings, producer: Producer, worker: Callable[..., ThreadWorker]
) -> None:
    seen: list[EvolveV2] = []
    worker(_v2_registry(seen))
    first = producer.submit(EvolveV1(order=1, note="old producer"))
    assert first.wait(30.0)["order"] == 1  # the worker has just read the schemas topic

    # a producer upgraded meanwhile: its schema is announced right before its first task
    upgraded = producer.submit(EvolveV3(order=2, note="new producer", region="us"))

    assert upgraded.wait(30.0) == {
        "order": 2,
        "note": "new producer",
        "priority": "normal",
        "retries": None,
    }
    assert dead_letters(settings) == []


def test_payload_with_a_fingerprint_on_no_schema_record_is_dead_lettered_unknown_schema(
    settings: Settings,
    producer: Producer,
    raw_producer: RawProducer,
    worker: Callable[..., ThreadWorker],
) -> None:
    seen: list[EvolveV2] = []
    announced = producer.submit(EvolveV1(order=1, note="announces V1"))
    worker(_v2_registry(seen))
    assert announced.wait(30.0)["order"] == 1  # V1 is resolvable: the schemas topic works
    envelope = make_envelope(
        settings,
        EvolveV1(order=2, note="written with an unannounced schema"),
        task_id=uuid.uuid4().hex,
        payload_schema=os.urandom(8),
    )
    main = queue_topics(settings).main

    sent = raw_producer.produce(main, encode_envelope(envelope), key=b"orphan", partition=1)

    wait_for(
        lambda: committed_offset(settings, main, 1) > sent.offset,
        30.0,
        message="the orphaned task's offset to be committed",
    )
    letters = [dl for dl in dead_letters(settings) if dl["task_id"] == envelope.task_id]
    assert [dl["reason"] for dl in letters] == ["unknown_schema"]
    assert letters[0]["original_value"] == encode_envelope(envelope)
    view = latest(settings, envelope.task_id)
    assert view is not None
    assert view.state is TaskState.DEAD_LETTERED
    assert view.reason == "unknown_schema"
    assert [task.order for task in seen] == [1]
