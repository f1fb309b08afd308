"""One attempt of a task, on an executor thread: from its start to the outcome that settles it.

Owns what happens between an executor slot and the records that end a task record: the crash
ledger's count of a suspect start (and the ``crash_loop`` dead letter past ``crash_limit``), the
middleware around the handler, the ``running`` status, the handler call, and the outcome the
retry policy decides (``succeeded``, a retry record, or a dead letter; ``cancelled``, never
retried, for a task cancelled before it started or whose call ended in ``Cancelled``), handed to
:class:`~streamjobs.worker.settle.Settler` to be written. Anything the handler raises,
``BaseException`` included, is the attempt's outcome. Does not route records
(:mod:`streamjobs.worker.routing`), own partitions, queue tasks for their key or commit
(:mod:`streamjobs.worker.intake`, :mod:`streamjobs.worker.handover`).
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from streamjobs import client, status
from streamjobs.envelope import Envelope
from streamjobs.errors import BadInput, Cancelled, StreamJobsError, error_text
from streamjobs.hookfacts import schedule_of
from streamjobs.middleware import AttemptContext, AttemptOutcome, Heard, MiddlewareChain
from streamjobs.models import TaskState
from streamjobs.registry import Handler
from streamjobs.retry import DeadLetter, RetryPolicy, decide
from streamjobs.settings import Settings
from streamjobs.tracing import current_trace_id
from streamjobs.worker.cancels import not_started_note, settle_cancelled
from streamjobs.worker.handler_call import HandlerRunner
from streamjobs.worker.partitions import Partition
from streamjobs.worker.quarantine import StartLedger
from streamjobs.worker.settle import Settler

_log = logging.getLogger(__name__)


class Attempts:
    """Runs attempts of one worker's tasks; called on its executor threads."""

    def __init__(
        self,
        settings: Settings,
        middleware: MiddlewareChain,
        runner: HandlerRunner,
        settler: Settler,
        ledger: StartLedger,
    ) -> None:
        self.settings = settings
        self.middleware = middleware
        self.runner = runner
        self.settler = settler
        self.ledger = ledger
        self._heard = middleware.observes_outcomes  # else no outcome is built or kept

    def run(
        self, message: client.Record, envelope: Envelope, handler: Handler, part: Partition
    ) -> None:
        suspect = message.offset in part.suspect
        if suspect and self._crash_looping(message, envelope, part):
            return
        if self._cancelled(message, envelope, part):
            if suspect:
                self.ledger.end(message.topic, message.partition, message.offset)
            return
        settler = self.settler
        stats = settler.stats
        stats.started += 1
        where: dict[str, Any] = {
            "topic": message.topic,
            "partition": message.partition,
            "offset": message.offset,
            "worker_id": settler.build.worker_id,
        }
        ctx = self._context(message, envelope)
        kind = (ctx.queue, ctx.task)  # counted here, and a success is collected under it
        # no lock on every attempt's path: an item's += makes no call between its read and its
        # write, so under the GIL no other thread runs in between (as for `started` above)
        try:
            stats.starts[kind] += 1
        except KeyError:  # the first of its kind: two threads' first starts both count
            stats.starts.setdefault(kind, 0)
            stats.starts[kind] += 1
        started = time.monotonic()
        try:
            # a middleware cannot swallow the handler's exception: the chain re-raises it
            with self.middleware.attempt(ctx):
                where["trace_id"] = current_trace_id()  # the trace a middleware opened, if any
                statuses = status.AttemptStatuses(envelope, where)
                running = settler.build.run_status(envelope, statuses, TaskState.RUNNING)
                settler.running(part, message, running)
                result = self.runner.call(handler, envelope, message.timestamp_ms)
                done = settler.build.succeeded(envelope, statuses, result)
        # anything a handler raises is its attempt's outcome, KeyboardInterrupt and SystemExit
        # included: signals reach only the main thread (the CLI turns them into stop()), so one
        # raised here is the handler's own, never a request to stop the worker
        except BaseException as exc:
            self._failed(message, part, envelope, handler, exc, where, ctx, _since(started))
        else:
            if self._heard:
                settler.succeeded(part, message, [done], ctx, kind, time.monotonic() - started)
            else:
                settler.settle(part, message, [done])
            settler.stats.succeeded += 1
            settler.retry_ended(message)
        if suspect:
            self.ledger.end(message.topic, message.partition, message.offset)

    def _crash_looping(self, message: client.Record, envelope: Envelope, part: Partition) -> bool:
        """Count a suspect start; past ``crash_limit`` the task is dead-lettered unrun."""
        try:
            starts = self.ledger.begin(message.topic, message.partition, message.offset)
        except StreamJobsError as exc:
            _log.warning("crash ledger unavailable, start not counted: %s", exc)
            return False
        if starts <= self.settings.crash_limit:
            return False
        looping = BadInput(f"started {starts} times, its worker died each time")
        self.settler.dead_letter(message, part, envelope, "crash_loop", looping)
        self.ledger.end(message.topic, message.partition, message.offset)
        return True

    def _cancelled(self, message: client.Record, envelope: Envelope, part: Partition) -> bool:
        """A task cancelled while it waited for its executor slot never starts. (A cancel that
        arrives after this check is caught as the handler call begins: HandlerRunner.call.)"""
        request = self.runner.cancels.cancelled(envelope)
        if request is None:
            return False
        settle_cancelled(self.settler, part, message, envelope, note=not_started_note(request))
        return True

    def _context(self, message: client.Record, envelope: Envelope) -> AttemptContext:
        return AttemptContext.of(
            task_id=envelope.task_id,
            task=envelope.task,
            key=envelope.key,
            attempt=envelope.attempt,
            queue=self.settler.build.queue_of(message.topic),
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            group=self.settings.group,
            worker_id=self.settler.build.worker_id,
            headers=tuple(message.headers),
            schedule=schedule_of(message.headers),
        )

    def _observed(self, ctx: AttemptContext, outcome: AttemptOutcome) -> Heard | None:
        """The outcome to collect once it is written (None: nobody listens)."""
        return (ctx, outcome) if self._heard else None

    def _failed(
        self,
        message: client.Record,
        part: Partition,
        envelope: Envelope,
        handler: Handler,
        exc: BaseException,
        where: dict[str, Any],
        ctx: AttemptContext,
        elapsed: timedelta,
    ) -> None:
        policy = RetryPolicy(
            max_attempts=envelope.max_attempts
            or handler.max_attempts
            or self.settings.max_attempts,
            tiers=tuple(self.settings.retry_tiers),
            non_retryable=handler.non_retryable,
        )
        settler = self.settler
        if isinstance(exc, Cancelled):  # never retried: the task was cancelled, or said it was
            outcome = AttemptOutcome.failure(TaskState.CANCELLED, elapsed, exc, reason="cancelled")
            heard = self._observed(ctx, outcome)
            note = f"cancelled: {error_text(exc, 500)}"
            settle_cancelled(
                settler, part, message, envelope, note=note, where=where, exc=exc, heard=heard
            )
            return
        decision = decide(policy, envelope.attempt, exc, status.now_ms())
        if isinstance(decision, DeadLetter):
            outcome = AttemptOutcome.failure(
                TaskState.DEAD_LETTERED, elapsed, exc, reason=decision.reason
            )
            heard = self._observed(ctx, outcome)
            settler.dead_letter(message, part, envelope, decision.reason, exc, where, heard)
            return
        if settler.order is not None:  # now: the key's next task waits for this executor slot
            settler.order.retry_scheduled(message)
        # the retry record carries what middleware asked it to (the trace context, so the next
        # attempt is a child of this one)
        records = settler.build.retry(message, envelope, decision, exc, where, ctx.carry_headers)
        outcome = AttemptOutcome.failure(
            TaskState.RETRY_SCHEDULED, elapsed, exc, retry_tier=decision.tier
        )
        settler.settle(part, message, records, self._observed(ctx, outcome))
        settler.stats.retried += 1


def _since(started: float) -> timedelta:
    return timedelta(seconds=time.monotonic() - started)
