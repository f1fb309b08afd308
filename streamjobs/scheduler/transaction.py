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
        self._clients = client.KafkaClients(settings)
        self._id = transactional_id(settings)
        self._producer: client.TransactionalProducer | None = None

    def claim(self) -> None:
        """Start the queue's transactional producer, fencing (aborting) any earlier leader's."""
        self.close()
        self._producer = self._clients.transactional_producer(self._id)

    def write(self, records: Sequence[Out]) -> None:
        """One transaction. Raises Aborted (nothing visible) or Fenced (unknown: step down)."""
        producer = self._producer
        if producer is None:
            raise Fenced("no claimed producer")
        try:
            producer.begin()
            for record in records:
                queued = producer.produce(
                    record.topic, record.value, record.key, headers=list(record.headers) or None
                )
                if not queued:  # a handful of records never fill the queue; be safe
                    self._abort(producer, "producer queue full")
            producer.commit(_TIMEOUT_S)
        except Aborted:
            raise
        except KafkaUnavailable as exc:
            # abortable: nothing of it is visible and the fire is still owed; not abortable
            # (fenced, or the commit's outcome unknown): step down and read everything again
            self._abort(producer, f"fire transaction aborted: {exc}")

    def _abort(self, producer: client.TransactionalProducer, why: str) -> None:
        if producer.abort(_TIMEOUT_S):
            raise Aborted(why)
        self.close()
        raise Fenced(f"fire transaction failed and cannot be aborted: {why}")

    def close(self) -> None:
        if self._producer is not None:
            self._producer = None  # an open transaction is aborted by the next claim
