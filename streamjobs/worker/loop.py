"""The worker: consume task records, run handlers, write outcomes, then commit.

Owns the poll loop and the order of durable writes that makes "commit after success" true: an
offset is committed only after the task's outcome (``succeeded`` status, or a retry record and
``retry_scheduled`` status, or a dead-letter record and ``dead_lettered`` status) is acknowledged
by Kafka. Each consumed record is routed on the poll thread by
:mod:`streamjobs.worker.routing` (tier records that are not yet due pause their partition
instead of sleeping the thread; bad input is dead-lettered with a reason and never stops the
loop); the tasks it takes are counted in flight and go to a per-key serial executor, so the poll
loop never blocks on one (:mod:`streamjobs.worker.intake`: ``key_ordered`` tasks parked behind
a retry are bounded by pausing main-topic intake; tasks over a rate limit wait, unstarted, until
:mod:`streamjobs.worker.ratelimit` releases them); with several queues,
:mod:`streamjobs.worker.priorities` pauses the queues held back. One attempt (executor thread)
is :mod:`streamjobs.worker.attempt`'s, writing what settles a record
:mod:`streamjobs.worker.settle`'s, rebalances and commits :mod:`streamjobs.worker.handover`'s.
Does not parse command lines or install signal handlers (the CLI does), so a Worker runs fine
in a test thread.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence

from streamjobs import client
from streamjobs.errors import KafkaUnavailable, StreamJobsError, WorkerCrashed
from streamjobs.middleware import (
    Middleware,
    chain_of,
)
from streamjobs.registry import TaskRegistry
from streamjobs.schemastore import SchemaStore
from streamjobs.settings import Settings
from streamjobs.taskcontext import CurrentTask
from streamjobs.topics import served_topics
from streamjobs.tracing import TracingMiddleware
from streamjobs.worker.attempt import Attempts
from streamjobs.worker.cancels import CancelFollower
from streamjobs.worker.executor import KeyedExecutor
from streamjobs.worker.handler_call import HandlerRunner
from streamjobs.worker.handover import Handover
from streamjobs.worker.intake import Intake
from streamjobs.worker.keyorder import KeyOrder
from streamjobs.worker.outcomes import Builder, OutcomeWriter, TransactionalWriter
from streamjobs.worker.partitions import Assigned
from streamjobs.worker.priorities import QueueGate
from streamjobs.worker.quarantine import StartLedger
from streamjobs.worker.ratelimited import RateLimits
from streamjobs.worker.routing import Router
from streamjobs.worker.settle import Settler
from streamjobs.worker.stats import WorkerStats
from streamjobs.worker.watchdog import Watchdog

_log = logging.getLogger(__name__)
_BATCH = 500
# how long an idle poll blocks; outcomes queued by handlers wait at most this long to be produced
_POLL_TIMEOUT_S = 0.02
# how long a turn waits for an idle executor thread to start what it was just given (the GIL's
# switch interval: past it that thread would have taken the GIL by force anyway)
_HAND_OFF_S = 0.005
_PROGRESS_EVERY_S = 1.0  # how often the poll thread publishes partition progress in its stats


class Worker:
    """Runs tasks of its queues (``settings.served_queues``) as a member of the consumer group.

    ``run()`` blocks until ``stop()`` (callable from any thread or a signal handler), then finishes
    the tasks already started, commits and leaves the group. ``middleware`` wraps each handler
    attempt and hears its outcome (:mod:`streamjobs.middleware`; None: tracing only).
    """

    def __init__(
        self,
        settings: Settings,
        registry: TaskRegistry,
        *,
        worker_id: str | None = None,
        middleware: Sequence[Middleware] | None = None,
        clients: client.Clients | None = None,
    ) -> None:
        """``clients`` builds the Kafka clients (default: real ones from ``settings``); a test
        passes a fake to run the worker without a broker."""
        self.settings = settings
        self.registry = registry
        self.middleware = chain_of(middleware, TracingMiddleware)
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.stats = WorkerStats()
        self.assigned = threading.Event()
        self._topics = served_topics(settings)
        self._clients = clients or client.KafkaClients(settings)
        self._schemas = SchemaStore(settings, self._clients)
        for handler in registry:
            self._schemas.add(handler.task_type)
        self._stop = threading.Event()
        self._failure: StreamJobsError | None = None
        self._watchdog: Watchdog | None = None  # while running
        self._parts = Assigned(settings, self._topics.first.main)
        self._consumer: client.Consumer | None = None
        self._build = Builder(settings, self._topics, self.worker_id)
        self._writer: OutcomeWriter | None = None
        self._ledger: StartLedger | None = None
        self._handover_now: Handover | None = None  # while running
        # rate limits: this worker's share, and the tasks waiting for it (poll thread)
        self._limits = RateLimits(settings, registry, self._topics, self._parts)
        key_ordered = settings.ordering == "key_ordered"
        first = self._topics.first  # key_ordered serves one queue (settings check it)
        self._order = KeyOrder(settings, first, self._clients) if key_ordered else None
        self._runner: HandlerRunner | None = None
        self._settler: Settler | None = None  # while running
        self._attempts: Attempts | None = None  # while running
        self._router: Router | None = None  # while running
        self._cancels: CancelFollower | None = None  # while running
        self._executor: KeyedExecutor | None = None
        # tasks taken and not finished yet: counted, queued, parked and released there
        self._intake = Intake(self._topics, self._parts, self._limits, self._order)
        self._progress_due = 0.0
        self._gate: QueueGate | None = None  # while running, with several queues

    # -- lifecycle -------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the worker to finish started tasks, commit and leave. Safe from signal handlers."""
        self._stop.set()

    def fail(self, error: StreamJobsError) -> None:
        """Stop because correctness can no longer be guaranteed; ``run()`` raises ``error``."""
        if self._failure is None:
            self._failure = error
            _log.error("worker stopping: %s", error)
        self._stop.set()

    def _crashed(self, thread: str, exc: BaseException) -> None:
        """Something escaped a task's own error handling (a worker bug, never a handler's
        exception): the worker's state is unknown, so it stops without waiting for tasks."""
        _log.critical("internal error in worker thread %s", thread, exc_info=exc)
        self.fail(WorkerCrashed(f"internal error in {thread}: {type(exc).__name__}: {exc}"))

    def run(self) -> None:
        """Consume until stopped. Raises KafkaUnavailable if outcomes could not be written,
        WorkerCrashed if a thread of the worker died (a supervisor should restart it),
        TopicError at the start if the cancels topic is missing."""
        # every cancel so far is known before the first task is taken
        self._cancels = CancelFollower(self.settings, self._clients)
        self._cancels.start()
        self._writer = self._new_writer()
        # one crash ledger per worker: its first queue's (keys name the topic)
        self._ledger = StartLedger(self.settings, self._topics.first.starts, self._clients)
        self._handover_now = Handover(
            self.settings,
            self._parts,
            self._writer,
            self._ledger,
            self._order,
            clients=self._clients,
        )
        self._runner = HandlerRunner(
            self.settings,
            self._schemas,
            needs_loop=any(h.is_async for h in self.registry),
            cancels=self._cancels.book,
        )
        ranks = len(self._topics.queues)
        strict = self.settings.effective_queue_order == "strict"
        self._executor = KeyedExecutor(
            self.settings.concurrency, on_crash=self._crashed, ranks=ranks, ordered=strict
        )
        if ranks > 1:
            self._gate = QueueGate(self.settings, self._topics, self._parts, self._executor.waiting)
        self._settler = Settler(
            self._writer, self._build, self.stats, self._order, self._intake.retry_ended
        )
        self._attempts = Attempts(
            self.settings, self.middleware, self._runner, self._settler, self._ledger
        )
        self._intake.start(self._executor, self._gate, self._attempts)
        self._router = Router(
            self.settings,
            self.registry,
            self._topics,
            self._parts,
            self._limits,
            settler=self._settler,
            ledger=self._ledger,
            cancels=self._cancels.book,
        )
        self._watchdog = Watchdog(
            [self._executor.dead_threads, self._runner.dead_threads, self._cancels.dead_threads]
        )
        consumer = self._clients.worker_consumer(self._on_commit)
        self._consumer = consumer
        consumer.subscribe(
            self._topics.task_topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        try:
            while not self._stop.is_set():
                self._poll_once(consumer)
        finally:
            self._shutdown(consumer)
        if self._failure is not None:
            raise self._failure

    def _new_writer(self) -> OutcomeWriter:
        if self.settings.exactly_once:
            # One transactional producer per worker; KIP-447 fencing uses the group generation.
            # A static member keeps its transactional id across restarts, so the restarted worker
            # fences (aborts) the dead one's open transaction at once; otherwise the id is unique
            # and an orphaned transaction ends after transaction.timeout.ms (10 s by default).
            slot = self.settings.group_instance_id or self.worker_id
            transactional_id = f"{self.settings.group}.{slot}"
            return TransactionalWriter(self.settings, self.fail, transactional_id, self._clients)
        return OutcomeWriter(self.settings, self.fail, self._clients)

    @property
    def in_flight(self) -> int:
        """Tasks taken from Kafka and not finished yet (queued for their key or running)."""
        return self._intake.in_flight

    @property
    def paused_for_backpressure(self) -> bool:
        """Whether intake is paused because the executor stayed full."""
        return self._parts.backpressure

    @property
    def held_for_rate(self) -> int:
        """Tasks taken from Kafka and waiting for a rate limit's token (not started)."""
        return self._limits.held

    @property
    def parked(self) -> int:
        """``key_ordered``: tasks held back until an earlier task of their key leaves its retry
        tier (always 0 under ``non_blocking``)."""
        return 0 if self._order is None else self._order.parked()

    @property
    def paused_for_parking(self) -> bool:
        """Whether main-topic intake is paused because ``max_parked`` tasks were parked."""
        return self._parts.parking.engaged

    def running_tasks(self) -> list[CurrentTask]:
        """The handler calls running now, each with its start time (heartbeats and metrics
        read them; the worker keeps them for cancels anyway)."""
        return [] if self._runner is None else self._runner.cancels.running()

    @property
    def queues(self) -> list[str]:
        """The queues this worker serves, highest priority first."""
        return [name for name, _ in self.settings.served_queues]

    def queue_of(self, topic: str) -> str:
        """The queue whose task topic ``topic`` is (a tier topic belongs to its queue)."""
        return self._topics.of(topic).queue

    @property
    def consumer(self) -> client.Consumer:
        assert self._consumer is not None, "the worker is not running"
        return self._consumer

    @property
    def ledger(self) -> StartLedger:
        assert self._ledger is not None, "the worker is not running"
        return self._ledger

    @property
    def writer(self) -> OutcomeWriter:
        assert self._writer is not None, "the worker is not running"
        return self._writer

    @property
    def settler(self) -> Settler:
        assert self._settler is not None, "the worker is not running"
        return self._settler

    @property
    def attempts(self) -> Attempts:
        assert self._attempts is not None, "the worker is not running"
        return self._attempts

    @property
    def router(self) -> Router:
        assert self._router is not None, "the worker is not running"
        return self._router

    @property
    def _handover(self) -> Handover:
        assert self._handover_now is not None, "the worker is not running"
        return self._handover_now

    def _poll_once(self, consumer: client.Consumer) -> None:
        room = self.settings.max_in_flight - self._intake.limit_parking(consumer)
        if room > 0 or self._parts.backpressure:
            try:
                records = consumer.consume(max(1, min(_BATCH, room)), _POLL_TIMEOUT_S)
            except KafkaUnavailable as exc:
                self.fail(exc)
                return
            for record in records:
                self._on_message(record)
            if records and self._executor is not None:
                self._executor.hand_off(_HAND_OFF_S)  # the task starts before the bookkeeping
        else:
            # the executor is full: give it a moment rather than pausing (a pause makes
            # librdkafka drop and re-fetch its prefetched records)
            self._intake.wait(_POLL_TIMEOUT_S)
        self.writer.serve(0)
        crash = self._watchdog.check() if self._watchdog is not None else None
        if crash is not None:
            self.fail(crash)
        self._handover.commit_due(consumer)
        self._parts.resume_due(self.consumer)
        self._intake.release_held(self.consumer)
        self._parts.apply_backpressure(self.consumer, self._intake.in_flight)
        if self._gate is not None:
            self._gate.apply(consumer)
        self.settler.tell(self.middleware)  # the outcomes written this turn, all at once
        self._observe(consumer)

    def _observe(self, consumer: client.Consumer) -> None:
        """Publish liveness every turn and partition progress every second, for metrics."""
        now = self.stats.polled_at = time.monotonic()
        if now >= self._progress_due:
            self._progress_due = now + _PROGRESS_EVERY_S
            self.stats.partitions = self._parts.progress(consumer)

    def _shutdown(self, consumer: client.Consumer) -> None:
        # a crashed worker does not wait for its tasks: the thread they need may be the dead one
        crashed = isinstance(self._failure, WorkerCrashed)
        self._handover.hand_back(consumer, grace=0.0 if crashed else None)
        consumer.close()  # leaves the group at once instead of waiting for the session timeout
        if self._executor is not None:
            self._executor.shutdown(timeout=1.0)
        if self._runner is not None:
            self._runner.close()
        self.writer.close(10.0)
        self.settler.tell(self.middleware)
        self.ledger.close()
        if self._cancels is not None:
            self._cancels.stop()
        self.stats.partitions = ()
        # release librdkafka clients now rather than at garbage collection
        self._writer = self._ledger = None
        self._settler = self._attempts = None
        self._intake.stop()
        self._router = None
        self._handover_now = None

    # -- rebalances and commits (streamjobs.worker.handover) ---------------------------------------

    # librdkafka calls these from consume(), on the poll thread; they are the Worker's own so
    # that the consumer holds no reference to the writer or the ledger once the worker stops
    def _on_assign(self, partitions: list[client.TopicPartition]) -> None:
        self._handover.assign(self.consumer, partitions)
        self._limits.reshare(self.consumer)
        self.assigned.set()

    def _on_revoke(self, partitions: list[client.TopicPartition]) -> None:
        self._handover.revoke(self.consumer, partitions)
        self._limits.reshare(self.consumer)

    def _on_lost(self, partitions: list[client.TopicPartition]) -> None:
        self._handover.lose(self.consumer, partitions)
        self._limits.reshare(self.consumer)

    def _on_commit(self, error: str | None, partitions: list[client.TopicPartition]) -> None:
        self._handover.committed(error, partitions)

    # -- routing and intake (poll thread; streamjobs.worker.routing, .intake) ----------------

    def _on_message(self, message: client.Record) -> None:
        consumer = self.consumer
        taken = self.router.route(consumer, message)
        if taken is not None:
            self._intake.dispatch(consumer, message, *taken)


__all__ = ["Worker", "WorkerStats"]
