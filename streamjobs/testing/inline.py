"""Inline mode: tasks run at once, in the submitting thread, through the real wire format.

Owns :class:`InlineProducer` (``submit`` with :class:`streamjobs.Producer`'s arguments, no
broker) and :class:`InlineRun` (what happened to one task: every attempt, the final state, the
result). Each task, and each retry of it, is encoded exactly as the producer writes it (the
task's Avro payload inside the envelope, the size limit checked), decoded back exactly as the
worker reads it, validated into the handler's model and only then handed to the handler; the
result must be JSON, as on the status topic. So a model the wire format cannot carry, a task
the registry has no handler for, or a result the status topic cannot hold fails the test,
unlike an "eager" mode that calls the function with the Python object.

The retry policy is the worker's (:func:`streamjobs.retry.decide`): exceptions retried up to
``max_attempts``, ``Retry`` and ``Discard`` honoured, ``non_retryable`` dead-lettered. Retries,
``delay`` and ``eta`` are not waited for (the delay is reported); handler timeouts are not
enforced. Does not touch Kafka: for that, the pytest plugin's broker fixtures
(:mod:`streamjobs.testing.plugin`).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import threading
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from streamjobs import status
from streamjobs.envelope import Envelope, decode_envelope, encode_envelope
from streamjobs.errors import ConfigError, PayloadTooLarge, TaskFailed, UnknownTask
from streamjobs.middleware import error_type
from streamjobs.models import Task, TaskState
from streamjobs.registry import Handler, TaskRegistry
from streamjobs.retry import DeadLetter, RetryPolicy, decide
from streamjobs.settings import Settings
from streamjobs.submission import due_ms
from streamjobs.taskcontext import CurrentTask, running
from streamjobs.taskids import new_id
from streamjobs.tasktypes import TaskType
from streamjobs.worker.handler_call import result_json


@dataclass(frozen=True, slots=True)
class InlineAttempt:
    """One attempt: ``state`` succeeded, retry_scheduled or dead_lettered; the error if any."""

    attempt: int
    state: TaskState
    error_type: str | None = None
    error: str | None = None
    retry_in: timedelta | None = None  # how long the worker would have waited before the next


@dataclass(frozen=True, slots=True)
class InlineRun:
    """One inline task from submit to its final state; ``wait()`` answers as TaskHandle's."""

    task_id: str
    task: str
    key: str | None
    state: TaskState
    attempts: tuple[InlineAttempt, ...]
    result_json: str | None = None
    reason: str | None = None  # why it was dead-lettered
    not_before_ms: int | None = None  # when a delayed task would have been due

    @property
    def result(self) -> Any:
        return None if self.result_json is None else json.loads(self.result_json)

    @property
    def error(self) -> str | None:
        return self.attempts[-1].error if self.attempts else None

    def wait(self, timeout: float = 0.0) -> Any:
        """The handler's result; TaskFailed if the task was dead-lettered."""
        if self.state is TaskState.SUCCEEDED:
            return self.result
        last = self.attempts[-1] if self.attempts else None
        raise TaskFailed(
            self.task_id,
            reason=self.reason,
            error_type=last.error_type if last else None,
            error=last.error if last else None,
        )


class InlineProducer:
    """Runs each submitted task at once through ``registry``; every run is kept in ``runs``."""

    def __init__(self, registry: TaskRegistry, settings: Settings | None = None) -> None:
        self.registry = registry
        self.settings = settings or Settings(topic_prefix="inline")
        self.runs: list[InlineRun] = []
        self._types: dict[type[Task], TaskType] = {}

    def __enter__(self) -> InlineProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release; here so code written for Producer runs unchanged."""

    def submit(
        self,
        task: Task,
        *,
        key: str | None = None,
        task_id: str | None = None,
        delay: timedelta | None = None,
        eta: datetime | None = None,
        max_attempts: int | None = None,
    ) -> InlineRun:
        """Encode, decode and run ``task`` (and its retries) now; its run, with the outcome."""
        if not isinstance(task, Task):
            raise ConfigError(f"submit() takes a streamjobs.Task, got {type(task).__name__}")
        task_type = self._types.setdefault(type(task), TaskType(type(task), task.task_name))
        envelope = Envelope(
            task_id=task_id or new_id(),
            task=task_type.name,
            queue=self.settings.queue,
            key=key,
            payload=task_type.encode(task),
            payload_schema=task_type.fingerprint,
            max_attempts=max_attempts,
            not_before_ms=due_ms(delay, eta),
            submitted_at_ms=status.now_ms(),
        )
        run = self._run(envelope, task_type)
        self.runs.append(run)
        return run

    def submit_many(
        self, tasks: list[Task], *, keys: list[str | None] | None = None
    ) -> list[InlineRun]:
        key_list = keys if keys is not None else [None] * len(tasks)
        if len(key_list) != len(tasks):
            raise ConfigError("submit_many: keys and tasks differ in length")
        return [self.submit(t, key=k) for t, k in zip(tasks, key_list, strict=True)]

    def _run(self, envelope: Envelope, writer: TaskType) -> InlineRun:
        attempts: list[InlineAttempt] = []
        while True:
            received = self._round_trip(envelope)  # what a worker would decode
            try:
                handler = self.registry.get(received.task)
            except UnknownTask as exc:  # the worker dead-letters it: unknown_task
                attempts.append(_failed(received, TaskState.DEAD_LETTERED, exc))
                return _finished(received, attempts, reason=exc.reason)
            try:
                result = result_json(_call(handler, received, writer))
            except Exception as exc:
                # "now" is 0: the decision's due time is then the delay the worker would wait
                decision = decide(self._policy(handler, received), received.attempt, exc, 0)
                if isinstance(decision, DeadLetter):
                    attempts.append(_failed(received, TaskState.DEAD_LETTERED, exc))
                    return _finished(received, attempts, reason=decision.reason)
                retry_in = timedelta(milliseconds=decision.not_before_ms)
                attempts.append(_failed(received, TaskState.RETRY_SCHEDULED, exc, retry_in))
                envelope = replace(received, attempt=decision.attempt)
                continue
            attempts.append(InlineAttempt(received.attempt, TaskState.SUCCEEDED))
            return _finished(received, attempts, result=result)

    def _round_trip(self, envelope: Envelope) -> Envelope:
        value = encode_envelope(envelope)
        if len(value) + len(envelope.record_key) + 512 > self.settings.max_message_bytes:
            raise PayloadTooLarge(
                f"task {envelope.task} encodes to {len(value)} bytes, over max_message_bytes="
                f"{self.settings.max_message_bytes}"
            )
        return decode_envelope(value)

    def _policy(self, handler: Handler, envelope: Envelope) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=envelope.max_attempts
            or handler.max_attempts
            or self.settings.max_attempts,
            tiers=tuple(self.settings.retry_tiers),
            non_retryable=handler.non_retryable,
        )


def _call(handler: Handler, envelope: Envelope, writer: TaskType) -> Any:
    """Decode the payload into the handler's model (resolving the submitter's schema when the
    two models differ, as the worker does) and call the handler."""
    resolve = None if envelope.payload_schema == handler.task_type.fingerprint else writer
    task = handler.load(envelope.payload, resolve.codec.parsed if resolve else None)
    e = envelope
    with running(CurrentTask(e.task_id, e.task, e.key, e.attempt, e.generation)):
        if not handler.is_async:
            return handler.func(task)
        return _run_coroutine(handler.func(task))


def _run_coroutine(coro: Any) -> Any:
    """Run an async handler to completion, also from inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the submitting thread
            outcome["error"] = exc

    context = contextvars.copy_context()  # current_task() stays the handler's
    thread = threading.Thread(target=context.run, args=(run,), name="streamjobs-inline")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")


def _failed(
    envelope: Envelope, state: TaskState, exc: Exception, retry_in: timedelta | None = None
) -> InlineAttempt:
    return InlineAttempt(envelope.attempt, state, error_type(exc), str(exc), retry_in)


def _finished(
    envelope: Envelope,
    attempts: list[InlineAttempt],
    *,
    result: str | None = None,
    reason: str | None = None,
) -> InlineRun:
    state = TaskState.SUCCEEDED if reason is None else TaskState.DEAD_LETTERED
    return InlineRun(
        task_id=envelope.task_id,
        task=envelope.task,
        key=envelope.key,
        state=state,
        attempts=tuple(attempts),
        result_json=result,
        reason=reason,
        not_before_ms=envelope.not_before_ms,
    )
