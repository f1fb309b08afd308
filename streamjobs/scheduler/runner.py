"""The scheduler every worker runs: follow the schedules topic, and fire while leading.

Owns :class:`Scheduler`, a thread beside the :class:`~streamjobs.Worker` (``streamjobs consume``
starts one): a consumer in the queue's scheduler group (``<prefix>.<queue>.scheduler``) subscribed
to the one-partition schedules topic, the :class:`~streamjobs.scheduler.leader.Leadership` its
rebalances drive, and the loop that fires owed due times, manual triggers and publishes the
schedules declared in code. The partition's offsets are never committed: each new owner reads the
compacted topic from its start. The loop sleeps in ``poll`` until the next due time or the next
record (a CLI ``pause``, ``trigger``...); then everything owed is written as one transaction
(:mod:`streamjobs.scheduler.rounds`), so a fire is late only by the wake-up and that transaction.
Does not compute due times, build records or own the transactional producer.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from streamjobs import client
from streamjobs.errors import KafkaUnavailable, StreamJobsError
from streamjobs.producer import Producer
from streamjobs.registry import ScheduleDeclaration, TaskRegistry
from streamjobs.scheduler.book import Book
from streamjobs.scheduler.fires import FireBuilder
from streamjobs.scheduler.leader import Leadership, Role
from streamjobs.scheduler.rounds import Round
from streamjobs.scheduler.state import (
    Definition,
    definition_key,
    encode_definition,
    parse_key,
)
from streamjobs.scheduler.timing import to_ms
from streamjobs.scheduler.transaction import Aborted, Fenced, FireTransactions, Out
from streamjobs.settings import Settings
from streamjobs.topics import queue_topics

_log = logging.getLogger(__name__)
_IDLE_POLL_S = 0.5  # a follower, or a leader with nothing due soon, still notices stop()
_RETRY_S = 1.0  # after an aborted transaction
_REJOIN_S = 5.0  # after Kafka failed us


def scheduler_group(settings: Settings) -> str:
    return f"{settings.topic_prefix}.{settings.queue}.scheduler"


def declared_definition(
    declared: ScheduleDeclaration, queue: str, now_ms: int, existing: Definition | None
) -> Definition:
    """The definition a code declaration publishes (keeping an existing one's creation time)."""
    every_s = None if declared.every is None else int(declared.every.total_seconds())
    return Definition(
        name=declared.name,
        queue=queue,
        task=declared.task.task_name,
        args_json=declared.task.model_dump_json(),
        created_at_ms=existing.created_at_ms if existing else now_ms,
        updated_at_ms=now_ms,
        key=declared.key,
        cron=declared.cron,
        every_s=every_s,
        timezone=declared.timezone,
        catch_up=declared.catch_up,
        source="code",
    )


class Scheduler:
    """Fires the queue's recurring tasks while this process leads. ``start()``, then ``stop()``.

    Kafka failures are retried (the scheduler leaves the group, so another worker may lead, and
    joins again). ``on_failure`` is called (from the scheduler thread) when it cannot go on for
    any other reason: ``streamjobs consume`` passes ``Worker.fail`` so the process exits non-zero
    and is restarted, rather than living on without a scheduler.
    """

    def __init__(
        self,
        settings: Settings,
        registry: TaskRegistry,
        *,
        owner: str | None = None,
        on_failure: Callable[[StreamJobsError], None] | None = None,
    ) -> None:
        self.settings = settings
        self.owner = owner or f"{socket.gethostname()}-{os.getpid()}"
        self.leadership = Leadership(self.owner)
        self._registry = registry
        self._topics = queue_topics(settings)
        self._on_failure = on_failure
        self._book = Book()
        self._txn = FireTransactions(settings)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._builder: FireBuilder | None = None
        self._retry_at = 0.0
        # refuse bad declarations at start, not at the first fire
        for declared in registry.schedules:
            declared_definition(declared, settings.queue, 0, None)

    @property
    def leading(self) -> bool:
        return self.leadership.leading

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run_guarded, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run_guarded(self) -> None:
        try:
            self.run()
        except Exception as exc:  # a thread's death must reach the worker, whatever it was
            error = exc if isinstance(exc, StreamJobsError) else StreamJobsError(repr(exc))
            _log.exception("scheduler stopped: %s", error)
            if self._on_failure is not None:
                self._on_failure(error)

    def run(self) -> None:
        """Follow and fire until ``stop()``.

        Kafka failing (or a transaction fenced) never stops the worker: the scheduler leaves the
        group, so another worker can lead, and joins again after a pause.
        """
        with Producer(self.settings) as producer:
            self._builder = FireBuilder(producer, self._registry, self._topics)
            while not self._stop.is_set():
                consumer = self._join()
                pause = 0.0
                try:
                    self._follow(consumer)
                except Fenced as exc:
                    # our last transaction's outcome is unknown, or a newer leader exists: read
                    # everything again (as a new member) before firing anything
                    _log.warning("scheduler %s: stepping down: %s", self.owner, exc)
                except KafkaUnavailable as exc:
                    _log.error("scheduler %s: %s; joining again in %ss", self.owner, exc, _REJOIN_S)
                    pause = _REJOIN_S
                finally:
                    self.leadership.released()
                    self._txn.close()
                    consumer.close()
                self._stop.wait(pause)

    def _join(self) -> client.KafkaConsumer:
        self._book.clear()
        consumer = client.KafkaClients(self.settings).consumer(scheduler_group(self.settings))
        consumer.subscribe(
            [self._topics.schedules],
            on_assign=self._on_assign,
            on_revoke=self._on_release,
            on_lost=self._on_release,
        )
        return consumer

    def _on_assign(self, partitions: list[client.TopicPartition]) -> None:
        if partitions:
            self._book.clear()  # never committed: a new assignment reads from the start
            self.leadership.assigned()

    def _on_release(self, partitions: list[client.TopicPartition]) -> None:
        if partitions:
            self.leadership.released()
            self._txn.close()

    def _follow(self, consumer: client.KafkaConsumer) -> None:
        while not self._stop.is_set():
            for record in consumer.consume(500, self._wait_s()):
                self._absorb(record)
            if self.leadership.must_claim:
                self._claim(consumer)
            if self.leadership.role is Role.CATCHING_UP:
                (at,) = consumer.positions([client.TopicPartition(self._topics.schedules, 0)])
                position = at.offset
                if self.leadership.read_to(max(position, 0)):
                    _log.info("scheduler %s: leading the %s schedules", self.owner, self._queue)
                    self._publish_declared()
            if self.leadership.leading and time.monotonic() >= self._retry_at:
                self._fire_owed()

    @property
    def _queue(self) -> str:
        return self.settings.queue

    def _absorb(self, record: client.Record) -> None:
        key = parse_key(record.key)
        if key is None or key.queue != self._queue:
            return
        # while leading, state records read back are our own, possibly older than the state we
        # hold (applied at commit): applying them would make an old due time owed again
        if key.kind == "state" and self.leadership.leading:
            return
        self._book.apply(record.key, record.value)

    def _claim(self, consumer: client.KafkaConsumer) -> None:
        self._txn.claim()
        _, end = consumer.watermarks(self._topics.schedules, 0)
        self.leadership.claimed(end)

    def _wait_s(self) -> float:
        if not self.leadership.leading:
            return 0.1 if self.leadership.role is Role.CATCHING_UP else _IDLE_POLL_S
        backoff = self._retry_at - time.monotonic()
        if backoff > 0:  # an aborted transaction: try again after a pause, not in a busy loop
            return min(backoff, _IDLE_POLL_S)
        now = datetime.now(UTC)
        soonest = _IDLE_POLL_S
        for entry in self._book.of_queue(self._queue):
            if entry.triggers:
                return 0.0
            due = entry.next_due()
            if due is not None:
                soonest = min(soonest, (due - now).total_seconds())
        return max(0.0, soonest)

    # -- firing (leader only) -------------------------------------------------------------

    def _fire_owed(self) -> None:
        """Everything owed now, in one transaction; nothing of it if the transaction aborts."""
        assert self._builder is not None
        batch = Round(self._builder, self.owner, self._topics.schedules)
        now = datetime.now(UTC)
        for entry in list(self._book.of_queue(self._queue)):
            batch.add(entry, now, to_ms(now))
        if batch.empty:
            return
        try:
            self._txn.write(batch.records)
        except Aborted as exc:
            _log.warning("scheduler %s: %s; retrying", self.owner, exc)
            self._retry_at = time.monotonic() + _RETRY_S
            return
        batch.settle()

    def _publish_declared(self) -> None:
        """Write the schedules declared in code whose definition on the topic differs."""
        now = _now_ms()
        for declared in self._registry.schedules:
            entry = self._book.get(self._queue, declared.name)
            existing = entry.definition if entry else None
            wanted = declared_definition(declared, self._queue, now, existing)
            if existing is not None and existing.same_schedule(wanted):
                continue
            key = definition_key(self._queue, declared.name)
            self._txn.write([Out(self._topics.schedules, key, encode_definition(wanted))])
            self._book.apply(key, encode_definition(wanted))
            _log.info(
                "schedule %s published from code: %s", declared.name, wanted.cadence.describe()
            )


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
