"""The task registry: which handler runs which task type, with what policy overrides.

Owns handler registration (a decorator, by task type), payload decoding into the task model
(resolving older writer schemas) and validation errors as ``InvalidArgs``. Does not run handlers
or route failures (:mod:`streamjobs.worker.loop`, :mod:`streamjobs.retry`). Also holds the
recurring tasks declared in code (``schedule``) for :mod:`streamjobs.scheduler` to publish; their
cron expressions and zones are checked there, when the scheduler starts. Nothing is looked up by
importing names found in records: a task type unknown here is ``UnknownTask``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import ValidationError

from streamjobs.errors import ConfigError, InvalidArgs, UnknownTask
from streamjobs.models import Task
from streamjobs.rates import Rate, parse_rate
from streamjobs.tasktypes import TaskType

T = TypeVar("T", bound=Task)
HandlerFunc = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class Handler:
    """A registered handler and its per-type overrides of the queue policy."""

    task_type: TaskType
    func: HandlerFunc
    is_async: bool
    max_attempts: int | None
    timeout: timedelta | None
    non_retryable: tuple[type[BaseException], ...]
    rate_limit: Rate | None = None  # task starts per period over the whole group

    @property
    def name(self) -> str:
        return self.task_type.name

    def load(self, payload: bytes, writer: Any = None) -> Task:
        """Decode and validate a payload into the task model."""
        record = self.task_type.codec.decode_body(payload, writer)
        try:
            task = self.task_type.model.model_validate(record)
        except ValidationError as exc:
            raise InvalidArgs(f"{self.name}: {exc.error_count()} invalid field(s): {exc}") from exc
        assert isinstance(task, Task)
        return task


@dataclass(frozen=True, slots=True)
class ScheduleDeclaration:
    """A recurring task declared in code with :meth:`TaskRegistry.schedule`."""

    name: str
    task: Task
    cron: str | None
    every: timedelta | None
    timezone: str
    catch_up: str
    key: str | None


class TaskRegistry:
    """Handlers by task type name. Build one at import time of your worker module."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._schedules: dict[str, ScheduleDeclaration] = {}

    def handler(
        self,
        model: type[T],
        *,
        max_attempts: int | None = None,
        timeout: timedelta | None = None,
        non_retryable: tuple[type[BaseException], ...] = (),
        rate_limit: str | None = None,
    ) -> Callable[[Callable[[T], Any]], Callable[[T], Any]]:
        """Register the decorated function (sync or ``async def``) as ``model``'s handler.

        ``rate_limit`` (``"20/s"``, ``"100/m"``, ``"500/h"``) caps how many of these tasks start
        per period over all the group's workers; a task over it waits (README "Rate limits").
        """
        if not (isinstance(model, type) and issubclass(model, Task)):
            raise ConfigError(f"handler() takes a Task subclass, got {model!r}")
        rate = None if rate_limit is None else parse_rate(rate_limit)

        def register(func: Callable[[T], Any]) -> Callable[[T], Any]:
            name = model.task_name
            if name in self._handlers:
                raise ConfigError(f"task type {name!r} already has a handler")
            self._handlers[name] = Handler(
                task_type=TaskType(model, name),
                func=func,
                is_async=asyncio.iscoroutinefunction(func),
                max_attempts=max_attempts,
                timeout=timeout,
                non_retryable=non_retryable,
                rate_limit=rate,
            )
            return func

        return register

    def schedule(
        self,
        name: str,
        *,
        task: Task,
        cron: str | None = None,
        every: timedelta | None = None,
        timezone: str = "UTC",
        catch_up: str = "latest",
        key: str | None = None,
    ) -> None:
        """Fire ``task`` on a cron expression (in ``timezone``) or ``every`` interval.

        Every worker running this registry publishes the declaration to the schedules topic
        when it leads; ``catch_up`` is ``latest`` (default), ``skip`` or ``all`` (see the
        README's "Recurring tasks").
        """
        if not isinstance(task, Task):
            raise ConfigError(f"schedule() takes a Task instance, got {task!r}")
        if (cron is None) == (every is None):
            raise ConfigError(f"schedule {name!r}: give exactly one of cron=... or every=...")
        if name in self._schedules:
            raise ConfigError(f"schedule {name!r} is already declared")
        self._schedules[name] = ScheduleDeclaration(
            name, task, cron, every, timezone, catch_up, key
        )

    @property
    def schedules(self) -> list[ScheduleDeclaration]:
        """The recurring tasks declared in code."""
        return list(self._schedules.values())

    def get(self, name: str) -> Handler:
        try:
            return self._handlers[name]
        except KeyError:
            raise UnknownTask(f"no handler registered for task type {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._handlers

    def __iter__(self) -> Iterator[Handler]:
        return iter(self._handlers.values())

    def __len__(self) -> int:
        return len(self._handlers)
