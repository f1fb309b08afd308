"""Dead letters against a real broker: list, show, redrive once and only once, poison records."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable

import pytest
from typer.testing import CliRunner

from streamjobs import Producer, Settings, Task, TaskRegistry, TaskState, client, status
from streamjobs.cli import app
from streamjobs.errors import ConfigError
from streamjobs.redrive import list_dead_letters, read_ledger, redrive, show
from streamjobs.topics import queue_topics
from tests.integration.conftest import (
    RawProducer,
    ThreadWorker,
    envelopes,
    read_topic,
    state_of,
    worker_env,
)
from tests.support import wait_for

pytestmark = pytest.mark.integration


class Charge(Task):
    order: int


def fails_on_first_run(calls: Counter[int]) -> TaskRegistry:
    """A handler that fails the first run of every task (no retries), then succeeds."""
    registry = TaskRegistry()
    lock = threading.Lock()

    @registry.handler(Charge, max_attempts=1)
    def charge(task: Charge) -> dict[str, int]:
        with lock:
            calls[task.order] += 1
            first = calls[task.order] == 1
        if first:
            raise ConnectionError(f"payment gateway down for order {task.order}")
        return {"charged": task.order}

    return registry


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    consumer = client.new_reader(settings)
    try:
        return {
            p: client.watermarks(consumer, topic, p)[1]
            for p in client.partition_ids(consumer, topic)
        }
    finally:
        consumer.close()


def cli(settings: Settings, *args: str) -> str:
    result = CliRunner().invoke(
        app,
        [
            *args,
            *("--bootstrap-servers", settings.bootstrap_servers),
            *("--topic-prefix", settings.topic_prefix),
        ],
        env=worker_env(settings),
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_redriven_task_runs_again_with_its_task_id_and_key_and_succeeds(
    settings: Settings, producer: Producer, worker: Callable[..., ThreadWorker]
) -> None:
    calls: Counter[int] = Counter()
    worker(fails_on_first_run(calls))
    handle = producer.submit(Charge(order=7), key="customer-7")
    wait_for(lambda: state_of(settings, handle.task_id) == "dead_lettered", 30.0)
    names = queue_topics(settings)
    main_before = end_offsets(settings, names.main)

    dry = redrive(settings, dry_run=True)
    assert [(i.outcome, i.task_id) for i in dry.items] == [("would_redrive", handle.task_id)]
    assert end_offsets(settings, names.main) == main_before
    assert read_ledger(settings) == set()

    summary = redrive(settings, actor="ops@test")

    assert (summary.redriven, summary.skipped, summary.failed) == (1, 0, 0)
    item = summary.items[0]
    assert (item.task_id, item.generation) == (handle.task_id, 1)
    view = status.wait(settings, handle.task_id, 30.0, since_ms=handle.submitted_at_ms)
    assert view.state is TaskState.SUCCEEDED
    assert view.result == {"charged": 7}
    assert (view.generation, view.attempt, view.key) == (1, 1, "customer-7")
    assert calls == {7: 2}
    queued = [
        status.decode_status(r.value)
        for r in read_topic(settings, names.status)
        if r.key == handle.task_id.encode() and r.value
    ]
    notes = [v.note for v in queued if v.state is TaskState.QUEUED and v.generation == 1]
    assert len(notes) == 1
    assert (notes[0] or "").startswith(
        f"redriven from dlq[{item.ref.replace(':', ']@')} by ops@test at "
    )
    rec, envelope = envelopes(settings, names.main)[-1]
    assert (rec.partition, rec.offset) == (item.new_partition, item.new_offset)
    assert rec.key == b"customer-7"
    assert envelope["task_id"] == handle.task_id
    assert envelope["origin"]["topic"] == names.dlq
    assert read_ledger(settings) == {item.ref}


def test_second_redrive_of_the_same_dead_letter_does_nothing(
    settings: Settings, producer: Producer, worker: Callable[..., ThreadWorker]
) -> None:
    calls: Counter[int] = Counter()
    worker(fails_on_first_run(calls))
    handle = producer.submit(Charge(order=1))
    wait_for(lambda: state_of(settings, handle.task_id) == "dead_lettered", 30.0)
    assert redrive(settings).redriven == 1
    status.wait(settings, handle.task_id, 30.0, since_ms=handle.submitted_at_ms)
    names = queue_topics(settings)
    before = {t: end_offsets(settings, t) for t in (names.main, names.redriven)}

    again = redrive(settings)
    output = cli(settings, "dlq", "redrive")

    assert (again.redriven, again.skipped) == (0, 1)
    assert again.items[0].reason == "already redriven"
    assert "redriven 0, skipped 1, failed 0" in output
    assert {t: end_offsets(settings, t) for t in before} == before
    assert calls == {1: 2}
    [letter] = list_dead_letters(settings)
    assert letter.redriven


def test_dead_letters_are_listed_and_shown_with_envelope_error_and_arguments(
    settings: Settings, producer: Producer, worker: Callable[..., ThreadWorker]
) -> None:
    worker(fails_on_first_run(Counter()))
    handle = producer.submit(Charge(order=42), key="customer-42")
    wait_for(lambda: state_of(settings, handle.task_id) == "dead_lettered", 30.0)

    [letter] = list_dead_letters(settings, reason="max_attempts", task="Charge")
    detail = show(settings, letter.ref)
    listed = json.loads(cli(settings, "dlq", "list", "--json"))
    shown = json.loads(cli(settings, "dlq", "show", letter.ref, "--json"))

    with pytest.raises(ConfigError, match="no dead letter at 0:999"):
        show(settings, "0:999")
    with pytest.raises(ConfigError, match="PARTITION:OFFSET"):
        show(settings, "latest")
    assert list_dead_letters(settings, reason="decode_error") == []
    assert list_dead_letters(settings, task="Refund") == []
    assert (letter.task_id, letter.attempts, letter.error_type) == (
        handle.task_id,
        1,
        "ConnectionError",
    )
    assert letter.origin_topic == queue_topics(settings).main
    assert letter.origin_offset == handle.offset
    assert detail.envelope is not None
    assert detail.envelope["key"] == "customer-42"
    assert detail.args == {"order": 42}
    assert detail.payload_size > 0
    assert [d["ref"] for d in listed] == [letter.ref]
    assert shown["args"] == {"order": 42}
    assert "payment gateway down" in shown["error"]


def test_poison_dead_letter_is_reported_as_skipped_and_never_redriven(
    settings: Settings,
    raw_producer: RawProducer,
    worker: Callable[..., ThreadWorker],
) -> None:
    worker(fails_on_first_run(Counter()))
    names = queue_topics(settings)
    raw_producer.produce(names.main, b"\xc3\x01 definitely not avro", key=b"poison")
    wait_for(lambda: list_dead_letters(settings), 30.0, message="the poison record dead-lettered")
    main_before = end_offsets(settings, names.main)

    summary = redrive(settings)

    [item] = summary.items
    assert item.outcome == "skipped"
    assert "no decodable envelope (unknown_schema)" in (item.reason or "")
    assert end_offsets(settings, names.main) == main_before
    assert read_ledger(settings) == set()
    detail = show(settings, item.ref)
    assert detail.envelope is None
    assert (detail.envelope_error or "").startswith("unknown_schema")
