"""The worker: consume task records, run handlers, write outcomes, then commit.

Owns the poll loop and the order of durable writes that makes "commit after success" true: an
offset is committed only after the task's outcome (``succeeded`` status, or a retry record and
``retry_scheduled`` status, or a dead-letter record and ``dead_lettered`` status) is acknowledged
by Kafka. Handlers run on a per-key serial executor so the poll loop never blocks on a task;
tier records that are not yet due pause their partition instead of sleeping the thread; bad input
is dead-lettered with a reason and never stops the loop. Does not parse command lines or install
signal handlers (the CLI does), so a Worker runs fine in a test thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from streamjobs import client, status, tracing
from streamjobs.codec import builtin
from streamjobs.deadletter import Origin, encode_dead_letter
from streamjobs.errors import (
    BadInput,
    DecodeError,
    HandlerTimeout,
    KafkaUnavailable,
    StreamJobsError,
    error_text,
)
from streamjobs.executor import KeyedExecutor
from streamjobs.models import TaskState
from streamjobs.offsets import OffsetTracker
from streamjobs.registry import Handler, TaskRegistry
from streamjobs.retry import DeadLetter, RetryAt, RetryPolicy, clamp_attempt, decide, pick_tier
from streamjobs.schemastore import SchemaStore
from streamjobs.settings import Settings
from streamjobs.topics import queue_topics

_log = logging.getLogger(__name__)
_ENVELOPE = builtin("task_envelope")
_BATCH = 500
_POLL_TIMEOUT_S = 0.05
_PAUSE_AFTER_S = 1.0

TopicKey = tuple[str, int]


@dataclass
class WorkerStats:
    """Counters of what this worker did; read them from any thread."""

    started: int = 0
    succeeded: int = 0
    retried: int = 0
    dead_lettered: int = 0
    hopped: int = 0


class _Partition:
    """The worker's view of one assigned partition."""

    __slots__ = (
        "held_until_ms",
        "hold_offset",
        "key",
        "lock",
        "next_offset",
        "paused",
        "revoked",
        "running",
        "tracker",
    )

    def __init__(self, key: TopicKey) -> None:
        self.key = key
        self.tracker = OffsetTracker()
        self.lock = threading.Lock()
        self.running = 0
        self.revoked = False
        self.next_offset: int | None = None
        self.held_until_ms: int | None = None
        self.hold_offset = 0
        self.paused = False


class _Outcome:
    """Completes an offset once every record of its outcome is acknowledged.

    Delivery callbacks run on the poll thread (only it serves the producer), like every other
    tracker update, so no lock is needed.
    """

    __slots__ = ("offset", "part", "remaining", "worker")

    def __init__(self, worker: Worker, part: _Partition, offset: int, records: int) -> None:
        self.worker = worker
        self.part = part
        self.offset = offset
        self.remaining = records

    def delivered(self, error: Any, _message: Any) -> None:
        if error is not None:
            # the outcome is not durable: never complete this offset; stop and let a restart redo it
            self.worker.fail(KafkaUnavailable(f"outcome write failed: {error}"))
            return
        self.remaining -= 1
        if self.remaining == 0:
            self.part.tracker.completed(self.offset)


class Worker:
    """Runs tasks of one queue as a member of the queue's consumer group.

    ``run()`` blocks until ``stop()`` (callable from any thread or a signal handler), then finishes
    the tasks already started, commits and leaves the group.
    """

    def __init__(
        self, settings: Settings, registry: TaskRegistry, *, worker_id: str | None = None
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.stats = WorkerStats()
        self.assigned = threading.Event()
        self._topics = queue_topics(settings)
        self._schemas = SchemaStore(settings)
        for handler in registry:
            self._schemas.add(handler.task_type)
        self._stop = threading.Event()
        self._failure: StreamJobsError | None = None
        self._parts: dict[TopicKey, _Partition] = {}
        self._consumer: client.Consumer | None = None
        self._producer = client.new_producer(settings)
        self._executor: KeyedExecutor | None = None
        self._timed: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._max_future_ms = int(settings.max_future.total_seconds() * 1000)
        self._last_commit = 0.0
        self._backpressure = False
        self._poll_thread: int | None = None
        # tasks handed to the executor and not finished yet (started or waiting for their key);
        # tasks whose outcome awaits its ack are bounded by the producer queue instead
        self._queued = 0
        self._queued_lock = threading.Condition()
        self._full_since: float | None = None

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

    def run(self) -> None:
        """Consume until stopped. Raises KafkaUnavailable if outcomes could not be written."""
        self._executor = KeyedExecutor(self.settings.concurrency)
        if any(h.is_async for h in self.registry):
            self._start_event_loop()
        consumer = client.new_consumer(
            self.settings,
            self.settings.group,
            on_commit=self._on_commit,
            **self.settings.consumer_overrides(),
        )
        self._consumer = consumer
        self._poll_thread = threading.get_ident()
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

    def _poll_once(self, consumer: client.Consumer) -> None:
        room = self.settings.max_in_flight - self._queued
        if room > 0 or self._backpressure:
            try:
                records = client.consume(consumer, max(1, min(_BATCH, room)), _POLL_TIMEOUT_S)
            except KafkaUnavailable as exc:
                self.fail(exc)
                return
            for record in records:
                self._on_message(record)
        else:
            # the executor is full: give it a moment rather than pausing (a pause makes
            # librdkafka drop and re-fetch its prefetched records)
            with self._queued_lock:
                self._queued_lock.wait(_POLL_TIMEOUT_S)
        self._producer.poll(0)
        now = time.monotonic()
        if now - self._last_commit >= self.settings.commit_interval.total_seconds():
            self._last_commit = now
            self._commit(list(self._parts.values()), asynchronous=True)
        self._resume_due()
        self._apply_backpressure()

    def _shutdown(self, consumer: client.Consumer) -> None:
        parts = list(self._parts.values())
        for part in parts:
            with part.lock:
                part.revoked = True  # queued tasks are not started; started ones finish
        self._settle(parts, self.settings.shutdown_grace.total_seconds())
        self._commit(parts, asynchronous=False)
        self._parts.clear()
        consumer.close()  # leaves the group at once instead of waiting for the session timeout
        if self._executor is not None:
            self._executor.shutdown(timeout=1.0)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._timed is not None:
            self._timed.shutdown(wait=False, cancel_futures=True)
        self._producer.flush(10.0)

    def _start_event_loop(self) -> None:
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, name="streamjobs-asyncio", daemon=True).start()
        self._loop = loop

    # -- rebalances ------------------------------------------------------------------------

    def _on_assign(self, _consumer: Any, partitions: list[client.TopicPartition]) -> None:
        for p in partitions:
            self._parts[(p.topic, p.partition)] = _Partition((p.topic, p.partition))
        self.assigned.set()

    def _on_revoke(self, consumer: Any, partitions: list[client.TopicPartition]) -> None:
        """Stop starting tasks for these partitions, let started ones finish, commit, release."""
        parts = [self._parts[k] for k in _keys(partitions) if k in self._parts]
        for part in parts:
            with part.lock:
                part.revoked = True
        self._settle(parts, self.settings.shutdown_grace.total_seconds())
        self._commit(parts, asynchronous=False)
        for part in parts:
            del self._parts[part.key]

    def _on_lost(self, _consumer: Any, partitions: list[client.TopicPartition]) -> None:
        """Another member may own these already: commit nothing, start nothing."""
        for key in _keys(partitions):
            part = self._parts.pop(key, None)
            if part is not None:
                with part.lock:
                    part.revoked = True

    def _settle(self, parts: list[_Partition], grace_s: float) -> None:
        """Wait (bounded) for started tasks of ``parts`` and their outcome acknowledgements."""
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(p.running for p in parts):
            self._producer.poll(0.02)
        self._producer.flush(max(0.0, deadline - time.monotonic()))

    # -- commits ---------------------------------------------------------------------------

    def _commit(self, parts: list[_Partition], *, asynchronous: bool) -> None:
        offsets = []
        for part in parts:
            offset = part.tracker.commit_offset()
            if offset is not None:
                offsets.append(client.tp(part.key[0], part.key[1], offset))
                part.tracker.mark_committed(offset)
        if offsets and self._consumer is not None:
            try:
                client.commit(self._consumer, offsets, asynchronous=asynchronous)
            except client.KafkaException as exc:
                _log.warning("commit failed (will retry): %s", exc)
                self._forget_commits(offsets)

    def _on_commit(self, error: Any, partitions: list[client.TopicPartition]) -> None:
        if error is not None:
            _log.warning("async commit failed (will retry): %s", error)
            self._forget_commits(partitions)

    def _forget_commits(self, partitions: list[client.TopicPartition]) -> None:
        for key in _keys(partitions):
            part = self._parts.get(key)
            if part is not None:
                part.tracker.committed = None

    # -- flow control ----------------------------------------------------------------------

    def _hold(self, part: _Partition, offset: int, until_ms: int) -> None:
        """Pause a tier partition whose head is not due: the thread keeps polling the rest."""
        part.held_until_ms = until_ms
        part.hold_offset = offset
        assert self._consumer is not None
        self._consumer.pause([client.tp(*part.key)])

    def _resume_due(self) -> None:
        now = status.now_ms()
        for part in list(self._parts.values()):
            if part.held_until_ms is not None and part.held_until_ms <= now:
                part.held_until_ms = None
                self._resume(part, part.hold_offset)

    def _resume(self, part: _Partition, offset: int | None) -> None:
        assert self._consumer is not None
        self._consumer.resume([client.tp(*part.key)])
        if offset is not None:  # drop what was prefetched before the pause; re-read from here
            self._consumer.seek(client.tp(part.key[0], part.key[1], offset))

    def _apply_backpressure(self) -> None:
        """Pause every partition while the executor stays full; the loop keeps polling.

        Long tasks must not stop the poll loop (the group would evict us after
        ``max.poll.interval.ms``), so after a short grace the partitions are paused and
        ``consume`` keeps being called; it returns nothing until they are resumed.
        """
        in_flight = self._queued
        limit = self.settings.max_in_flight
        now = time.monotonic()
        if in_flight < limit:
            self._full_since = None
        elif self._full_since is None:
            self._full_since = now
        if not self._backpressure and self._full_since and now - self._full_since > _PAUSE_AFTER_S:
            self._backpressure = True
            for part in self._parts.values():
                if part.held_until_ms is None and not part.paused:
                    part.paused = True
                    assert self._consumer is not None
                    self._consumer.pause([client.tp(*part.key)])
        elif self._backpressure and in_flight <= limit // 2:
            self._backpressure = False
            for part in self._parts.values():
                if part.paused:
                    part.paused = False
                    if part.held_until_ms is None:
                        self._resume(part, part.next_offset)

    # -- routing (poll thread) -------------------------------------------------------------

    def _on_message(self, message: client.Record) -> None:
        topic, partition, offset = message.topic, message.partition, message.offset
        part = self._parts.get((topic, partition))
        if part is None or part.revoked or part.held_until_ms is not None or part.paused:
            return  # not ours any more, or held: it will be read again after resume/seek
        try:
            envelope = self._decode(message)
        except BadInput as exc:
            self._begin(part, offset)
            self._dead_letter(message, part, None, exc.reason, exc)
            return
        tier = self._topics.tier_delay(topic)
        if tier is not None and self._not_due(message, part, envelope, tier):
            return
        self._begin(part, offset)
        try:
            handler = self.registry.get(envelope["task"])
        except BadInput as exc:
            self._dead_letter(message, part, envelope, exc.reason, exc)
            return
        assert self._executor is not None
        with self._queued_lock:
            self._queued += 1
        self._executor.submit(
            envelope["key"] or envelope["task_id"],
            _bind(self._execute, message, envelope, handler, part),
        )

    def _begin(self, part: _Partition, offset: int) -> None:
        part.next_offset = offset + 1
        part.tracker.dispatched(offset)

    def _decode(self, message: client.Record) -> dict[str, Any]:
        value = message.value
        if not value:
            raise BadInput("empty or tombstone value on a task topic", reason="empty_value")
        envelope = _ENVELOPE.decode(value)
        if clamp_attempt(envelope["attempt"]) is None:
            raise BadInput(f"attempt {envelope['attempt']} out of range", reason="bad_attempt")
        due = envelope["not_before_ms"]
        if due is not None and due - status.now_ms() > self._max_future_ms:
            raise BadInput(f"due time {due} is beyond max_future", reason="due_too_far")
        return envelope

    def _not_due(
        self, message: client.Record, part: _Partition, envelope: dict[str, Any], tier: timedelta
    ) -> bool:
        """Hold the partition if its head is not released yet; hop if released but not due."""
        now = status.now_ms()
        due = envelope["not_before_ms"] or 0
        release = message.timestamp_ms + int(tier.total_seconds() * 1000)
        release = min(release, due) if due else release
        if release > now:
            self._hold(part, message.offset, release)
            return True
        if due > now:
            self._begin(part, message.offset)
            self._hop(message, part, envelope, timedelta(milliseconds=due - now))
            return True
        return False

    def _hop(
        self,
        message: client.Record,
        part: _Partition,
        envelope: dict[str, Any],
        remaining: timedelta,
    ) -> None:
        """Move a released-but-not-due record to the tier that fits the rest of its wait."""
        topic = message.topic
        family = self._topics.retry if topic in self._topics.retry.values() else self._topics.delay
        target = family[pick_tier(list(family), remaining)]
        outcome = _Outcome(self, part, message.offset, 1)
        self._produce(target, message.key, message.value, message.headers, outcome)
        self.stats.hopped += 1

    # -- execution (executor threads) ------------------------------------------------------

    def _execute(
        self, message: client.Record, envelope: dict[str, Any], handler: Handler, part: _Partition
    ) -> None:
        try:
            with part.lock:
                if part.revoked:
                    return  # never start a task for a partition we no longer own
                part.running += 1
            try:
                self._run_task(message, envelope, handler, part)
            finally:
                with part.lock:
                    part.running -= 1
        finally:
            with self._queued_lock:
                self._queued -= 1
                self._queued_lock.notify()

    def _run_task(
        self, message: client.Record, envelope: dict[str, Any], handler: Handler, part: _Partition
    ) -> None:
        self.stats.started += 1
        where = {
            "topic": message.topic,
            "partition": message.partition,
            "offset": message.offset,
            "worker_id": self.worker_id,
        }
        with tracing.process_span(
            message.headers,
            task=envelope["task"],
            task_id=envelope["task_id"],
            attempt=envelope["attempt"],
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            group=self.settings.group,
        ) as span:
            where["trace_id"] = tracing.trace_id_of(span)
            self._write_status(envelope, TaskState.RUNNING, None, **where)
            try:
                result_json = self._call(handler, envelope)
            except Exception as exc:
                tracing.record_failure(span, exc)
                self._failed(message, part, envelope, handler, exc, where)
                return
        outcome = _Outcome(self, part, message.offset, 1)
        self._write_status(envelope, TaskState.SUCCEEDED, outcome, result=result_json, **where)
        self.stats.succeeded += 1

    def _call(self, handler: Handler, envelope: dict[str, Any]) -> str | None:
        fingerprint = envelope["payload_schema"]
        writer = None
        if fingerprint != handler.task_type.fingerprint:
            writer = self._schemas.writer(fingerprint)
        task = handler.load(envelope["payload"], writer)
        timeout = handler.timeout or self.settings.task_timeout
        if handler.is_async:
            assert self._loop is not None
            coro = handler.func(task)
            seconds = timeout.total_seconds() if timeout else None
            future = asyncio.run_coroutine_threadsafe(
                _with_deadline(coro, seconds, handler.name), self._loop
            )
            result = future.result()
        elif timeout is not None:
            result = self._call_with_timeout(handler, task, timeout)
        else:
            result = handler.func(task)
        return _result_json(result)

    def _call_with_timeout(self, handler: Handler, task: Any, timeout: timedelta) -> Any:
        """Run a sync handler with a deadline. CPython cannot interrupt a thread blocked in C
        (a socket read, ``time.sleep``), so at the deadline the attempt fails with
        HandlerTimeout and the partition moves on; the abandoned call finishes in the
        background and its result is discarded."""
        if self._timed is None:
            self._timed = ThreadPoolExecutor(
                max_workers=max(4, self.settings.concurrency * 2),
                thread_name_prefix="streamjobs-timed",
            )
        future = self._timed.submit(handler.func, task)
        try:
            return future.result(timeout.total_seconds())
        except FutureTimeout:
            future.cancel()
            raise HandlerTimeout(
                f"{handler.name} exceeded its timeout of {timeout.total_seconds():g}s"
            ) from None

    def _failed(
        self,
        message: client.Record,
        part: _Partition,
        envelope: dict[str, Any],
        handler: Handler,
        exc: BaseException,
        where: dict[str, Any],
    ) -> None:
        policy = RetryPolicy(
            max_attempts=envelope["max_attempts"]
            or handler.max_attempts
            or self.settings.max_attempts,
            tiers=tuple(self.settings.retry_tiers),
            non_retryable=handler.non_retryable,
        )
        decision = decide(policy, envelope["attempt"], exc, status.now_ms())
        if isinstance(decision, DeadLetter):
            self._dead_letter(message, part, envelope, decision.reason, exc, where)
            return
        self._retry(message, part, envelope, decision, exc, where)

    def _retry(
        self,
        message: client.Record,
        part: _Partition,
        envelope: dict[str, Any],
        decision: RetryAt,
        exc: BaseException,
        where: dict[str, Any],
    ) -> None:
        retried = {
            **envelope,
            "attempt": decision.attempt,
            "not_before_ms": decision.not_before_ms,
            "origin": _origin_of(message),
        }
        outcome = _Outcome(self, part, message.offset, 2)
        # the retry record continues the trace: the next attempt is a child of this one
        self._produce(
            self._topics.retry[decision.tier],
            message.key,
            _ENVELOPE.encode(retried),
            tracing.inject(),
            outcome,
        )
        self._write_status(
            envelope,
            TaskState.RETRY_SCHEDULED,
            outcome,
            error_type=type(exc).__name__,
            error=error_text(exc, 2000),
            **_moved(where, self._topics.retry[decision.tier]),
            not_before_ms=decision.not_before_ms,
        )
        self.stats.retried += 1

    def _dead_letter(
        self,
        message: client.Record,
        part: _Partition,
        envelope: dict[str, Any] | None,
        reason: str,
        exc: BaseException | None,
        where: dict[str, Any] | None = None,
    ) -> None:
        origin = Origin(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            timestamp_ms=message.timestamp_ms,
            key=message.key,
            value=message.value,
            headers=message.headers,
        )
        value = encode_dead_letter(
            origin,
            reason=reason,
            queue=self.settings.queue,
            worker_id=self.worker_id,
            now_ms=status.now_ms(),
            max_bytes=self.settings.dlq_max_bytes,
            envelope=envelope,
            error=exc,
        )
        # an undecodable record has no task id, hence no status (a compacted topic needs a key)
        outcome = _Outcome(self, part, message.offset, 2 if envelope else 1)
        key = envelope["task_id"].encode() if envelope else message.key
        self._produce(self._topics.dlq, key, value, message.headers, outcome)
        if envelope is not None:
            fields = _moved(where or {"worker_id": self.worker_id}, self._topics.dlq)
            self._write_status(
                envelope,
                TaskState.DEAD_LETTERED,
                outcome,
                reason=reason,
                error_type=type(exc).__name__ if exc else None,
                error=error_text(exc, 2000) if exc else None,
                **fields,
            )
        self.stats.dead_lettered += 1
        _log.warning(
            "dead-lettered %s[%d]@%d: %s",
            message.topic,
            message.partition,
            message.offset,
            reason,
        )

    def _write_status(
        self, envelope: dict[str, Any], state: TaskState, outcome: _Outcome | None, **fields: Any
    ) -> None:
        value = status.encode_status(envelope, state, **fields)
        self._produce(self._topics.status, envelope["task_id"].encode(), value, None, outcome)

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Any,
        outcome: _Outcome | None,
    ) -> None:
        callback = outcome.delivered if outcome is not None else None
        while True:
            try:
                self._producer.produce(
                    topic, value, key, headers=headers or None, on_delivery=callback
                )
                return
            except BufferError:
                # the local queue is full: the poll thread serves deliveries, others wait for it
                if threading.get_ident() == self._poll_thread:
                    self._producer.poll(0.01)
                else:
                    time.sleep(0.001)


def _keys(partitions: list[client.TopicPartition]) -> list[TopicKey]:
    return [(p.topic, p.partition) for p in partitions]


def _moved(where: dict[str, Any], topic: str) -> dict[str, Any]:
    """Status fields for a task that now sits on ``topic`` (offset unknown until delivered)."""
    return {**where, "topic": topic, "partition": None, "offset": None}


def _origin_of(message: client.Record) -> dict[str, Any]:
    return {
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
        "timestamp_ms": message.timestamp_ms,
    }


def _result_json(result: Any) -> str | None:
    if result is None:
        return None
    if hasattr(result, "model_dump_json"):
        return str(result.model_dump_json())
    try:
        return json.dumps(result)
    except (TypeError, ValueError) as exc:
        raise BadInput(
            f"handler result is not JSON-serialisable: {exc}", reason="bad_result"
        ) from exc


async def _with_deadline(coro: Any, seconds: float | None, name: str) -> Any:
    """Await an async handler; past ``seconds`` it is cancelled and HandlerTimeout raised."""
    if seconds is None:
        return await coro
    deadline = asyncio.timeout(seconds)
    try:
        async with deadline:
            return await coro
    except TimeoutError:
        if deadline.expired():  # ours, not a TimeoutError raised by the handler itself
            raise HandlerTimeout(f"{name} exceeded its timeout of {seconds:g}s") from None
        raise


def _bind(func: Callable[..., None], *args: Any) -> Callable[[], None]:
    def item() -> None:
        func(*args)

    return item


__all__ = ["DecodeError", "Worker", "WorkerStats"]
