"""The worker's in-flight intake: the tasks taken from Kafka and not finished yet.

Owns the count of tasks taken and not finished (started, waiting for their key in the executor,
or held for a rate limit's token) and its lock, which the poll thread and the executor threads
both take; handing a taken task to the per-key executor (:meth:`Intake.dispatch`), or holding it
back when :mod:`streamjobs.worker.ratelimited` said so and starting it once its token comes
(:meth:`Intake.release_held`); on the executor thread, the start of a task's attempt
(:meth:`Intake.execute`), or, ``key_ordered``, its parking while an earlier task of its key is
in a retry tier, and its release when that retry ends (:meth:`Intake.retry_ended`). Also the
size of the next consume: ``max_in_flight`` less the count, with the main-topic partitions
paused while ``max_parked`` tasks are parked (:meth:`Intake.limit_parking`).

Does not route records (:mod:`streamjobs.worker.routing`), run the attempt itself
(:mod:`streamjobs.worker.attempt`), decide which keys park (:mod:`streamjobs.worker.keyorder`)
or which tasks wait for a token (:mod:`streamjobs.worker.ratelimit`), pause partitions itself
(:mod:`streamjobs.worker.partitions`), or poll and commit (:mod:`streamjobs.worker.loop`,
:mod:`streamjobs.worker.handover`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from streamjobs import client
from streamjobs.envelope import Envelope
from streamjobs.registry import Handler
from streamjobs.topics import ServedTopics
from streamjobs.worker.attempt import Attempts
from streamjobs.worker.executor import KeyedExecutor
from streamjobs.worker.keyorder import KeyOrder
from streamjobs.worker.partitions import Assigned, Partition
from streamjobs.worker.priorities import QueueGate
from streamjobs.worker.ratelimit import Decision
from streamjobs.worker.ratelimited import RateLimits


class Intake:
    """Counts the tasks in flight and hands them to the executor; one per Worker.

    The count lives as long as the Worker; the executor, the queue gate and the attempts are one
    run's (:meth:`start`, made by ``Worker.run``; :meth:`stop` lets go of the attempts)."""

    def __init__(
        self,
        topics: ServedTopics,
        parts: Assigned,
        limits: RateLimits,
        order: KeyOrder | None,
    ) -> None:
        self._topics = topics
        self._parts = parts
        self._limits = limits
        self._order = order
        self._executor: KeyedExecutor | None = None  # while running
        self._gate: QueueGate | None = None  # while running, with several queues
        self._attempts: Attempts | None = None  # while running
        # tasks handed to the executor and not finished yet (started or waiting for their key);
        # tasks whose outcome awaits its ack are bounded by the producer queue instead, and
        # parked ones (key_ordered) by max_parked
        self._queued = 0
        self._queued_lock = threading.Condition()

    def start(self, executor: KeyedExecutor, gate: QueueGate | None, attempts: Attempts) -> None:
        """Take one run's parts, before the first record is consumed."""
        self._executor = executor
        self._gate = gate
        self._attempts = attempts

    def stop(self) -> None:
        """Let go of the run's attempts (and through them its clients), as the Worker does."""
        self._attempts = None

    @property
    def in_flight(self) -> int:
        """Tasks taken from Kafka and not finished yet (queued for their key or running)."""
        return self._queued

    @property
    def attempts(self) -> Attempts:
        assert self._attempts is not None, "the worker is not running"
        return self._attempts

    def wait(self, timeout: float) -> None:
        """Block until a task leaves the count, or at most ``timeout`` seconds."""
        with self._queued_lock:
            self._queued_lock.wait(timeout)

    def limit_parking(self, consumer: client.Consumer) -> int:
        """``key_ordered``: pause the main-topic partitions while too many tasks are parked
        (resume at half); returns the count of queued tasks the next consume is sized by.

        Decided just before each consume, from one consistent snapshot of both counts: a park
        adds to ``parked`` before it leaves ``_queued``, and a release moves tasks back under
        ``_queued_lock``. Only tasks already taken can park, and a consume takes at most
        ``max_in_flight - queued`` records, so parked tasks stay below
        ``max_parked + max_in_flight``: at most one consume batch beyond ``max_parked - 1``,
        counting the executor's queue as part of that batch.
        """
        if self._order is None:
            return self._queued
        with self._queued_lock:
            queued, parked = self._queued, self._order.parked()
        self._parts.limit_parking(consumer, parked)
        return queued

    # -- taking (poll thread) --------------------------------------------------------------

    def dispatch(
        self,
        consumer: client.Consumer,
        message: client.Record,
        envelope: Envelope,
        handler: Handler,
        part: Partition,
        decision: Decision = Decision.RUN,
    ) -> None:
        """Count a task the router took and hand it to the executor (or hold it for a token)."""
        with self._queued_lock:
            self._queued += 1
        if self._gate is not None:
            self._gate.took(consumer, part)
        if decision is Decision.HOLD:  # counted as queued: it waits in memory, not started
            self._limits.hold((message, envelope, handler, part))
            return
        self._submit(message, envelope, handler, part)

    def _submit(
        self, message: client.Record, envelope: Envelope, handler: Handler, part: Partition
    ) -> None:
        """Hand an already counted task to the executor."""
        assert self._executor is not None
        self._executor.submit(
            envelope.record_key,
            _bind(self.execute, message, envelope, handler, part),
            self._topics.rank(message.topic) if self._gate is not None else 0,
        )

    def release_held(self, consumer: client.Consumer) -> None:
        """Start the held tasks that have their tokens now (streamjobs.worker.ratelimited);
        those of partitions given up leave the queued count."""
        started, dropped = self._limits.release(consumer)
        if dropped:
            with self._queued_lock:
                self._queued -= dropped
                self._queued_lock.notify()
        for task in started:
            self._submit(*task)

    # -- execution (executor threads) ------------------------------------------------------

    def execute(
        self, message: client.Record, envelope: Envelope, handler: Handler, part: Partition
    ) -> None:
        """Run a task's attempt unless its partition is gone or it parks; then uncount it."""
        try:
            with part.lock:
                if part.revoked:
                    return  # never start (or park) a task for a partition we no longer own
                # parked under the lock: a revoke's KeyOrder.forget (which follows it) clears it
                if self._parked(message, envelope, handler, part):
                    return
                part.running += 1
            try:
                self.attempts.run(message, envelope, handler, part)
            finally:
                with part.lock:
                    part.running -= 1
        finally:
            with self._queued_lock:
                self._queued -= 1
                self._queued_lock.notify()

    def _parked(
        self, message: client.Record, envelope: Envelope, handler: Handler, part: Partition
    ) -> bool:
        """key_ordered: a main-topic task waits while an earlier task of its key is in retry."""
        # parked before it leaves _queued (the caller's finally): never missing from both counts
        return self._order is not None and self._order.park(
            message, lambda: self._submit(message, envelope, handler, part)
        )

    def retry_ended(self, message: client.Record) -> None:
        """key_ordered: a retry-tier task reached its final outcome; release its key's tasks."""
        if self._order is None:
            return
        with self._queued_lock:  # queued again as they leave the parked count (limit_parking)
            releases = self._order.retry_ended(message)
            self._queued += len(releases)
        for release in releases:
            release()


def _bind(func: Callable[..., None], *args: Any) -> Callable[[], None]:
    def item() -> None:
        func(*args)

    return item
