"""Replay against a real broker: ranges by offset and by time, the succeeded rule, dry runs."""

from __future__ import annotations

import base64
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

import pytest
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource
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
from streamjobs.ops.replay import replay
from streamjobs.producer import Resubmission
from streamjobs.topics import queue_topics
from tests.integration.conftest import (
    RawProducer,
    ThreadWorker,
    envelopes,
    key_for_partition,
    read_topic,
    worker_env,
)
from tests.support import wait_for

pytestmark = pytest.mark.integration


class Job(Task):
    n: int


def counting_registry(calls: Counter[int], *, fail_first: Iterable[int] = ()) -> TaskRegistry:
    """Counts runs per ``n``; the tasks in ``fail_first`` fail their first run (no retries)."""
    registry = TaskRegistry()
    failing = set(fail_first)
    lock = threading.Lock()

    @registry.handler(Job, max_attempts=1)
    def run(task: Job) -> int:
        with lock:
            calls[task.n] += 1
            first = calls[task.n] == 1
        if first and task.n in failing:
            raise RuntimeError(f"first run of {task.n} fails")
        return task.n

    return registry


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    consumer = client.new_reader(settings)
    try:
        return {p: consumer.watermarks(topic, p)[1] for p in consumer.partition_ids(topic)}
    finally:
        consumer.close()


def finished(settings: Settings, ids: Iterable[str], generation: int) -> bool:
    views = statusreads.snapshot(settings)
    return all(
        (view := views.get(i)) is not None
        and view.generation >= generation
        and view.state is TaskState.SUCCEEDED
        for i in ids
    )


def test_replay_by_offset_reruns_exactly_the_selected_tasks_under_their_own_ids(
    settings: Settings, producer: Producer, worker: Callable[..., ThreadWorker]
) -> None:
    calls: Counter[int] = Counter()
    worker(counting_registry(calls))
    handles = [producer.submit(Job(n=n), key="one-key") for n in range(6)]
    for handle in handles:
        handle.wait(30.0)
    main = queue_topics(settings).main
    partition = handles[0].partition
    before = end_offsets(settings, main)

    summary = replay(
        settings,
        topic=main,
        partition=partition,
        from_offset=handles[2].offset,
        to_offset=handles[4].offset,
        force=True,
    )

    chosen = [h.task_id for h in handles[2:5]]
    assert [i.task_id for i in summary.items if i.outcome == "replayed"] == chosen
    assert (summary.replayed, summary.skipped, summary.failed) == (3, 0, 0)
    wait_for(lambda: finished(settings, chosen, 1), 30.0, message="replayed tasks to succeed")
    assert calls == {0: 1, 1: 1, 2: 2, 3: 2, 4: 2, 5: 1}
    after = end_offsets(settings, main)
    assert after == {**before, partition: before[partition] + 3}
    view = statusreads.latest(settings, handles[3].task_id)
    assert view is not None
    assert view.key == "one-key"
    assert view.attempt == 1
    assert view.generation == 1
    replayed = {env.task_id: (rec, env) for rec, env in envelopes(settings, main)[6:]}
    record, envelope = replayed[handles[3].task_id]
    assert record.key == b"one-key"
    assert envelope.origin.offset == handles[3].offset
    assert envelope.generation == 1


def test_replay_by_time_reruns_only_the_tasks_submitted_in_the_window(
    settings: Settings, producer: Producer, worker: Callable[..., ThreadWorker]
) -> None:
    calls: Counter[int] = Counter()
    worker(counting_registry(calls))

    def batch(numbers: range) -> list[str]:
        handles = producer.submit_many([Job(n=n) for n in numbers])
        for handle in handles:
            handle.wait(30.0)
        return [h.task_id for h in handles]

    def a_new_millisecond() -> datetime:
        # record timestamps have millisecond resolution: the window edges must fall between
        start = status.now_ms()
        wait_for(lambda: status.now_ms() > start + 1, 5.0, interval=0.001)
        return datetime.now(UTC)

    batch(range(0, 4))
    window_start = a_new_millisecond()
    inside = batch(range(4, 8))
    window_end = a_new_millisecond()
    batch(range(8, 12))

    summary = replay(
        settings,
        topic=queue_topics(settings).main,
        from_time=window_start,
        to_time=window_end,
        force=True,
    )

    assert sorted(i.task_id or "" for i in summary.items) == sorted(inside)
    assert summary.replayed == 4
    wait_for(lambda: finished(settings, inside, 1), 30.0, message="replayed tasks to succeed")
    assert calls == {n: 2 if 4 <= n < 8 else 1 for n in range(12)}


def test_replay_skips_succeeded_tasks_unless_forced(
    settings: Settings, producer: Producer, worker: Callable[..., ThreadWorker]
) -> None:
    calls: Counter[int] = Counter()
    worker(counting_registry(calls, fail_first={1, 3}))
    handles = [producer.submit(Job(n=n)) for n in range(4)]
    ids = [h.task_id for h in handles]
    wait_for(
        lambda: (
            Counter(v.state for v in statusreads.snapshot(settings).values())
            == {TaskState.SUCCEEDED: 2, TaskState.DEAD_LETTERED: 2}
        ),
        30.0,
        message="two tasks to succeed and two to be dead-lettered",
    )
    main = queue_topics(settings).main
    original_end = end_offsets(settings, main)

    first = replay(settings, topic=main, from_offset=0)

    assert sorted(i.task_id or "" for i in first.items if i.outcome == "replayed") == sorted(
        [ids[1], ids[3]]
    )
    skipped = {i.task_id: i.reason for i in first.items if i.outcome == "skipped"}
    assert set(skipped) == {ids[0], ids[2]}
    assert all("succeeded" in (reason or "") for reason in skipped.values())
    wait_for(lambda: finished(settings, [ids[1], ids[3]], 1), 30.0, message="reruns to succeed")
    assert calls == {0: 1, 1: 2, 2: 1, 3: 2}

    # the range of the original submits only: the reruns above are on the topic too
    forced = [
        replay(settings, topic=main, partition=p, from_offset=0, to_offset=end - 1, force=True)
        for p, end in original_end.items()
        if end > 0
    ]

    assert sum(s.replayed for s in forced) == 4
    assert sum(s.skipped for s in forced) == 0
    wait_for(
        lambda: finished(settings, [ids[0], ids[2]], 1) and finished(settings, [ids[1], ids[3]], 2),
        30.0,
        message="forced reruns to succeed, each one generation up",
    )
    assert calls == {0: 2, 1: 3, 2: 2, 3: 3}


def test_dry_run_replay_reports_what_it_would_do_and_writes_nothing(
    settings: Settings, producer: Producer
) -> None:
    handles = [producer.submit(Job(n=n)) for n in range(3)]
    names = queue_topics(settings)
    before = {t: end_offsets(settings, t) for t in (names.main, names.status, names.redriven)}

    summary = replay(settings, topic=names.main, from_offset=0, dry_run=True)
    result = CliRunner().invoke(
        app,
        [
            *("replay", "--topic", names.main, "--from-offset", "0", "--dry-run"),
            *("--bootstrap-servers", settings.bootstrap_servers),
            *("--topic-prefix", settings.topic_prefix),
        ],
        env=worker_env(settings),
    )

    assert summary.dry_run
    assert sorted(i.task_id or "" for i in summary.items) == sorted(h.task_id for h in handles)
    assert {i.outcome for i in summary.items} == {"would_replay"}
    assert result.exit_code == 0, result.output
    assert "would replay 3, skipped 0, failed 0" in result.output
    assert {t: end_offsets(settings, t) for t in before} == before
    for handle in handles:
        view = statusreads.latest(settings, handle.task_id)
        assert view is not None
        assert (view.state, view.generation) == (TaskState.QUEUED, 0)


def test_undecodable_records_are_counted_as_failed_and_the_rest_is_replayed(
    settings: Settings, producer: Producer, raw_producer: RawProducer
) -> None:
    main = queue_topics(settings).main
    key = key_for_partition(0, settings.partitions)
    garbage = raw_producer.produce(main, b"\x00not an envelope", key=key.encode(), partition=0)
    tombstone = raw_producer.produce(main, None, key=key.encode(), partition=0)
    handle = producer.submit(Job(n=1), key=key)
    assert handle.partition == 0

    summary = replay(settings, topic=main, partition=0, from_offset=0)

    failed = {i.offset: i.reason or "" for i in summary.items if i.outcome == "failed"}
    assert set(failed) == {garbage.offset, tombstone.offset}
    assert failed[garbage.offset].startswith("decode_error")
    assert failed[tombstone.offset].startswith("empty_value")
    assert [i.task_id for i in summary.items if i.outcome == "replayed"] == [handle.task_id]
    view = statusreads.latest(settings, handle.task_id)
    assert view is not None
    assert view.generation == 1
    assert (view.note or "").startswith(f"replayed from {main}[0]@{handle.offset} by ")


# -- chunked re-submission -------------------------------------------------------------------


def spy_on_batches(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The task ids of every ``Producer.resubmit_many`` call, in call order (calls go through)."""
    batches: list[list[str]] = []
    original = Producer.resubmit_many

    def recorded(self: Producer, batch: Sequence[Resubmission]) -> list[TaskHandle | SubmitError]:
        batches.append([r.task_id for r in batch])
        return original(self, batch)

    monkeypatch.setattr(Producer, "resubmit_many", recorded)
    return batches


def test_replay_spanning_several_chunks_resubmits_each_task_once_in_key_order(
    settings: Settings, producer: Producer, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = ["red", "green", "blue"]
    handles = producer.submit_many(
        [Job(n=n) for n in range(20)], keys=[keys[n % 3] for n in range(20)]
    )
    main = queue_topics(settings).main
    batches = spy_on_batches(monkeypatch)
    progress: list[tuple[int, int]] = []

    summary = replay(
        settings,
        topic=main,
        from_offset=0,
        chunk_size=7,
        progress=lambda done, total: progress.append((done, total)),
    )

    assert (summary.replayed, summary.skipped, summary.failed) == (20, 0, 0)
    assert [len(batch) for batch in batches] == [7, 7, 6]
    assert progress == [(done, 20) for done in range(1, 21)]
    on_topic = envelopes(settings, main)
    assert Counter(env.task_id for _, env in on_topic) == {h.task_id: 2 for h in handles}
    replayed = {(rec.partition, rec.offset): env for rec, env in on_topic if env.generation == 1}
    assert len(replayed) == 20
    original = {(h.partition, h.offset): h.task_id for h in handles}
    for item in summary.items:
        # each item is reported where it was read and where its re-submission landed
        assert original[(item.partition, item.offset)] == item.task_id
        assert item.new_partition is not None
        assert item.new_offset is not None
        envelope = replayed[(item.new_partition, item.new_offset)]
        assert envelope.task_id == item.task_id
        assert (envelope.origin.partition, envelope.origin.offset) == (
            item.partition,
            item.offset,
        )
    for i, key in enumerate(keys):
        submit_order = [h.task_id for h in handles[i::3]]
        replay_order = [
            env.task_id for rec, env in on_topic if env.generation == 1 and rec.key == key.encode()
        ]
        assert replay_order == submit_order


class Blob(Task):
    text: str


def test_replay_item_over_the_size_limit_fails_alone_and_the_rest_of_its_chunk_is_replayed(
    settings: Settings, producer: Producer, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = ["a", "b", "x" * 3000, "c", "d", "e"]
    handles = [producer.submit(Blob(text=t), key="one-key") for t in texts]
    big = handles[2]
    main = queue_topics(settings).main
    batches = spy_on_batches(monkeypatch)
    # the limit was lowered since these were submitted: the big one no longer fits
    lowered = settings.model_copy(update={"max_message_bytes": 2048, "dlq_max_bytes": 2048})

    summary = replay(lowered, topic=main, from_offset=0, chunk_size=4)

    [failed] = [i for i in summary.items if i.outcome == "failed"]
    assert failed.task_id == big.task_id
    assert (failed.partition, failed.offset) == (big.partition, big.offset)
    assert (failed.reason or "").startswith(f"not re-submitted: task {big.task_id} encodes to ")
    assert "over max_message_bytes=2048" in (failed.reason or "")
    assert (failed.new_partition, failed.new_offset) == (None, None)
    others = [h.task_id for h in handles if h is not big]
    assert [i.task_id for i in summary.items if i.outcome == "replayed"] == others
    assert batches == [others[:4], others[4:]]  # the refused one never joined a chunk
    replayed = [(r, e) for r, e in envelopes(settings, main) if e.generation == 1]
    assert [e.task_id for _, e in replayed] == others
    new_places = [(i.new_partition, i.new_offset) for i in summary.items if i.outcome == "replayed"]
    assert [(r.partition, r.offset) for r, _ in replayed] == new_places
    view = statusreads.latest(settings, big.task_id)
    assert view is not None
    assert (view.state, view.generation) == (TaskState.QUEUED, 0)


def test_replayed_task_the_broker_refuses_fails_alone_and_its_queued_status_is_withdrawn(
    settings: Settings, producer: Producer, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = queue_topics(settings)
    small = [
        producer.submit(Blob(text=str(n)), key=key_for_partition(p, settings.partitions))
        for n, p in enumerate([0, 2, 0, 2, 0, 2])
    ]
    # incompressible: lz4 must not shrink it under the limit set below
    big = producer.submit(
        Blob(text=base64.b64encode(os.urandom(8000)).decode()),
        key=key_for_partition(1, settings.partitions),
    )
    set_topic_config(settings, names.main, "max.message.bytes", "4096")
    batches = spy_on_batches(monkeypatch)

    summary = replay(settings, topic=names.main, from_offset=0, chunk_size=20)

    assert len(batches) == 1
    assert sorted(batches[0]) == sorted(h.task_id for h in [*small, big])
    [failed] = [i for i in summary.items if i.outcome == "failed"]
    assert failed.task_id == big.task_id
    assert "MSG_SIZE_TOO_LARGE" in (failed.reason or "")
    replayed = {i.task_id: i for i in summary.items if i.outcome == "replayed"}
    assert set(replayed) == {h.task_id for h in small}
    on_topic = {
        (r.partition, r.offset): e.task_id
        for r, e in envelopes(settings, names.main)
        if e.generation == 1
    }
    assert on_topic == {(i.new_partition, i.new_offset): t for t, i in replayed.items()}
    big_statuses = [
        r.value for r in read_topic(settings, names.status) if r.key == big.task_id.encode()
    ]
    assert big_statuses[-1] is None  # withdrawn: Kafka does not have the task it announced
    assert status.decode_status(big_statuses[-2]).generation == 1


def set_topic_config(settings: Settings, topic: str, name: str, value: str) -> None:
    """Change one config of ``topic``; returns once the broker describes the new value."""
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    change = ConfigResource(
        ConfigResource.Type.TOPIC,
        topic,
        incremental_configs=[ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)],
    )
    for future in admin.incremental_alter_configs([change]).values():
        future.result(timeout=30.0)

    def described() -> bool:
        found = admin.describe_configs([resource])[resource].result(timeout=10.0)
        return bool(found[name].value == value)

    wait_for(described, 10.0, message=f"{topic} to have {name}={value}")
