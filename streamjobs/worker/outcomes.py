"""Durable outcomes: the records that settle a task, and knowing when Kafka has them.

Owns how a task's outcome reaches Kafka (its status records, the retry, hop or dead-letter
record) and the signal that lets the worker count its offset as complete, in two modes:

* ``OutcomeWriter`` (at least once, the default): records are produced at once and ``done`` runs
  when every record of the outcome is acknowledged; offsets are committed to the group as usual.
* ``TransactionalWriter`` (``exactly_once``): records are staged per source offset and written,
  together with the consumed offsets (``send_offsets_to_transaction``), in one Kafka transaction
  per commit. Readers using ``read_committed`` see each outcome exactly once. A handler's own side
  effects (an e-mail, an HTTP call) can still happen twice: only the Kafka bookkeeping is exact.

``done`` callbacks and commits always run on the worker's poll thread, so the offset trackers they
update need no locks. Does not decide outcomes (:mod:`streamjobs.retry`) or consume records.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from streamjobs import client
from streamjobs.deadletter import encode_dead_letter
from streamjobs.envelope import Envelope, encode_envelope
from streamjobs.errors import (
    KafkaUnavailable,
    ResultTooLarge,
    StreamJobsError,
    TransactionAborted,
    error_text,
    traceback_text,
)
from streamjobs.models import TaskState
from streamjobs.retry import RetryAt
from streamjobs.settings import Settings
from streamjobs.status import AttemptStatuses, encode_status, now_ms, submission_headers
from streamjobs.topics import QueueTopics, ServedTopics

Done = Callable[[], bool]  # False: the outcome is stale (its partition was given up): drop it
Origin = tuple[str, int, int]  # topic, partition, offset of the record being settled
OnError = Callable[[StreamJobsError], None]


@dataclass(frozen=True, slots=True)
class OutRecord:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]] | None = None


# bytes a record needs beyond key, value and headers (record batch framing, generous)
RECORD_OVERHEAD = 512


def record_size(record: OutRecord) -> int:
    """What ``record`` counts against librdkafka's ``message.max.bytes``, generously."""
    headers = sum(len(k) + len(v or b"") for k, v in record.headers or ())
    return len(record.value or b"") + len(record.key or b"") + headers + RECORD_OVERHEAD


class _Acks:
    """Counts the acknowledgements one outcome still needs."""

    __slots__ = ("done", "on_error", "remaining")

    def __init__(self, records: int, done: Done, on_error: OnError) -> None:
        self.remaining = records
        self.done = done
        self.on_error = on_error

    def delivered(self, report: client.Delivery) -> None:
        if report.error is not None:
            # not durable: the offset must never complete; the worker stops and a restart redoes it
            self.on_error(KafkaUnavailable(f"outcome write failed: {report.error}"))
            return
        self.remaining -= 1
        if self.remaining == 0:
            self.done()


class OutcomeWriter:
    """At least once: produce now, complete the offset when Kafka acknowledged every record."""

    exactly_once = False

    def __init__(
        self, settings: Settings, on_error: OnError, clients: client.Clients | None = None
    ) -> None:
        # outcomes are not waited on by anyone: a short linger batches them at high rates
        clients = clients or client.KafkaClients(settings)
        self._producer: client.Producer = clients.producer(**{"linger.ms": 2})
        self._outbox: deque[tuple[Sequence[OutRecord], Done | None]] = deque()
        self._on_error = on_error
        self._poll_thread = threading.get_ident()

    def write(self, records: Sequence[OutRecord], origin: Origin, done: Done | None) -> None:
        """Queue ``records`` for the poll thread, which produces them in order; ``done`` runs
        on the poll thread once all are acked. (One thread calling librdkafka's produce is
        measurably faster than executor threads contending with the poll thread.)"""
        self._outbox.append((records, done))  # deque.append is thread-safe

    def serve(self, timeout: float = 0.0) -> None:
        while self._outbox:
            records, done = self._outbox.popleft()
            callback = _Acks(len(records), done, self._on_error).delivered if done else None
            try:
                for record in records:
                    self._produce(record, callback)
            except KafkaUnavailable as exc:
                # refused before it was queued (outcomes are size-checked when built, so this is
                # unexpected): never durable, so its offset must not complete; stop the worker
                self._on_error(exc)
        self._producer.poll(timeout)

    def flush(self, timeout: float) -> None:
        self.serve()  # what executor threads queued is produced before waiting for acks
        self._producer.flush(timeout)

    def commit(
        self, consumer: client.Consumer, offsets: list[client.TopicPartition], *, asynchronous: bool
    ) -> list[client.TopicPartition]:
        """Commit ``offsets`` to the group; returns the partitions a synchronous commit was
        refused for (each with its ``error``); KafkaUnavailable when the request fails."""
        return consumer.commit(offsets, asynchronous=asynchronous)

    def close(self, timeout: float) -> None:
        self.flush(timeout)

    def _produce(
        self, record: OutRecord, callback: Callable[[client.Delivery], None] | None
    ) -> None:
        while not self._producer.produce(
            record.topic, record.value, record.key, headers=record.headers, on_delivery=callback
        ):
            # the local queue is full: the poll thread serves deliveries, others wait for it
            if threading.get_ident() == self._poll_thread:
                self._producer.poll(0.01)
            else:
                time.sleep(0.001)


class TransactionalWriter(OutcomeWriter):
    """Exactly once: stage outcomes by source offset; each commit is one Kafka transaction.

    Only the poll thread touches the transactional producer. Executor threads hand their
    records over through a queue; at commit, the outcomes of every offset below the committed
    position are produced into the transaction with those offsets, and the rest wait.
    """

    exactly_once = True

    def __init__(
        self,
        settings: Settings,
        on_error: OnError,
        transactional_id: str,
        clients: client.Clients | None = None,
    ) -> None:
        self._on_error = on_error
        self._poll_thread = threading.get_ident()
        self._handover: deque[tuple[Sequence[OutRecord], Origin, Done | None]] = deque()
        self._staged: dict[tuple[str, int], dict[int, list[OutRecord]]] = defaultdict(dict)
        clients = clients or client.KafkaClients(settings)
        self._producer: client.TransactionalProducer = clients.transactional_producer(
            transactional_id
        )
        # each transactional call's budget (its resumes included): past it the coordinator
        # aborts the transaction anyway, and a poll thread blocked for longer (minutes, at
        # 3 x 30 s per call) holds up every task of this worker
        self._budget_s = client.transaction_timeout_s(settings)

    def write(self, records: Sequence[OutRecord], origin: Origin, done: Done | None) -> None:
        self._handover.append((records, origin, done))  # deque.append is thread-safe

    def serve(self, timeout: float = 0.0) -> None:
        """Move handed-over outcomes into the stage and complete their offsets (poll thread)."""
        while self._handover:
            records, (topic, partition, offset), done = self._handover.popleft()
            if done is not None and not done():
                continue  # a task of a partition given up (revoked, lost, rewound): never write
            self._staged[(topic, partition)].setdefault(offset, []).extend(records)
        self._producer.poll(timeout)

    def commit(
        self, consumer: client.Consumer, offsets: list[client.TopicPartition], *, asynchronous: bool
    ) -> list[client.TopicPartition]:
        """One transaction: the staged outcomes below each committed offset, then the offsets."""
        del asynchronous  # a transaction commit is always synchronous
        self.serve()
        if not offsets:
            return []
        try:
            self._producer.begin()
            for position in offsets:
                stage = self._staged.get((position.topic, position.partition), {})
                for offset in sorted(o for o in stage if o < position.offset):
                    for record in stage.pop(offset):
                        self._produce(record, None)
            metadata = consumer.group_metadata()
            self._producer.send_offsets(offsets, metadata, self._budget_s)
            self._producer.commit(self._budget_s)
        except KafkaUnavailable as exc:
            self._recover(exc)
        return []

    def _recover(self, exc: KafkaUnavailable) -> None:
        """After a failed commit: abort if the producer still can, else replace it (a new
        instance with the same transactional id fences the old one's transaction). Either way
        the uncommitted work is read and run again; versioned status records make any outcome
        written twice harmless to readers.

        Always TransactionAborted, even when the replacement could not be initialised yet (the
        next transaction's ``begin`` resumes that): the staged outcomes are gone, so the
        offsets they completed must never be committed without them (Jepsen's advice after an
        unknown outcome: abort or fence, then rewind to the committed offsets)."""
        self._staged.clear()
        if self._producer.abort(self._budget_s):
            raise TransactionAborted(f"transaction aborted: {exc}") from exc
        try:
            self._producer.renew()
        except KafkaUnavailable as renewal:
            raise TransactionAborted(
                f"transactional producer being replaced ({renewal}): {exc}"
            ) from exc
        raise TransactionAborted(f"transactional producer replaced: {exc}") from exc

    def drop(self, keys: Sequence[tuple[str, int]]) -> None:
        """Forget staged outcomes of partitions this worker lost (never written)."""
        for key in keys:
            self._staged.pop(key, None)

    def close(self, timeout: float) -> None:
        self._producer.flush(timeout)


# -- the records of each outcome ---------------------------------------------------------------


class Builder:
    """Builds the records that settle a task, for one worker and the queues it serves: a retry
    or dead letter goes to the tier or dead-letter topic of the queue its record came from."""

    def __init__(
        self, settings: Settings, topics: QueueTopics | ServedTopics, worker_id: str
    ) -> None:
        self._settings = settings
        self._served = topics if isinstance(topics, ServedTopics) else ServedTopics((topics,))
        self._topics = self._served.first
        self.worker_id = worker_id

    def queue_of(self, topic: str) -> str:
        """The queue whose task topic ``topic`` is."""
        return self._served.of(topic).queue or self._settings.queue

    def status(self, envelope: Envelope, state: TaskState, **fields: Any) -> OutRecord:
        """A status record; always keyed by task id (a compacted topic rejects unkeyed ones),
        with the task's submission digest as a header (see :mod:`streamjobs.status`)."""
        value = encode_status(envelope, state, **fields)
        key = envelope.task_id.encode()
        return OutRecord(self._topics.status, key, value, submission_headers(envelope))

    def run_status(
        self,
        envelope: Envelope,
        statuses: AttemptStatuses,
        state: TaskState,
        result: str | None = None,
    ) -> OutRecord:
        """``running`` or ``succeeded`` of one run, from its pre-encoded columns."""
        return OutRecord(
            self._topics.status,
            envelope.task_id.encode(),
            statuses.encode(state, result),
            statuses.headers,
        )

    def succeeded(
        self, envelope: Envelope, statuses: AttemptStatuses, result: str | None
    ) -> OutRecord:
        """The ``succeeded`` record; ResultTooLarge when the result does not fit in it (the
        producer would refuse the record, and no retry of the handler can shrink it)."""
        done = self.run_status(envelope, statuses, TaskState.SUCCEEDED, result)
        size = record_size(done)
        if size > self._settings.max_message_bytes:
            raise ResultTooLarge(
                f"result of {len(result or '')} characters makes a {size}-byte status record, "
                f"over max_message_bytes={self._settings.max_message_bytes}"
            )
        return done

    def retry(
        self,
        record: client.Record,
        envelope: Envelope,
        decision: RetryAt,
        exc: BaseException,
        where: dict[str, Any],
        headers: Sequence[tuple[str, bytes | None]],
    ) -> list[OutRecord]:
        """The next attempt on its tier (same key, so the same partition number) + its status."""
        tier_topic = self._served.of(record.topic).retry[decision.tier]
        retried = replace(
            envelope,
            attempt=decision.attempt,
            not_before_ms=decision.not_before_ms,
            origin=record.position,
        )
        return [
            OutRecord(tier_topic, record.key, encode_envelope(retried), headers),
            self.status(
                envelope,
                TaskState.RETRY_SCHEDULED,
                error_type=type(exc).__name__,
                error=error_text(exc, 2000),
                note=traceback_text(exc),  # the dashboard's task page shows it
                **moved(where, tier_topic),
                not_before_ms=decision.not_before_ms,
            ),
        ]

    def dead_letter(
        self,
        record: client.Record,
        envelope: Envelope | None,
        reason: str,
        exc: BaseException | None,
        where: dict[str, Any] | None,
    ) -> list[OutRecord]:
        """The dead letter (original bytes, reason) and, when the task id is known, its status."""
        value = encode_dead_letter(
            record,
            reason=reason,
            queue=self.queue_of(record.topic),
            worker_id=self.worker_id,
            now_ms=now_ms(),
            max_bytes=self._settings.dlq_max_bytes,
            envelope=envelope,
            error=exc,
        )
        dlq = self._served.of(record.topic).dlq
        if envelope is None:  # undecodable: no task id, so no status record
            return [OutRecord(dlq, record.key, value, record.headers)]
        fields = moved(where or {"worker_id": self.worker_id}, dlq)
        return [
            OutRecord(dlq, envelope.task_id.encode(), value, record.headers),
            self.status(
                envelope,
                TaskState.DEAD_LETTERED,
                reason=reason,
                error_type=type(exc).__name__ if exc else None,
                error=error_text(exc, 2000) if exc else None,
                note=traceback_text(exc) if exc else None,
                **fields,
            ),
        ]


def moved(where: dict[str, Any], topic: str) -> dict[str, Any]:
    """Status fields for a task that now sits on ``topic`` (offset unknown until delivered)."""
    return {**where, "topic": topic, "partition": None, "offset": None}
