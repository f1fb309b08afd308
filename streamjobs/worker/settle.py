"""Settling a task record: writing the records that end it, then completing its offset.

Owns :class:`Settler`: a task record is settled by the records of its outcome (a ``succeeded``
status; a retry record and ``retry_scheduled``; a dead letter and ``dead_lettered``; or, for a
tier record released early, the same record on a shorter tier). They go to the outcome writer
with the record's origin, and its offset completes, so the next commit may pass it, only once
Kafka has them; then the attempt's outcome is collected, on the poll thread, and whoever listens
(middleware) hears of the collected ones once per poll-loop turn (:meth:`Settler.tell`). A
success is collected with its context only when some middleware wants that
(:meth:`~streamjobs.middleware.Middleware.wants_success_contexts`, asked at each tell); else as
its duration under its (queue, task type), all a counter reads. Does not
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
from streamjobs.middleware import (
    AttemptContext,
    AttemptOutcome,
    Heard,
    KeptContext,
    MiddlewareChain,
    Outcomes,
)
from streamjobs.worker.keyorder import KeyOrder
from streamjobs.worker.outcomes import Builder, OutcomeWriter, OutRecord
from streamjobs.worker.partitions import Completion, Partition
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
        self._heard: list[_Collect] = []  # outcomes written since the last tell (poll thread)
        # successes written since the last tell, when no middleware wants their contexts
        self._counted: dict[tuple[str, str], list[float]] = {}
        # read by the executor threads, set by the poll thread at each tell: until the first,
        # every success is kept with its context
        self._keep_contexts = True

    def settle(
        self,
        part: Partition,
        message: client.Record,
        records: list[OutRecord],
        heard: Heard | None = None,
    ) -> None:
        """Write the records that settle ``message``; its offset completes once they are durable,
        and then the attempt's outcome ``heard`` is collected for :meth:`tell` (on the poll
        thread), unless the partition was given up."""
        origin = (message.topic, message.partition, message.offset)
        if heard is None:
            done: Completion = part.completer(message.offset)
        else:
            done = _Collect(part, message.offset, heard[0].kept(), heard[1], self._heard)
        self.writer.write(records, origin, done)

    def succeeded(
        self,
        part: Partition,
        message: client.Record,
        records: list[OutRecord],
        ctx: AttemptContext,
        kind: tuple[str, str],
        seconds: float,
    ) -> None:
        """:meth:`settle` a succeeded attempt of ``ctx`` (of ``kind``: its queue and task type)
        that took ``seconds``, and collect its outcome once written: an outcome waiting for
        Kafka's acknowledgement is one small object, holding its context (:class:`_Collect`;
        the context and AttemptOutcome made when they are read) or, when no middleware wants
        success contexts, only its ``kind`` (:class:`_Count`)."""
        origin = (message.topic, message.partition, message.offset)
        if self._keep_contexts:
            done: Completion = _Collect(part, message.offset, ctx.kept(), seconds, self._heard)
        else:
            done = _Count(part, message.offset, kind, seconds, self._counted)
        self.writer.write(records, origin, done)

    def tell(self, middleware: MiddlewareChain) -> None:
        """Tell ``middleware`` the outcomes written since the last call, all at once (poll
        thread: once per loop turn, and after the last outcomes are flushed), and ask it
        whether the next ones' successes are to keep their contexts."""
        if self._heard or self._counted:
            collected = self._heard.copy()
            self._heard.clear()  # the same list: outcomes settled earlier collect into it
            counted = self._counted.copy()
            self._counted.clear()  # the same dict, as the list above
            contexts = [c.ctx for c in collected]
            outcomes = [c.outcome for c in collected]
            middleware.outcome_batch(Outcomes(contexts, outcomes, counted))
        self._keep_contexts = middleware.wants_success_contexts()

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
        heard: Heard | None = None,
    ) -> None:
        records = self.build.dead_letter(message, envelope, reason, exc, where)
        self.settle(part, message, records, heard)
        self.stats.dead_lettered += 1
        if where is None:  # no attempt ran: bad input, or a crash loop
            self.stats.rejected[reason] = self.stats.rejected.get(reason, 0) + 1
        self.retry_ended(message)
        _log.warning(
            "dead-lettered %s[%d]@%d: %s", message.topic, message.partition, message.offset, reason
        )


class _Collect(Completion):
    """An outcome's ``done`` that also collects the attempt's outcome once its offset
    completes (one object per attempt, only when middleware listens): the context as
    :meth:`~streamjobs.middleware.AttemptContext.kept` and, for a success, its duration in
    seconds (:class:`~streamjobs.middleware.Outcomes` makes both objects again if read). Every
    tracked object kept until Kafka's acknowledgement makes the garbage collector run sooner."""

    __slots__ = ("ctx", "into", "outcome")

    def __init__(
        self,
        part: Partition,
        offset: int,
        ctx: KeptContext,
        outcome: AttemptOutcome | float,
        into: list[_Collect],
    ) -> None:
        self.part = part  # Completion's fields, set here: no super() call on every task's path
        self.offset = offset
        self.ctx = ctx
        self.outcome = outcome
        self.into = into

    def __call__(self) -> bool:
        part = self.part  # Completion's __call__, inlined (as above)
        if part.lost:
            return False
        part.tracker.completed(self.offset)
        self.into.append(self)
        return True


class _Count(Completion):
    """A success's ``done`` when no middleware wants its context: once its offset completes,
    its duration joins its task type's (one small object per attempt, nothing kept after)."""

    __slots__ = ("into", "kind", "seconds")

    def __init__(
        self,
        part: Partition,
        offset: int,
        kind: tuple[str, str],
        seconds: float,
        into: dict[tuple[str, str], list[float]],
    ) -> None:
        self.part = part  # as _Collect: no super() call on every task's path
        self.offset = offset
        self.kind = kind
        self.seconds = seconds
        self.into = into

    def __call__(self) -> bool:
        part = self.part
        if part.lost:
            return False
        part.tracker.completed(self.offset)
        durations = self.into.get(self.kind)
        if durations is None:
            self.into[self.kind] = [self.seconds]
        else:
            durations.append(self.seconds)
        return True
