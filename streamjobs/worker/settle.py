"""Settling a task record: writing the records that end it, then completing its offset.

Owns :class:`Settler`: a task record is settled by the records of its outcome (a ``succeeded``
status; a retry record and ``retry_scheduled``; a dead letter and ``dead_lettered``; or, for a
tier record released early, the same record on a shorter tier). They go to the outcome writer
with the record's origin, and its offset completes, so the next commit may pass it, only once
Kafka has them; then whoever listens (middleware) hears of it, on the poll thread. Does not
decide the outcome (:mod:`streamjobs.worker.attempt`, :mod:`streamjobs.retry`), build the
records (:class:`~streamjobs.worker.outcomes.Builder`) or commit
(:mod:`streamjobs.worker.handover`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from streamjobs import client
from streamjobs.envelope import Envelope
from streamjobs.worker.keyorder import KeyOrder
from streamjobs.worker.outcomes import Builder, OutcomeWriter, OutRecord
from streamjobs.worker.partitions import Partition
from streamjobs.worker.stats import WorkerStats

_log = logging.getLogger(__name__)


class Settler:
    """Writes what settles a task record; its offset completes once Kafka has it."""

    def __init__(
        self,
        writer: OutcomeWriter,
        build: Builder,
        stats: WorkerStats,
        order: KeyOrder | None,
        retry_ended: Callable[[client.Record], None],
    ) -> None:
        """``retry_ended`` releases (``key_ordered``) the tasks a record's key held back."""
        self.writer = writer
        self.build = build
        self.stats = stats
        self.order = order
        self.retry_ended = retry_ended

    def settle(
        self,
        part: Partition,
        message: client.Record,
        records: list[OutRecord],
        then: Callable[[], None] | None = None,
    ) -> None:
        """Write the records that settle ``message``; its offset completes once they are durable,
        and ``then`` runs after it (on the poll thread), unless the partition was given up."""
        origin = (message.topic, message.partition, message.offset)
        done = part.completer(message.offset)
        if then is not None:
            done = _followed_by(done, then)
        self.writer.write(records, origin, done)

    def running(self, part: Partition, message: client.Record, running: OutRecord) -> None:
        """The ``running`` status. At least once: fire and forget (the outcome follows it on
        the same partition); exactly once: staged, and dropped with its partition."""
        origin = (message.topic, message.partition, message.offset)
        self.writer.write([running], origin, part.alive if self.writer.exactly_once else None)

    def dead_letter(
        self,
        message: client.Record,
        part: Partition,
        envelope: Envelope | None,
        reason: str,
        exc: BaseException | None,
        where: dict[str, Any] | None = None,
        then: Callable[[], None] | None = None,
    ) -> None:
        records = self.build.dead_letter(message, envelope, reason, exc, where)
        self.settle(part, message, records, then)
        self.stats.dead_lettered += 1
        if where is None:  # no attempt ran: bad input, or a crash loop
            self.stats.rejected[reason] = self.stats.rejected.get(reason, 0) + 1
        self.retry_ended(message)
        _log.warning(
            "dead-lettered %s[%d]@%d: %s", message.topic, message.partition, message.offset, reason
        )


def _followed_by(done: Callable[[], bool], then: Callable[[], None]) -> Callable[[], bool]:
    def both() -> bool:
        completed = done()
        if completed:
            then()
        return completed

    return both
