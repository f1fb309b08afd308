"""Dead letters against a real broker: list, show, redrive once and only once, poison records."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Sequence

import pytest
from typer.testing import CliRunner

from streamjobs import (
    Producer,
    Settings,
    SubmitError,
    Task,
    TaskHandle,
    TaskRegistry,
    TaskState,
    client,
    status,
    statusreads,
)
from streamjobs.cli import app
from streamjobs.errors import ConfigError
from streamjobs.ops.deadletters import list_dead_letters, read_ledger, show
from streamjobs.ops.redrive import redrive
from streamjobs.producer import Resubmission
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
        return {p: consumer.watermarks(topic, p)[1] for p in consumer.partition_ids(topic)}
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
    view = statusreads.wait(settings, handle.task_id, 30.0, since_ms=handle.submitted_at_ms)
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
    assert envelope.task_id == handle.task_id
    assert envelope.origin.topic == names.dlq
    assert read_ledger(settings) == {item.ref}


def test_second_redrive_of_the_same_dead_letter_does_nothing(
    settings: Settings, producer: Producer, worker: Callable[..., ThreadWorker]
) -> None:
    calls: Counter[int] = Counter()
    worker(fails_on_first_run(calls))
    handle = producer.submit(Charge(order=1))
    wait_for(lambda: state_of(settings, handle.task_id) == "dead_lettered", 30.0)
    assert redrive(settings).redriven == 1
    statusreads.wait(settings, handle.task_id, 30.0, since_ms=handle.submitted_at_ms)
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
    assert detail.envelope.key == "customer-42"
    assert detail.args == {"order": 42}
    assert detail.payload_size > 0
    assert [d["ref"] for d in listed] == [letter.ref]
    assert shown["args"] == {"order": 42}
    assert "payment gateway down" in shown["error"]
    # the envelope as JSON: wire fields in schema order, the payload apart, the fingerprint hex
    assert shown["envelope"]["key"] == "customer-42"
    assert list(shown["envelope"]) == [n for n in detail.envelope.as_dict() if n != "payload"]
    assert shown["envelope"]["payload_schema"] == detail.envelope.payload_schema.hex()


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


def test_redrive_spanning_several_chunks_acknowledges_each_chunks_ledger_entries_first(
    settings: Settings,
    producer: Producer,
    worker: Callable[..., ThreadWorker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: Counter[int] = Counter()
    worker(fails_on_first_run(calls))
    keys = ["alice", "bob", "carol"]
    handles = producer.submit_many(
        [Charge(order=n) for n in range(20)], keys=[keys[n % 3] for n in range(20)]
    )
    key_of = {h.task_id: keys[n % 3] for n, h in enumerate(handles)}
    wait_for(lambda: len(list_dead_letters(settings)) == 20, 60.0, message="20 dead letters")
    ref_of = {letter.task_id: letter.ref for letter in list_dead_letters(settings)}
    # at each chunk's write: its task ids, and the ledger as Kafka has it at that moment
    chunks: list[tuple[list[str], set[str]]] = []
    original = Producer.resubmit_many

    def recorded(self: Producer, batch: Sequence[Resubmission]) -> list[TaskHandle | SubmitError]:
        chunks.append(([r.task_id for r in batch], read_ledger(settings)))
        return original(self, batch)

    monkeypatch.setattr(Producer, "resubmit_many", recorded)

    summary = redrive(settings, chunk_size=7, actor="ops@test")

    assert (summary.redriven, summary.skipped, summary.failed) == (20, 0, 0)
    assert [len(ids) for ids, _ in chunks] == [7, 7, 6]
    written: set[str] = set()
    for ids, ledger in chunks:
        written |= {ref_of[task_id] for task_id in ids}
        assert ledger == written  # this chunk's entries are durable, no later chunk's yet
    assert read_ledger(settings) == set(ref_of.values())
    wait_for(
        lambda: all(state_of(settings, h.task_id) == "succeeded" for h in handles),
        60.0,
        message="every redriven task to succeed",
    )
    assert calls == dict.fromkeys(range(20), 2)
    names = queue_topics(settings)
    redriven = [(r, e) for r, e in envelopes(settings, names.main) if e.generation == 1]
    assert sorted(e.task_id for _, e in redriven) == sorted(key_of)
    places = {(r.partition, r.offset): e for r, e in redriven}
    for item in summary.items:
        assert item.new_partition is not None
        assert item.new_offset is not None
        envelope = places[(item.new_partition, item.new_offset)]
        assert envelope.task_id == item.task_id
        origin = envelope.origin
        assert origin is not None
        assert (origin.topic, f"{origin.partition}:{origin.offset}") == (
            names.dlq,
            item.ref,
        )
    # the dead-letter topic is keyed by task id, so what a redrive keeps is the order in which
    # it read the dead letters (the order of its items): per key, that is the order on main
    for key in keys:
        on_main = [e.task_id for r, e in redriven if r.key == key.encode()]
        assert on_main == [i.task_id for i in summary.items if key_of[i.task_id or ""] == key]


class Upload(Task):
    name: str
    body: str


def test_dead_letter_too_large_to_redrive_fails_alone_and_gets_no_ledger_entry(
    settings: Settings, producer: Producer, worker: Callable[..., ThreadWorker]
) -> None:
    registry = TaskRegistry()

    @registry.handler(Upload, max_attempts=1)
    def upload(task: Upload) -> None:
        raise ConnectionError(f"storage down for {task.name}")

    worker(registry)
    bodies = {"a": "", "b": "", "big": "x" * 3000, "c": "", "d": ""}
    handles = {name: producer.submit(Upload(name=name, body=b)) for name, b in bodies.items()}
    wait_for(lambda: len(list_dead_letters(settings)) == 5, 30.0, message="5 dead letters")
    ref_of = {letter.task_id: letter.ref for letter in list_dead_letters(settings)}
    big = handles["big"].task_id
    # the limit was lowered since these were dead-lettered: the big one no longer fits
    lowered = settings.model_copy(update={"max_message_bytes": 2048, "dlq_max_bytes": 2048})

    summary = redrive(lowered, chunk_size=2)

    [failed] = [i for i in summary.items if i.outcome == "failed"]
    assert (failed.task_id, failed.ref) == (big, ref_of[big])
    assert (failed.reason or "").startswith(f"not re-submitted: task {big} encodes to ")
    redriven = {i.task_id for i in summary.items if i.outcome == "redriven"}
    assert redriven == set(ref_of) - {big}
    assert read_ledger(settings) == {ref_of[t] for t in redriven}
    on_main = [e.task_id for _, e in envelopes(settings, queue_topics(settings).main)]
    assert Counter(on_main) == {t: 1 if t == big else 2 for t in ref_of}
    assert state_of(settings, big) == "dead_lettered"
