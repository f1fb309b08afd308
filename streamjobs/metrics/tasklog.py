"""The log of each handler attempt: one outcome line once the outcome is written, and the
handler's traceback.

Owns :class:`TaskLog`, a middleware that logs each attempt's outcome: task id, task type, key,
attempt, queue, topic/partition/offset, duration and outcome (with the retry tier or the
dead-letter reason and the error), at DEBUG for successes and INFO for retries and dead letters
by default; and the handler's traceback (the outcome carries the exception), as its own record
at WARNING when the task will be retried and ERROR when it was dead-lettered. A handler
steering its task on purpose (``Retry``, ``Discard``) gets its outcome line but no traceback:
that is control flow, not an error. The structured fields ride on the record
(:data:`streamjobs.metrics.logs.FIELDS`) for the JSON format. It has no attempt hook: the
task on a handler's own records is the worker's current task, put there by
:class:`~streamjobs.metrics.logs.TaskContextFilter`. Does not format lines or count.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from streamjobs.errors import TaskControl
from streamjobs.metrics.logs import FIELDS
from streamjobs.middleware import AttemptContext, AttemptOutcome, Heard, Middleware, Outcomes
from streamjobs.models import TaskState

LOGGER = "streamjobs.outcomes"
_log = logging.getLogger(__name__)
_WORDS = {
    TaskState.SUCCEEDED: "succeeded",
    TaskState.RETRY_SCHEDULED: "retried",
    TaskState.DEAD_LETTERED: "dead_lettered",
}


def fields_of(ctx: AttemptContext, outcome: AttemptOutcome) -> dict[str, Any]:
    """The structured fields of an outcome line. Pure."""
    fields: dict[str, Any] = {
        "event": "task_outcome",
        "outcome": _WORDS.get(outcome.state, outcome.state.value),
        "task_id": ctx.task_id,
        "task": ctx.task,
        "key": ctx.key,
        "attempt": ctx.attempt,
        "queue": ctx.queue,
        "topic": ctx.topic,
        "partition": ctx.partition,
        "offset": ctx.offset,
        "duration_ms": round(outcome.duration.total_seconds() * 1000, 3),
        "worker_id": ctx.worker_id,
    }
    if outcome.retry_tier is not None:
        fields["retry_tier_s"] = outcome.retry_tier.total_seconds()
    if outcome.reason is not None:
        fields["reason"] = outcome.reason
    if outcome.error_type is not None:
        fields["error_type"] = outcome.error_type
        fields["error"] = (outcome.error or "")[:1000]
    return fields


def line_of(fields: dict[str, Any]) -> str:
    """The human line: ``retried SendEmail task_id=... key=... attempt=1 ... in 3.1ms: ...``."""
    text = (
        f"{fields['outcome']} {fields['task']} task_id={fields['task_id']} key={fields['key']}"
        f" attempt={fields['attempt']} queue={fields['queue']}"
        f" at {fields['topic']}[{fields['partition']}]@{fields['offset']}"
        f" in {fields['duration_ms']:.1f}ms"
    )
    if "retry_tier_s" in fields:
        text += f" retry_tier={fields['retry_tier_s']:g}s"
    if "reason" in fields:
        text += f" reason={fields['reason']}"
    if "error_type" in fields:
        text += f": {fields['error_type']}: {fields['error']}"
    return text


class TaskLog(Middleware):
    """Logs every attempt's outcome on the ``streamjobs.outcomes`` logger, and the traceback of
    a handler's exception."""

    def __init__(
        self,
        logger: logging.Logger | None = None,
        *,
        success_level: int = logging.DEBUG,
        failure_level: int = logging.INFO,
    ) -> None:
        self._log = logger or logging.getLogger(LOGGER)
        self._success_level = success_level
        self._failure_level = failure_level

    def wants_success_contexts(self) -> bool:
        """Only while success lines are logged (DEBUG by default): asked once per poll-loop
        turn, so a level changed at run time takes effect from the next turn's successes."""
        return self._log.isEnabledFor(self._success_level)

    def outcome_batch(self, heard: Sequence[Heard]) -> None:
        # successes below the logger's level (the default) are not even looked at: no line, no
        # outcome object built for them
        batch = Outcomes.of(heard)
        told = batch if self._log.isEnabledFor(self._success_level) else batch.failures()
        for ctx, outcome in told:
            try:
                self.outcome(ctx, outcome)
            except Exception:
                _log.warning("outcome log line failed; ignored", exc_info=True)

    def outcome(self, ctx: AttemptContext, outcome: AttemptOutcome) -> None:
        level = self._success_level if outcome.succeeded else self._failure_level
        if self._log.isEnabledFor(level):
            fields = fields_of(ctx, outcome)
            self._log.log(level, line_of(fields), extra={FIELDS: fields})
        raised = outcome.exception
        if isinstance(raised, Exception) and not isinstance(raised, TaskControl):
            dead = outcome.state is TaskState.DEAD_LETTERED
            self._log.log(
                logging.ERROR if dead else logging.WARNING,
                "%s %s task_id=%s attempt=%d raised (%s)",
                ctx.task,
                "dead-lettered" if dead else "will be retried",
                ctx.task_id,
                ctx.attempt,
                outcome.reason if dead else "retry",
                exc_info=(type(raised), raised, raised.__traceback__),
            )
