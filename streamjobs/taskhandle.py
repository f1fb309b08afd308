"""``TaskHandle``: a submitted task as the submitter holds it.

Owns what a submitter can ask of a task Kafka has confirmed: its id, the topic, partition and
offset it landed at, its latest status and a wait for its outcome (read from the status topic
through :mod:`streamjobs.status`). Does not produce anything: :mod:`streamjobs.producer` writes
the task and creates the handle.
"""

from __future__ import annotations

from typing import Any

from streamjobs import status
from streamjobs.settings import Settings


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
        return status.latest(self._settings, self.task_id, timeout=timeout)

    def wait(self, timeout: float = 60.0) -> Any:
        """The handler's result; TaskFailed if dead-lettered, TaskTimeout if not done in time."""
        view = status.wait(self._settings, self.task_id, timeout, since_ms=self.submitted_at_ms)
        return status.raise_for_failure(view)
