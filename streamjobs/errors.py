"""The streamjobs exception tree: every error the library raises on purpose.

Owns the error classes and their stable ``reason`` codes. Does not log, retry or decide routing:
that is :mod:`streamjobs.retry` and :mod:`streamjobs.worker.routing`.

::

    StreamJobsError                      root of everything raised on purpose
    ├── ConfigError                      bad settings (bad value, unknown queue, bad tier list)
    ├── KafkaUnavailable                 broker unreachable / request timed out
    ├── WorkerCrashed                    a thread the worker owns died: Worker.run() raises it
    ├── TopicError                       a topic is missing or misconfigured (topics verify)
    ├── SubmitError                      a submit could not be confirmed durable
    ├── TransactionAborted               exactly once: the open transaction was aborted; its
    │                                    uncommitted work is read and run again
    ├── DuplicateTask                    submit(task_id=X) with other arguments than task X's
    ├── TaskFailed                       TaskHandle.wait(): the task ended dead-lettered
    │   └── TaskCancelled                TaskHandle.wait(): the task ended cancelled
    ├── TaskTimeout                      TaskHandle.wait(): no final state within the timeout
    ├── HandlerTimeout                   a handler ran past its timeout (retried by policy)
    └── BadInput                         input that can never succeed; carries ``reason``
        ├── DecodeError                  reason: decode_error, trailing_bytes, unknown_schema, ...
        ├── EncodeError                  reason: encode_error; carries the ``path`` of the field
        ├── UnknownTask                  reason: unknown_task
        ├── InvalidArgs                  reason: invalid_args
        ├── PayloadTooLarge              reason: payload_too_large
        ├── BadResult                    reason: bad_result (a result JSON cannot hold)
        ├── ResultTooLarge               reason: result_too_large (over max_message_bytes)
        └── UnsafeSchema                 reason: unsafe_schema

    TaskControl                          control flow a handler raises on purpose (never logged
    ├── Retry(delay=None)                as an error): retry now-ish or after ``delay``
    ├── Discard(reason)                  dead-letter at once, with ``reason``
    └── Cancelled                        end the task ``cancelled`` (a handler that saw
                                         ``current_task().cancelled``); never retried

``BadInput`` and ``TaskControl`` are separate branches: the first is the library refusing input,
the second is a handler steering its own task. User exceptions raised by handlers are never
wrapped; the retry policy sees them as they are, whatever ``BaseException`` they derive from
(``KeyboardInterrupt``, ``SystemExit``, ``GeneratorExit`` raised by a handler are a failed attempt).
"""

from __future__ import annotations

import traceback
from datetime import timedelta


class StreamJobsError(Exception):
    """Root of every error streamjobs raises on purpose."""


class ConfigError(StreamJobsError):
    """Settings or arguments that cannot work."""


class KafkaUnavailable(StreamJobsError):
    """The broker could not be reached or did not answer in time."""


class WorkerCrashed(StreamJobsError):
    """A thread the worker owns (task executor, event loop) died: the worker stops at once and
    ``Worker.run()`` raises this, so a supervisor restarts the process."""


class TopicError(StreamJobsError):
    """A topic is missing or has the wrong configuration."""


class SubmitError(StreamJobsError):
    """A task could not be confirmed as durably written; it may or may not be in Kafka."""

    def __init__(self, message: str, *, task_id: str | None = None) -> None:
        super().__init__(message)
        self.task_id = task_id


class TransactionAborted(StreamJobsError):
    """The open transaction was aborted; uncommitted work must be read and run again."""


class DuplicateTask(StreamJobsError):
    """``submit(task_id=X)`` where the status topic already holds a task X submitted otherwise
    (another task type, key, payload or queue); nothing was written."""

    def __init__(self, task_id: str, message: str) -> None:
        super().__init__(message)
        self.task_id = task_id


class TaskFailed(StreamJobsError):
    """Raised by ``TaskHandle.wait`` when the task ended without success."""

    def __init__(
        self, task_id: str, *, reason: str | None, error_type: str | None, error: str | None
    ) -> None:
        super().__init__(f"task {task_id} failed ({reason}): {error_type}: {error}")
        self.task_id = task_id
        self.reason = reason
        self.error_type = error_type
        self.error = error


class TaskCancelled(TaskFailed):
    """Raised by ``TaskHandle.wait`` when the task ended ``cancelled``."""

    def __init__(self, task_id: str, *, error_type: str | None, error: str | None) -> None:
        super().__init__(task_id, reason="cancelled", error_type=error_type, error=error)
        self.args = (f"task {task_id} was cancelled",)


class TaskTimeout(StreamJobsError):
    """Raised by ``TaskHandle.wait`` when no final state arrived in time."""


class HandlerTimeout(StreamJobsError):
    """A handler exceeded its timeout; the attempt counts as failed and follows the policy."""


class BadInput(StreamJobsError):
    """Input that can never succeed, whatever the retries: it is dead-lettered with ``reason``."""

    reason = "bad_input"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class DecodeError(BadInput):
    """Bytes that are not a valid record of a known schema."""

    reason = "decode_error"


class EncodeError(BadInput):
    """A value that does not fit its schema (a task that bypassed validation, a record built
    wrong), refused before anything is written. ``path`` names the field, e.g. ``items[0].qty``
    (None when it could not be told)."""

    reason = "encode_error"

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class UnknownTask(BadInput):
    """A task type with no registered handler."""

    reason = "unknown_task"


class InvalidArgs(BadInput):
    """Task arguments that fail the task model's validation."""

    reason = "invalid_args"


class PayloadTooLarge(BadInput):
    """An encoded record larger than the configured maximum."""

    reason = "payload_too_large"


class BadResult(BadInput):
    """A handler's return value that JSON cannot hold; no retry can change it."""

    reason = "bad_result"


class ResultTooLarge(BadInput):
    """A handler's result too large for its status record (``max_message_bytes``)."""

    reason = "result_too_large"


class UnsafeSchema(BadInput):
    """A task schema that could be a decoding bomb (recursion, arrays of empty items)."""

    reason = "unsafe_schema"


class TaskControl(Exception):
    """Base of the exceptions a handler raises on purpose to steer its own task."""


class Retry(TaskControl):
    """Ask for another attempt, optionally after ``delay`` (else the policy's next tier)."""

    def __init__(self, delay: timedelta | None = None, *, message: str = "") -> None:
        super().__init__(message or "retry requested")
        self.delay = delay


class Discard(TaskControl):
    """Dead-letter the task at once with ``reason``; no further attempts."""

    def __init__(self, reason: str = "discarded") -> None:
        super().__init__(reason)
        self.reason = reason


class Cancelled(TaskControl):
    """End this attempt as ``cancelled``: no retry, no dead letter. ``current_task()``'s
    ``raise_if_cancelled()`` raises it once the task was cancelled."""

    def __init__(self, message: str = "task cancelled") -> None:
        super().__init__(message)


def traceback_text(error: BaseException, limit: int = 4000) -> str:
    """The formatted traceback of ``error``, its last ``limit`` characters (the innermost
    frames and the message are what an operator reads first), never raising."""
    try:
        text = "".join(traceback.format_exception(error))
    except Exception:
        return error_text(error, limit)
    return text[-limit:].encode("utf-8", "replace").decode("utf-8")


def error_text(error: BaseException, limit: int = 8000) -> str:
    """``str(error)`` safe to put on the wire: bounded, valid UTF-8, never raising."""
    try:
        text = str(error)
    except Exception:  # a handler's exception with a broken __str__ must still be recorded
        text = f"<unprintable {type(error).__name__}>"
    # lone surrogates (e.g. from undecodable file names) are not UTF-8: the encode would fail
    return text[:limit].encode("utf-8", "replace").decode("utf-8")
