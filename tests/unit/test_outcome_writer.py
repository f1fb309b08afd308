"""streamjobs.worker.outcomes: an offset completes only once Kafka has its whole outcome.

No broker: fake producers hold or fail deliveries per topic (:mod:`tests.unit.fake_kafka`).
"""

from __future__ import annotations

import pytest

from streamjobs.client import TopicPartition
from streamjobs.errors import KafkaUnavailable, StreamJobsError
from streamjobs.settings import Settings
from streamjobs.worker.outcomes import (
    OutcomeWriter,
    OutRecord,
    TransactionAborted,
    TransactionalWriter,
)
from streamjobs.worker.partitions import Partition
from tests.unit.fake_kafka import FakeConsumer, FakeKafka, FakeTransactionalProducer

SETTINGS = Settings(topic_prefix="sj")
MAIN = "sj.default"
STATUS = "sj.status"
TIER = "sj.default.retry.5s"
OUTCOME = [OutRecord(TIER, b"k", b"retry"), OutRecord(STATUS, b"t", b"retry_scheduled")]


@pytest.fixture
def kafka() -> FakeKafka:
    return FakeKafka()


@pytest.fixture
def errors() -> list[StreamJobsError]:
    return []


def _part(*offsets: int) -> Partition:
    part = Partition((MAIN, 0))
    for offset in offsets:
        part.tracker.dispatched(offset)
    return part


def test_offset_completes_only_when_every_record_of_its_outcome_is_acknowledged(
    kafka: FakeKafka, errors: list[StreamJobsError]
) -> None:
    writer = OutcomeWriter(SETTINGS, errors.append, kafka)
    part = _part(0)
    kafka.hold(STATUS)
    writer.write(OUTCOME, (MAIN, 0, 0), part.completer(0))
    assert kafka.produced() == [], "executor threads only queue: the poll thread produces"
    writer.serve(0)
    assert [s.topic for s in kafka.produced()] == [TIER, STATUS]
    assert part.tracker.commit_offset() is None, "the retry record alone is not the outcome"
    kafka.release()
    writer.serve(0)
    assert part.tracker.commit_offset() == 1
    assert errors == []


def test_failed_delivery_reports_an_error_and_keeps_the_offset_uncommitted(
    kafka: FakeKafka, errors: list[StreamJobsError]
) -> None:
    writer = OutcomeWriter(SETTINGS, errors.append, kafka)
    part = _part(0)
    kafka.failing_topics.add(STATUS)
    writer.write(OUTCOME, (MAIN, 0, 0), part.completer(0))
    writer.flush(1.0)
    assert part.tracker.commit_offset() is None
    [error] = errors
    assert isinstance(error, KafkaUnavailable)
    assert "outcome write failed: _MSG_TIMED_OUT" in str(error)


def test_full_local_queue_is_served_and_the_record_produced_again(
    kafka: FakeKafka, errors: list[StreamJobsError]
) -> None:
    writer = OutcomeWriter(SETTINGS, errors.append, kafka)
    [producer] = kafka.producers
    producer.full_for = 3
    part = _part(0)
    writer.write(OUTCOME, (MAIN, 0, 0), part.completer(0))
    writer.flush(1.0)
    assert [s.topic for s in kafka.produced()] == [TIER, STATUS], "nothing lost, nothing twice"
    assert part.tracker.commit_offset() == 1


def test_commit_goes_to_the_group(kafka: FakeKafka, errors: list[StreamJobsError]) -> None:
    writer = OutcomeWriter(SETTINGS, errors.append, kafka)
    consumer = FakeConsumer(kafka, None)
    writer.commit(consumer, [TopicPartition(MAIN, 0, 5)], asynchronous=False)
    assert kafka.committed == {(MAIN, 0): 5}


def _transactional(
    kafka: FakeKafka, errors: list[StreamJobsError]
) -> tuple[TransactionalWriter, FakeTransactionalProducer]:
    writer = TransactionalWriter(SETTINGS, errors.append, "g.w-1", kafka)
    [producer] = kafka.producers
    assert isinstance(producer, FakeTransactionalProducer)
    assert producer.transactional_id == "g.w-1"
    return writer, producer


def test_exactly_once_writes_the_outcomes_below_the_commit_with_the_offsets_in_one_transaction(
    kafka: FakeKafka, errors: list[StreamJobsError]
) -> None:
    writer, _producer = _transactional(kafka, errors)
    part = _part(0, 1)
    writer.write([OutRecord(STATUS, b"a", b"done-0")], (MAIN, 0, 0), part.completer(0))
    writer.write([OutRecord(STATUS, b"b", b"done-1")], (MAIN, 0, 1), part.completer(1))
    writer.serve()
    assert kafka.produced() == [], "staged until the commit"
    assert part.tracker.commit_offset() == 2, "staging completes the offset"
    writer.commit(FakeConsumer(kafka, None), [TopicPartition(MAIN, 0, 1)], asynchronous=True)
    [(records, offsets)] = kafka.kinds("transaction")
    assert [r.value for r in records] == [b"done-0"], "only the outcomes below the commit"
    assert offsets == [TopicPartition(MAIN, 0, 1)]
    writer.commit(FakeConsumer(kafka, None), [TopicPartition(MAIN, 0, 2)], asynchronous=True)
    assert [r.value for r in kafka.kinds("transaction")[1][0]] == [b"done-1"]


def test_exactly_once_never_stages_an_outcome_of_a_partition_given_up(
    kafka: FakeKafka, errors: list[StreamJobsError]
) -> None:
    writer, _producer = _transactional(kafka, errors)
    part = _part(0)
    writer.write([OutRecord(STATUS, b"a", b"done-0")], (MAIN, 0, 0), part.completer(0))
    part.lost = True
    writer.commit(FakeConsumer(kafka, None), [TopicPartition(MAIN, 0, 1)], asynchronous=False)
    [(records, _offsets)] = kafka.kinds("transaction")
    assert records == []


@pytest.mark.parametrize(
    ("failure", "message", "renewed"),
    [("abortable", "transaction aborted", 0), ("fatal", "transactional producer replaced", 1)],
)
def test_failed_transaction_is_aborted_or_its_producer_replaced_and_nothing_is_committed(
    kafka: FakeKafka, errors: list[StreamJobsError], failure: str, message: str, renewed: int
) -> None:
    writer, producer = _transactional(kafka, errors)
    part = _part(0)
    writer.write([OutRecord(STATUS, b"a", b"done-0")], (MAIN, 0, 0), part.completer(0))
    producer.fail_next = failure
    with pytest.raises(TransactionAborted, match=message):
        writer.commit(FakeConsumer(kafka, None), [TopicPartition(MAIN, 0, 1)], asynchronous=False)
    assert kafka.committed == {}
    assert producer.renewed == renewed
    # the staged outcome went with the transaction: the record is read and run again
    writer.commit(FakeConsumer(kafka, None), [TopicPartition(MAIN, 0, 1)], asynchronous=False)
    [(records, _offsets)] = kafka.kinds("transaction")
    assert records == []


def test_a_transaction_whose_producer_cannot_be_replaced_yet_still_counts_as_aborted(
    kafka: FakeKafka, errors: list[StreamJobsError]
) -> None:
    writer, producer = _transactional(kafka, errors)
    part = _part(0)
    writer.write([OutRecord(STATUS, b"a", b"done-0")], (MAIN, 0, 0), part.completer(0))
    producer.fail_next = "fatal"
    producer.fail_renew = True  # the transaction coordinator has not moved yet
    with pytest.raises(TransactionAborted, match="being replaced"):
        writer.commit(FakeConsumer(kafka, None), [TopicPartition(MAIN, 0, 1)], asynchronous=False)
    assert kafka.committed == {}
