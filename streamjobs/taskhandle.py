"""``TaskHandle``: a submitted task as the submitter holds it.

Owns what a submitter can ask of a task Kafka has confirmed: its id, the topic, partition and
offset it landed at, its latest status and a wait for its outcome (read from the status topic
through :mod:`streamjobs.status`), its cancel (:mod:`streamjobs.cancels`), and the handle of a
task submitted before under the same id (``existing_handle``: a retried submit gets it, a
clashing one DuplicateTask). Does not produce tasks: :mod:`streamjobs.producer` writes the task
and creates the handle.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from streamjobs import cancels, status, statusreads
from streamjobs.errors import DuplicateTask
from streamjobs.settings import Settings
from streamjobs.topics import queue_topics


class TaskHandle:
    """A submitted task: its id, where it landed, and a way to wait for its outcome."""

    __slots__ = ("_settings", "offset", "partition", "submitted_at_ms", "task_id", "topic")

    def __init__(
        self,
        settings: Settings,
        task_id: str,
        topic: str,
        partition: int,
        offset: int,
        submitted_at_ms: int,
    ) -> None:
        self._settings = settings
        self.task_id = task_id
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.submitted_at_ms = submitted_at_ms

    def __repr__(self) -> str:
        return f"TaskHandle({self.task_id!r}, {self.topic}[{self.partition}]@{self.offset})"

    def status(self, timeout: float = 10.0) -> status.StatusView | None:
        """The latest status on the status topic (None if none was written yet)."""
        return statusreads.latest(self._settings, self.task_id, timeout=timeout)

    def wait(self, timeout: float = 60.0) -> Any:
        """The handler's result; TaskFailed if dead-lettered, TaskTimeout if not done in time."""
        view = statusreads.wait(
            self._settings, self.task_id, timeout, since_ms=self.submitted_at_ms
        )
        return status.raise_for_failure(view)

    def cancel(self, timeout: float = 10.0) -> cancels.CancelResult:
        """Cancel the task (as :meth:`streamjobs.Producer.cancel`, through a producer of its
        own): ``requested``, or why nothing was written (``finished``, ``already_cancelled``)."""
        write = cancels.own_producer_write(self._settings, timeout)
        return cancels.request(self._settings, self.task_id, write, timeout=timeout)


def existing_handle(
    settings: Settings, known: status.StatusView, headers: Sequence[tuple[str, bytes | None]]
) -> TaskHandle:
    """The handle of the task ``known`` describes, for a submit of the same task id with
    ``headers`` (its status headers); DuplicateTask when that submit has other arguments.

    A status without a submission digest (written before streamjobs recorded one) cannot be
    told apart: that is a DuplicateTask too, since running it again is what must not happen.
    Where the status does not say where the task sits, the handle's partition and offset are -1.
    """
    digest = dict(headers).get(status.SUBMISSION_HEADER)
    why = _clash(settings, known, None if digest is None else digest.decode())
    if why is not None:
        raise DuplicateTask(
            known.task_id,
            f"task id {known.task_id} is already taken: task {known.task} ({known.state.value}) "
            f"{why}; nothing was written",
        )
    return TaskHandle(
        settings,
        known.task_id,
        known.topic or queue_topics(settings).main,
        -1 if known.partition is None else known.partition,
        -1 if known.offset is None else known.offset,
        known.submitted_at_ms if known.submitted_at_ms is not None else known.updated_at_ms,
    )


def _clash(settings: Settings, known: status.StatusView, digest: str | None) -> str | None:
    """Why a submit with ``digest`` is not the submission ``known`` describes, or None."""
    if known.queue != settings.queue:
        return f"was submitted to queue {known.queue!r}"
    if known.submission is None:
        return "carries no submission digest to compare with"
    if known.submission != digest:
        return "was submitted with other arguments (task type, key or payload)"
    return None
