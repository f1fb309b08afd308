"""streamjobs.worker.handover: what a rebalance commits, drops and rewinds.

No broker: a fake consumer records commits and seeks, fake producers stand in for the outcome
writer's and the crash ledger's (:mod:`tests.unit.fake_kafka`).
"""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from streamjobs.client import OFFSET_BEGINNING, TopicPartition
from streamjobs.errors import StreamJobsError
from streamjobs.settings import Settings
from streamjobs.worker import commit_metadata
from streamjobs.worker.handover import Handover
from streamjobs.worker.outcomes import OutcomeWriter, OutRecord, TransactionalWriter
from streamjobs.worker.partitions import Assigned, Partition
from streamjobs.worker.quarantine import StartLedger, owner_key
from tests.unit.fake_kafka import FakeConsumer, FakeKafka

SETTINGS = Settings(topic_prefix="sj", shutdown_grace=timedelta(milliseconds=200))
MAIN = "sj.default"
STARTS = "sj.default.starts"
STATUS = "sj.status"


class Failed:
    """The writer's error callback: what a worker's ``fail`` would have been told."""

    def __init__(self) -> None:
        self.errors: list[StreamJobsError] = []

    def __call__(self, error: StreamJobsError) -> None:
        self.errors.append(error)


def _handover(
    kafka: FakeKafka, *, exactly_once: bool = False
) -> tuple[Handover, Assigned, OutcomeWriter, FakeConsumer]:
    parts = Assigned(SETTINGS, MAIN)
    writer: OutcomeWriter
    if exactly_once:
        writer = TransactionalWriter(SETTINGS, Failed(), "g.w-1", kafka)
    else:
        writer = OutcomeWriter(SETTINGS, Failed(), kafka)
    ledger = StartLedger(SETTINGS, STARTS, kafka)
    consumer = FakeConsumer(kafka, None)
    handover = Handover(SETTINGS, parts, writer, ledger, None, clients=kafka)
    return handover, parts, writer, consumer


def _progress(part: Partition, dispatched: range, completed: list[int]) -> None:
    for offset in dispatched:
        part.tracker.dispatched(offset)
    for offset in completed:
        part.tracker.completed(offset)


@pytest.fixture
def kafka() -> FakeKafka:
    return FakeKafka()


def test_assign_takes_the_partitions_and_marks_them_owned_in_the_crash_ledger(
    kafka: FakeKafka,
) -> None:
    handover, parts, _writer, consumer = _handover(kafka)
    handover.assign(consumer, [TopicPartition(MAIN, 0), TopicPartition(MAIN, 1)])
    assert sorted(parts) == [(MAIN, 0), (MAIN, 1)]
    owners = {s.key: s.value for s in kafka.produced(STARTS)}
    assert owners == {owner_key(MAIN, 0): b"active", owner_key(MAIN, 1): b"active"}


def test_revoke_commits_the_contiguous_completed_work_and_releases_the_partition(
    kafka: FakeKafka,
) -> None:
    handover, parts, _writer, consumer = _handover(kafka)
    handover.assign(consumer, [TopicPartition(MAIN, 0)])
    _progress(parts[(MAIN, 0)], range(4), completed=[0, 1, 3])  # 2 is still in flight
    handover.revoke(consumer, [TopicPartition(MAIN, 0)])
    [commit] = kafka.commits()
    assert commit.offset == 2, "never past the task still in flight"
    assert commit_metadata.decode(2, commit.metadata) == [(3, 4)], "3 is done: the next skips it"
    assert (MAIN, 0) not in parts
    assert kafka.produced(STARTS)[-1].value == b"released", "a clean handover"


def test_revoke_waits_for_queued_outcomes_and_commits_them(kafka: FakeKafka) -> None:
    handover, parts, writer, consumer = _handover(kafka)
    handover.assign(consumer, [TopicPartition(MAIN, 0)])
    part = parts[(MAIN, 0)]
    _progress(part, range(2), completed=[0])
    # offset 1's task finished: its outcome is queued, not yet produced nor acknowledged
    writer.write([OutRecord(STATUS, b"t-1", b"succeeded")], (MAIN, 0, 1), part.completer(1))
    handover.revoke(consumer, [TopicPartition(MAIN, 0)])
    assert kafka.commits() == [TopicPartition(MAIN, 0, 2)]
    assert [s.key for s in kafka.produced(STATUS)] == [b"t-1"]


def test_revoked_partition_refuses_new_tasks_and_leaves_no_pause_behind(
    kafka: FakeKafka,
) -> None:
    handover, parts, _writer, consumer = _handover(kafka)
    handover.assign(consumer, [TopicPartition(MAIN, 0)])
    part = parts[(MAIN, 0)]
    parts.hold(consumer, part, 5, until_ms=2**62)  # a held head pauses it
    assert consumer.paused == {(MAIN, 0)}
    handover.revoke(consumer, [TopicPartition(MAIN, 0)])
    assert part.revoked, "the executor checks this before starting a queued task"
    assert consumer.paused == set(), "librdkafka would keep the pause into a later assignment"


def test_lost_partitions_commit_nothing_and_their_late_outcomes_never_complete(
    kafka: FakeKafka,
) -> None:
    handover, parts, _writer, consumer = _handover(kafka)
    handover.assign(consumer, [TopicPartition(MAIN, 0)])
    part = parts[(MAIN, 0)]
    _progress(part, range(3), completed=[0, 1])
    done = part.completer(2)
    handover.lose(consumer, [TopicPartition(MAIN, 0)])
    assert kafka.commits() == [], "another member may own it already"
    assert (MAIN, 0) not in parts
    assert done() is False, "an outcome of a lost partition must not count"
    assert part.tracker.commit_offset() == 2


def test_lost_partitions_drop_staged_exactly_once_outcomes(kafka: FakeKafka) -> None:
    handover, parts, writer, consumer = _handover(kafka, exactly_once=True)
    handover.assign(consumer, [TopicPartition(MAIN, 0)])
    part = parts[(MAIN, 0)]
    _progress(part, range(1), completed=[])
    writer.write([OutRecord(STATUS, b"t-0", b"succeeded")], (MAIN, 0, 0), part.completer(0))
    writer.serve()  # staged: written only with the commit of offset 1
    handover.lose(consumer, [TopicPartition(MAIN, 0)])
    writer.commit(consumer, [TopicPartition(MAIN, 0, 1)], asynchronous=False)
    [(records, _offsets)] = kafka.kinds("transaction")
    assert records == [], "a lost partition's staged outcome was written"


def test_failed_async_commit_is_committed_again_on_the_next_round(kafka: FakeKafka) -> None:
    handover, parts, _writer, consumer = _handover(kafka)
    handover.assign(consumer, [TopicPartition(MAIN, 0)])
    part = parts[(MAIN, 0)]
    _progress(part, range(1), completed=[0])
    handover.commit(consumer, [part], asynchronous=True)
    handover.commit(consumer, [part], asynchronous=True)
    assert kafka.commits() == [TopicPartition(MAIN, 0, 1)], "nothing new: nothing committed again"
    handover.committed("REQUEST_TIMED_OUT: fake", [TopicPartition(MAIN, 0, 1)])
    handover.commit(consumer, [part], asynchronous=True)
    assert kafka.commits() == [TopicPartition(MAIN, 0, 1), TopicPartition(MAIN, 0, 1)]


def test_failed_sync_commit_is_logged_and_retried_later(kafka: FakeKafka) -> None:
    handover, parts, _writer, consumer = _handover(kafka)
    handover.assign(consumer, [TopicPartition(MAIN, 0)])
    part = parts[(MAIN, 0)]
    _progress(part, range(1), completed=[0])
    consumer.fail_commits = True
    handover.commit(consumer, [part], asynchronous=False)
    consumer.fail_commits = False
    handover.commit(consumer, [part], asynchronous=False)
    assert kafka.commits() == [TopicPartition(MAIN, 0, 1)]


@pytest.mark.parametrize("failure", ["abortable", "fatal"])
def test_aborted_transaction_rewinds_to_the_committed_offsets(
    kafka: FakeKafka, failure: str
) -> None:
    handover, parts, _writer, consumer = _handover(kafka, exactly_once=True)
    handover.assign(consumer, [TopicPartition(MAIN, 0), TopicPartition(MAIN, 1)])
    kafka.committed[(MAIN, 0)] = 7  # partition 1 has no commit yet
    old = parts[(MAIN, 0)]
    _progress(old, range(7, 10), completed=[7, 8, 9])
    [producer] = [p for p in kafka.producers if hasattr(p, "fail_next")]
    producer.fail_next = failure  # type: ignore[attr-defined]
    handover.commit(consumer, list(parts.values()), asynchronous=False)
    assert kafka.commits() == [], "the transaction did not commit"
    assert old.revoked, "tasks queued for the old state must never start"
    assert old.lost, "their outcomes must never count"
    assert parts[(MAIN, 0)] is not old, "progress starts afresh from the committed offset"
    assert sorted(consumer.seeks, key=lambda p: p.partition) == [
        TopicPartition(MAIN, 0, 7),
        TopicPartition(MAIN, 1, OFFSET_BEGINNING),
    ]
    if failure == "fatal":
        assert producer.renewed == 1, "a fenced producer is replaced"  # type: ignore[attr-defined]
    else:
        assert producer.aborted == 1  # type: ignore[attr-defined]


def test_a_rewind_waits_for_the_committed_offsets_and_commits_nothing_meanwhile(
    kafka: FakeKafka,
) -> None:
    handover, parts, _writer, consumer = _handover(kafka, exactly_once=True)
    handover.assign(consumer, [TopicPartition(MAIN, 0)])
    kafka.committed[(MAIN, 0)] = 7
    old = parts[(MAIN, 0)]
    _progress(old, range(7, 10), completed=[7, 8, 9])
    [producer] = [p for p in kafka.producers if hasattr(p, "fail_next")]
    producer.fail_next = "abortable"  # type: ignore[attr-defined]
    consumer.fail_committed = True  # its coordinator is down too
    handover.commit(consumer, list(parts.values()), asynchronous=False)
    assert parts[(MAIN, 0)] is old, "no fresh start until the committed offset is known"
    assert old.lost
    # 7-9 were completed by outcomes the abort dropped: committing them would lose the tasks
    handover.commit(consumer, list(parts.values()), asynchronous=False)
    handover.commit_due(consumer)
    assert kafka.commits() == []
    assert consumer.seeks == []
    consumer.fail_committed = False
    handover.commit_due(consumer)
    assert consumer.seeks == [TopicPartition(MAIN, 0, 7)]
    assert parts[(MAIN, 0)] is not old
    assert kafka.commits() == []


def test_a_worker_stopping_during_a_postponed_rewind_commits_nothing(kafka: FakeKafka) -> None:
    handover, parts, _writer, consumer = _handover(kafka, exactly_once=True)
    handover.assign(consumer, [TopicPartition(MAIN, 0)])
    _progress(parts[(MAIN, 0)], range(3), completed=[0, 1, 2])
    [producer] = [p for p in kafka.producers if hasattr(p, "fail_next")]
    producer.fail_next = "fatal"  # type: ignore[attr-defined]
    producer.fail_renew = True  # type: ignore[attr-defined]  # the new coordinator not up yet
    consumer.fail_committed = True
    handover.commit(consumer, list(parts.values()), asynchronous=False)
    handover.hand_back(consumer, grace=0.0)
    assert kafka.commits() == [], "the aborted outcomes of 0-2 were never written"


# -- the done offsets past a commit, handed to the next owner in its metadata ---------------------


def test_a_commit_carries_the_offsets_done_past_it_in_its_metadata(kafka: FakeKafka) -> None:
    handover, parts, _writer, consumer = _handover(kafka)
    handover.assign(consumer, [TopicPartition(MAIN, 0)])
    # 0 and 3 run long (or wait for their key): 1, 2 and 5-7 are done behind them
    _progress(parts[(MAIN, 0)], range(10), completed=[1, 2, 5, 6, 7])
    handover.commit(consumer, list(parts.values()), asynchronous=False)
    [commit] = kafka.commits()
    assert commit.offset == 0
    assert commit_metadata.decode(0, commit.metadata) == [(1, 3), (5, 8)]


def test_a_new_owner_skips_what_the_previous_one_finished_past_its_commit(
    kafka: FakeKafka,
) -> None:
    kafka.committed[(MAIN, 0)] = 40
    kafka.metadata[(MAIN, 0)] = commit_metadata.encode(40, [(41, 43)])
    handover, parts, _writer, consumer = _handover(kafka)
    handover.assign(consumer, [TopicPartition(MAIN, 0)])
    part = parts[(MAIN, 0)]
    assert not part.finished_before(40)
    part.tracker.dispatched(40)
    assert part.finished_before(41)
    assert part.finished_before(42)
    assert not part.finished_before(43)
    assert part.next_offset == 43


def test_a_refused_commit_is_logged_with_its_cause_and_offered_again(
    kafka: FakeKafka, caplog: pytest.LogCaptureFixture
) -> None:
    handover, parts, _writer, consumer = _handover(kafka)
    handover.assign(consumer, [TopicPartition(MAIN, 0)])
    _progress(parts[(MAIN, 0)], range(1), completed=[0])
    kafka.refuse[(MAIN, 0)] = "STALE_MEMBER_EPOCH: fake"
    with caplog.at_level(logging.WARNING):
        handover.commit(consumer, list(parts.values()), asynchronous=False)
    assert "STALE_MEMBER_EPOCH" in caplog.text
    assert kafka.committed == {}
    handover.commit(consumer, list(parts.values()), asynchronous=False)
    assert kafka.committed == {(MAIN, 0): 1}


def test_an_async_commit_refused_per_partition_is_logged_and_offered_again(
    kafka: FakeKafka, caplog: pytest.LogCaptureFixture
) -> None:
    handover, parts, _writer, consumer = _handover(kafka)
    handover.assign(consumer, [TopicPartition(MAIN, 0)])
    part = parts[(MAIN, 0)]
    _progress(part, range(1), completed=[0])
    handover.commit(consumer, [part], asynchronous=True)
    refused = TopicPartition(MAIN, 0, 1, error="REBALANCE_IN_PROGRESS: fake")
    with caplog.at_level(logging.WARNING):
        handover.committed(None, [refused])  # the request succeeded, the partition did not
    assert "REBALANCE_IN_PROGRESS" in caplog.text
    assert part.tracker.pending() == (1, [])


def test_metadata_the_broker_finds_too_large_is_left_out_of_later_commits(
    kafka: FakeKafka,
) -> None:
    handover, parts, _writer, consumer = _handover(kafka)
    handover.assign(consumer, [TopicPartition(MAIN, 0)])
    _progress(parts[(MAIN, 0)], range(3), completed=[2])
    kafka.refuse[(MAIN, 0)] = "OFFSET_METADATA_TOO_LARGE: fake"
    handover.commit(consumer, list(parts.values()), asynchronous=False)
    handover.commit(consumer, list(parts.values()), asynchronous=False)
    first, again = kafka.commits()
    assert first.metadata
    assert not again.metadata
    assert kafka.committed == {(MAIN, 0): 0}


def test_exactly_once_commits_carry_no_metadata(kafka: FakeKafka) -> None:
    # a transactional worker's outcomes past its commit are staged, not written yet
    handover, parts, _writer, consumer = _handover(kafka, exactly_once=True)
    handover.assign(consumer, [TopicPartition(MAIN, 0)])
    _progress(parts[(MAIN, 0)], range(3), completed=[0, 2])
    handover.commit(consumer, list(parts.values()), asynchronous=False)
    assert kafka.commits() == [TopicPartition(MAIN, 0, 1)]
