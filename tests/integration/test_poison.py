"""Poison records: each kind is dead-lettered once, with its reason, and the worker goes on.

Poison is produced with a plain confluent-kafka producer, since streamjobs' own producer would
refuse to write it. After each poison record a good task follows in the same partition: it must
succeed, the poison offset must be committed, and the handler must never have seen the poison.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from pydantic import Field

from streamjobs import Producer, Settings, Task, TaskRegistry, TaskState, status
from streamjobs.codec import MAGIC
from streamjobs.envelope import Envelope, encode_envelope
from streamjobs.schemastore import schema_record
from streamjobs.tasktypes import TaskType
from streamjobs.topics import queue_topics
from tests.integration.conftest import (
    RawProducer,
    ThreadWorker,
    committed_offset,
    dead_letters,
    key_for_partition,
    latest,
    make_envelope,
    read_topic,
    state_of,
)
from tests.support import wait_for

pytestmark = pytest.mark.integration

POISON_N = 99  # the argument poison records carry: the handler must never see it
GOOD_N = 7


class Echo(Task):
    n: int = Field(ge=0)


class EchoAsText(Task):
    """Same task name and field name as Echo, another type: its payloads cannot become Echo."""

    task_name = "Echo"
    n: str


@dataclass(frozen=True)
class Poison:
    """One poison record: its value, the tier it goes to (None: the main topic), its task id."""

    value: bytes | None
    tier: timedelta | None = None
    task_id: str | None = None
    announce: tuple[bytes, bytes] | None = None  # a schema record to publish first


def _good(settings: Settings, **overrides: Any) -> Envelope:
    return make_envelope(settings, Echo(n=POISON_N), **overrides)


def _undecodable(settings: Settings) -> Poison:
    return Poison(b"\x00\xffthis is not an Avro record at all")


def _truncated(settings: Settings) -> Poison:
    return Poison(encode_envelope(_good(settings))[:-4])


def _trailing(settings: Settings) -> Poison:
    return Poison(encode_envelope(_good(settings)) + b"\x00\x02")


def _unknown_fingerprint(settings: Settings) -> Poison:
    body = encode_envelope(_good(settings))[len(MAGIC) + 8 :]
    return Poison(MAGIC + os.urandom(8) + body)


def _wrong_record_type(settings: Settings) -> Poison:
    return Poison(status.encode_status(_good(settings), TaskState.QUEUED))


def _unknown_task(settings: Settings) -> Poison:
    envelope = _good(settings, task="nope")
    return Poison(encode_envelope(envelope), task_id=envelope.task_id)


def _invalid_args(settings: Settings) -> Poison:
    # a payload that decodes with Echo's schema but violates its constraint (n >= 0)
    payload = TaskType(Echo, Echo.task_name).codec.encode_body({"n": -POISON_N})
    envelope = _good(settings, payload=payload)
    return Poison(encode_envelope(envelope), task_id=envelope.task_id)


def _incompatible_schema(settings: Settings) -> Poison:
    # written with a schema the worker can find (announced) but cannot resolve to Echo's
    other = TaskType(EchoAsText, EchoAsText.task_name)
    envelope = _good(
        settings,
        payload=other.encode(EchoAsText(n="ninety-nine")),
        payload_schema=other.fingerprint,
    )
    return Poison(
        encode_envelope(envelope), task_id=envelope.task_id, announce=schema_record(other)
    )


def _empty(settings: Settings) -> Poison:
    return Poison(b"")


def _tombstone(settings: Settings) -> Poison:
    return Poison(None)


def _attempt(attempt: int) -> Callable[[Settings], Poison]:
    def build(settings: Settings) -> Poison:
        return Poison(encode_envelope(_good(settings, attempt=attempt)))

    return build


def _due_in_a_century(settings: Settings) -> Poison:
    due = status.now_ms() + 100 * 365 * 86_400_000
    return Poison(encode_envelope(_good(settings, not_before_ms=due)), tier=timedelta(seconds=2))


POISON_KINDS = {
    "undecodable_bytes": (_undecodable, "decode_error"),
    "truncated_avro": (_truncated, "decode_error"),
    "trailing_bytes": (_trailing, "trailing_bytes"),
    "unknown_schema_fingerprint": (_unknown_fingerprint, "unknown_schema"),
    "wrong_record_type": (_wrong_record_type, "wrong_record_type"),
    "unknown_task_type": (_unknown_task, "unknown_task"),
    "args_failing_validation": (_invalid_args, "invalid_args"),
    "payload_of_an_incompatible_schema": (_incompatible_schema, "decode_error"),
    "empty_value": (_empty, "empty_value"),
    "tombstone": (_tombstone, "empty_value"),
    "attempt_minus_one": (_attempt(-1), "bad_attempt"),
    "attempt_999999": (_attempt(999_999), "bad_attempt"),
    "due_time_impossibly_far_in_the_future": (_due_in_a_century, "due_too_far"),
}


@pytest.fixture
def calls() -> list[int]:
    return []


@pytest.fixture
def echo_registry(calls: list[int]) -> TaskRegistry:
    registry = TaskRegistry()

    @registry.handler(Echo)
    def echo(task: Echo) -> int:
        calls.append(task.n)
        return task.n

    return registry


@pytest.mark.parametrize(("build", "reason"), POISON_KINDS.values(), ids=list(POISON_KINDS))
def test_poison_record_is_dead_lettered_once_and_the_worker_goes_on(
    build: Callable[[Settings], Poison],
    reason: str,
    settings: Settings,
    producer: Producer,
    raw_producer: RawProducer,
    worker: Callable[..., ThreadWorker],
    echo_registry: TaskRegistry,
    calls: list[int],
) -> None:
    names = queue_topics(settings)
    running = worker(echo_registry)
    poison = build(settings)
    topic = names.main if poison.tier is None else names.delay[poison.tier]
    if poison.announce is not None:
        raw_producer.produce(names.schemas, poison.announce[1], key=poison.announce[0])

    bad = raw_producer.produce(topic, poison.value, key=b"poison", partition=0)
    # the next record of the same partition is a good task
    delay = None if poison.tier is None else poison.tier + timedelta(milliseconds=500)
    good = producer.submit(Echo(n=GOOD_N), key=key_for_partition(0, 3, "good"), delay=delay)
    assert good.topic == topic
    assert good.partition == 0

    assert good.wait(30.0) == GOOD_N
    wait_for(
        lambda: committed_offset(settings, topic, 0) > good.offset,
        30.0,
        message="the poison and the good task to be committed",
    )
    letters = dead_letters(settings)
    assert len(letters) == 1, letters
    (letter,) = letters
    assert letter["reason"] == reason
    assert (letter["origin_topic"], letter["origin_partition"], letter["origin_offset"]) == (
        topic,
        0,
        bad.offset,
    )
    assert letter["original_value"] == poison.value
    assert letter["origin_key"] == b"poison"
    assert calls == [GOOD_N]
    assert running.running
    if poison.task_id is not None:
        view = latest(settings, poison.task_id)
        assert view is not None
        assert view.state is TaskState.DEAD_LETTERED
        assert view.reason == reason


@pytest.mark.parametrize(
    "traceparent",
    [
        b"\xff\xfe\x00garbage",
        b"00-not-a-trace-id-zz",
        b"00-" + b"0" * 32 + b"-" + b"0" * 16 + b"-01",
    ],
    ids=["binary", "malformed", "all_zero_ids"],
)
def test_invalid_traceparent_header_is_ignored_and_the_task_still_runs(
    traceparent: bytes,
    settings: Settings,
    raw_producer: RawProducer,
    worker: Callable[..., ThreadWorker],
    echo_registry: TaskRegistry,
    calls: list[int],
) -> None:
    worker(echo_registry)
    envelope = make_envelope(settings, Echo(n=GOOD_N), task_id=uuid.uuid4().hex)
    task_id = envelope.task_id

    sent = raw_producer.produce(
        queue_topics(settings).main,
        encode_envelope(envelope),
        key=task_id.encode(),
        headers=[("traceparent", traceparent), ("tracestate", b"\xc3\x28=garbage")],
    )

    wait_for(
        lambda: state_of(settings, task_id) == "succeeded",
        30.0,
        message="the task with a bad traceparent to succeed",
    )
    assert calls == [GOOD_N]
    assert dead_letters(settings) == []
    wait_for(
        lambda: committed_offset(settings, sent.topic, sent.partition) > sent.offset,
        30.0,
        message="its offset to be committed",
    )


def test_poison_too_large_to_dead_letter_whole_is_stored_truncated_with_a_flag(
    make_settings: Callable[..., Settings],
    worker: Callable[..., ThreadWorker],
    echo_registry: TaskRegistry,
) -> None:
    settings = make_settings(dlq_max_bytes=4096)
    main = queue_topics(settings).main
    worker(echo_registry, settings)
    poison = b"\x00" + os.urandom(20_000)  # not Avro, and far over the dead-letter budget
    raw = RawProducer(settings)
    try:
        sent = raw.produce(main, poison, key=b"big", partition=2)
    finally:
        raw.close()

    wait_for(
        lambda: committed_offset(settings, main, 2) > sent.offset,
        30.0,
        message="the oversized poison to be committed",
    )
    (letter,) = dead_letters(settings)
    assert letter["reason"] == "decode_error"
    assert letter["truncated"] is True
    assert letter["original_size"] == len(poison)
    assert 0 < len(letter["original_value"]) < len(poison)
    assert poison.startswith(letter["original_value"])
    dlq_record = read_topic(settings, queue_topics(settings).dlq)[0]
    assert len(dlq_record.value or b"") <= settings.dlq_max_bytes
