"""The scheduler's transactional producer: a fire, and the schedule state it settles, as one
Kafka transaction.

Owns the producer whose ``transactional.id`` is the same on every worker of a queue
(``streamjobs-scheduler.<prefix>.<queue>``): initialising it is the claim that fences the previous
leader (:mod:`streamjobs.scheduler.leader`), and committing through it is how a fire becomes
visible. Readers use ``read_committed``: they see the task, its ``queued`` status and the
schedule's new state together, or none of them. Does not decide what to write.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from streamjobs import client
from streamjobs.errors import KafkaUnavailable
from streamjobs.settings import Settings

_log = logging.getLogger(__name__)
_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Out:
    """One record of a transaction (``value`` None: a tombstone)."""

    topic: str
    key: bytes
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()


class Fenced(KafkaUnavailable):
    """The transaction's outcome is unknown, or a newer leader fenced us: stop leading."""


class Aborted(KafkaUnavailable):
    """The transaction was aborted: nothing of it is visible; the fire is still owed."""


def transactional_id(settings: Settings) -> str:
    return f"streamjobs-scheduler.{settings.topic_prefix}.{settings.queue}"


class FireTransactions:
    """Writes record batches as transactions; ``claim`` first, again after ``Fenced``."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producer: client.Producer | None = None

    def claim(self) -> None:
        """Start the queue's transactional producer, fencing (aborting) any earlier leader's."""
        self.close()
        overrides: dict[str, str | int] = {"transactional.id": transactional_id(self._settings)}
        if "transaction.timeout.ms" not in self._settings.kafka:
            overrides["transaction.timeout.ms"] = 10_000
        producer = client.new_producer(self._settings, **overrides)
        try:
            producer.init_transactions(_TIMEOUT_S)
        except client.KafkaException as exc:
            raise client.unavailable(exc) from exc
        self._producer = producer

    def write(self, records: Sequence[Out]) -> None:
        """One transaction. Raises Aborted (nothing visible) or Fenced (unknown: step down)."""
        producer = self._producer
        if producer is None:
            raise Fenced("no claimed producer")
        try:
            producer.begin_transaction()
            for record in records:
                producer.produce(
                    record.topic,
                    record.value,
                    record.key,
                    headers=list(record.headers) or None,
                )
            producer.commit_transaction(_TIMEOUT_S)
        except client.KafkaException as exc:
            error = exc.args[0]
            if error.txn_requires_abort():
                self._abort(producer)
                raise Aborted(f"fire transaction aborted: {error.str()}") from exc
            self.close()
            raise Fenced(f"fire transaction failed: {error.name()}: {error.str()}") from exc
        except BufferError as exc:  # a handful of records never fill the queue; be safe
            self._abort(producer)
            raise Aborted("producer queue full") from exc

    def _abort(self, producer: client.Producer) -> None:
        try:
            producer.abort_transaction(_TIMEOUT_S)
        except client.KafkaException as exc:
            self.close()
            raise Fenced(f"cannot abort the fire transaction: {exc.args[0].str()}") from exc

    def close(self) -> None:
        if self._producer is not None:
            self._producer = None  # an open transaction is aborted by the next claim
