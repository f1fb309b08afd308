"""Log records of a worker: the task a record belongs to, and the text or JSON line it becomes.

Owns the :class:`TaskContextFilter` that puts the running task on every log record written
inside a handler call (so a handler's own ``logger.info(...)`` carries ``task_id``, ``task``,
``attempt`` and ``trace_id``), the two line formats (``text`` for people, ``json``: one object
per line for ELK or Loki) and :func:`configure`, which the ``consume`` command calls once. The
task is the one the worker makes current around each handler call anyway
(:func:`streamjobs.taskcontext.running_task`, which follows the handler into its asyncio task
and the thread of a timed call), read when a record is written: an attempt pays nothing for
it. Uses the standard :mod:`logging` module only. Does not decide what is logged about an
outcome (:mod:`streamjobs.metrics.tasklog`) and never installs handlers on import: an
application embedding a Worker keeps its own logging and adds the filter to its handlers if it
wants the fields.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from streamjobs.middleware import AttemptContext
from streamjobs.taskcontext import CurrentTask, running, running_task
from streamjobs.tracing import current_trace_id

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")

#: The attribute a log record's structured fields travel in (``extra={FIELDS: {...}}``).
FIELDS = "streamjobs"


def current() -> CurrentTask | None:
    """The task whose handler is running in this context, if any."""
    return running_task()


@contextmanager
def task_context(attempt: AttemptContext) -> Iterator[CurrentTask]:
    """Make ``attempt``'s task current for the records written in the block, as the worker
    does around a handler call (for code that logs on a task's behalf outside one)."""
    with running(CurrentTask(attempt.task_id, attempt.task, attempt.key, attempt.attempt)) as task:
        yield task


class TaskContextFilter(logging.Filter):
    """Adds ``task_id``, ``task``, ``attempt`` and ``trace_id`` to every record (None outside
    a handler call). Attach it to a *handler*: a logger's filters do not see its children's
    records. The task and its trace id are looked up here, when a record is written, never on
    every attempt.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        task = running_task()
        if task is None:
            record.task_id = record.task = record.attempt = record.trace_id = None
        else:
            record.task_id = task.task_id
            record.task = task.task
            record.attempt = task.attempt
            record.trace_id = current_trace_id()
        return True


_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "task_id",
    "task",
    "attempt",
    "trace_id",
    FIELDS,
}


def _utc(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``message``, the task context
    when there is one, the record's structured fields, ``exception`` with the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _utc(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ("task_id", "task", "attempt", "trace_id"):
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, dict):
            line.update(fields)
        for name, value in vars(record).items():  # extra={...} given by any caller
            if name not in _RESERVED and not name.startswith("_"):
                line.setdefault(name, value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message``, then ``[task_id=... task=... trace_id=...]`` for a
    record written inside an attempt, then the traceback if any."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        task_id = getattr(record, "task_id", None)
        if task_id is None or getattr(record, FIELDS, None) is not None:
            return text  # outcome lines already name their task
        trace = getattr(record, "trace_id", None)
        suffix = f" trace_id={trace}" if trace else ""
        return f"{text} [task_id={task_id} task={getattr(record, 'task', None)}{suffix}]"


def formatter(kind: LogFormat) -> logging.Formatter:
    if kind == "json":
        return JsonFormatter()
    if kind == "text":
        return TextFormatter()
    raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {kind!r}")


def configure(level: str, kind: LogFormat, stream: TextIO | None = None) -> logging.Handler:
    """Log to ``stream`` (stderr) in ``kind`` format at ``level``, with the task context on
    every record: replaces the root logger's handlers. For the ``consume`` command."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter(kind))
    handler.addFilter(TaskContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
