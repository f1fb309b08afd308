"""What middleware hooks see: the contexts of a submit and of an attempt, and their outcomes.

Owns the frozen facts :mod:`streamjobs.middleware` hands to its hooks: :class:`SubmitContext`
and :class:`SubmitOutcome` (one task record produced), :class:`AttemptContext` and
:class:`AttemptOutcome` (one handler attempt and what became of it), :class:`Outcomes` (the
outcomes told at once, a success kept as its duration until read), and the
``streamjobs-schedule`` header a fired task carries. Pure data: does not run hooks (the chain
in :mod:`streamjobs.middleware` does) and is imported by users through that module.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from streamjobs.models import TaskState

#: Headers a middleware adds to a record it wraps (trace context, ...).
Headers = list[tuple[str, bytes]]
#: Headers as read from a record (a value may be missing).
RecordHeaders = tuple[tuple[str, bytes | None], ...]
#: An attempt's context as the worker keeps it until its outcome is written
#: (:meth:`AttemptContext.kept`).
KeptContext = dict[str, Any]

#: The record header naming the recurring schedule that fired a task (``AttemptContext.schedule``).
SCHEDULE_HEADER = "streamjobs-schedule"


def schedule_of(headers: Iterable[tuple[str, bytes | str | None]]) -> str | None:
    """The schedule named by a record's ``streamjobs-schedule`` header, if it has one."""
    for name, value in headers:
        if name == SCHEDULE_HEADER and value is not None:
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            return text[:200]
    return None


@dataclass(frozen=True, slots=True)
class SubmitContext:
    """One task record about to be produced by ``submit``, a replay or a dead-letter redrive.

    ``headers`` is the one mutable part: what middleware append there is put on the task
    record (the trace context, for one). ``delay`` is how long the task waits before it is due
    (None: due now). ``origin_headers`` are the original record's headers for a replay or
    redrive (``operation``), so a span can link to the trace of the earlier run.
    """

    task_id: str
    task: str
    key: str | None
    queue: str
    topic: str
    operation: Literal["submit", "replay", "redrive"] = "submit"
    delay: timedelta | None = None
    origin_headers: RecordHeaders = ()
    headers: Headers = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SubmitOutcome:
    """What became of one submitted task record: ``confirmed`` by Kafka or not (``error`` says
    why). ``duration`` is the confirmed write's wall time, the ``queued`` status and the record
    (for ``submit_many``, the whole batch's)."""

    confirmed: bool
    duration: timedelta
    error: str | None = None


@dataclass(frozen=True)
class AttemptContext:
    """One attempt of a handler at a task record (``attempt`` starts at 1).

    ``headers`` are the record's own headers (trace context to continue). ``carry_headers`` is
    the one mutable part: what middleware append there travels on the task's retry record, so
    the next attempt can continue from this one. ``schedule`` names the schedule that produced
    the task, when one did.
    """

    task_id: str
    task: str
    key: str | None
    attempt: int
    queue: str
    topic: str
    partition: int
    offset: int
    group: str
    worker_id: str
    headers: RecordHeaders = ()
    schedule: str | None = None
    carry_headers: Headers = field(default_factory=list)

    @classmethod
    def of(
        cls,
        task_id: str,
        task: str,
        key: str | None,
        attempt: int,
        queue: str,
        topic: str,
        partition: int,
        offset: int,
        group: str,
        worker_id: str,
        headers: RecordHeaders,
        schedule: str | None,
    ) -> AttemptContext:
        """The same as the constructor, for the worker's every attempt (:func:`_frozen`;
        ``carry_headers`` is made when first read)."""
        fields: dict[str, Any] = {
            "task_id": task_id,
            "task": task,
            "key": key,
            "attempt": attempt,
            "queue": queue,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "group": group,
            "worker_id": worker_id,
            "headers": headers,
            "schedule": schedule,
        }
        return _frozen(cls, fields)

    def kept(self) -> KeptContext:
        """This context as the worker keeps it until the attempt's outcome is written: its
        fields, which the garbage collector does not even track while they are strings and
        numbers (no ``carry_headers`` used). :class:`Outcomes` makes a context of it again when
        it is read, equal to this one and sharing its ``carry_headers``."""
        return self.__dict__


class _MadeWhenRead:
    """``AttemptContext.carry_headers`` of a context :meth:`~AttemptContext.of` made: the list
    is made when first read (most attempts never read it, and a context kept until its outcome
    is acknowledged is then one object fewer for the garbage collector). A descriptor without
    ``__set__``, so a list in the instance's ``__dict__`` (the constructor's) comes first; a
    ``__getattr__`` would do the same but make every other field's read several times slower:
    the interpreter's fast attribute path skips classes that define one."""

    def __get__(self, instance: AttemptContext | None, owner: type) -> Any:
        if instance is None:
            raise AttributeError("carry_headers")  # a field with a default factory: no default
        return instance.__dict__.setdefault("carry_headers", [])  # atomic: one list


if not TYPE_CHECKING:  # for mypy, carry_headers is the field it always reads as
    AttemptContext.carry_headers = _MadeWhenRead()


@dataclass(frozen=True)
class AttemptOutcome:
    """What became of one attempt, as written: ``state`` is ``succeeded``, ``retry_scheduled``,
    ``dead_lettered`` or ``cancelled`` (reason ``cancelled``).

    ``duration`` is the attempt's wall time (middleware included). A failed attempt names its
    exception (``error_type`` is the qualified class name, ``error`` its message; ``exception``
    is the exception itself, with its traceback, when the attempt raised one) and either the
    tier its retry waits on or the dead-letter ``reason`` (``max_attempts``, a handler's
    ``Discard`` reason, ...).
    """

    state: TaskState
    duration: timedelta
    error_type: str | None = None
    error: str | None = None
    retry_tier: timedelta | None = None
    reason: str | None = None
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    @classmethod
    def failure(
        cls,
        state: TaskState,
        duration: timedelta,
        exc: BaseException,
        *,
        retry_tier: timedelta | None = None,
        reason: str | None = None,
    ) -> AttemptOutcome:
        """The outcome of an attempt that raised ``exc``."""
        return cls(state, duration, error_type(exc), str(exc), retry_tier, reason, exc)

    @classmethod
    def success(cls, duration: timedelta) -> AttemptOutcome:
        """A succeeded attempt's outcome (:func:`_frozen`: one per task)."""
        return _frozen(cls, {"state": TaskState.SUCCEEDED, "duration": duration})

    @property
    def succeeded(self) -> bool:
        return self.state is TaskState.SUCCEEDED


_Frozen = TypeVar("_Frozen", AttemptContext, AttemptOutcome)


def _frozen(cls: type[_Frozen], fields: dict[str, Any]) -> _Frozen:
    """An instance of the frozen dataclass ``cls`` with ``fields`` (the fields left out keep
    their class defaults), set in one go: its generated ``__init__`` goes through
    ``object.__setattr__`` once per field, about 1 us for a context, on every attempt's path.
    ``fields`` becomes the instance's ``__dict__`` (no copy)."""
    made = object.__new__(cls)
    object.__setattr__(made, "__dict__", fields)
    return made


#: An attempt's outcome as middleware are told it: its context, and what became of it.
Heard = tuple[AttemptContext, AttemptOutcome]


class Outcomes(Sequence[Heard]):
    """The outcomes told at once (:meth:`Middleware.outcome_batch`): ``(ctx, outcome)`` pairs
    in the order they were written.

    The worker keeps a success as its duration in seconds until someone reads it as a pair (its
    :class:`AttemptOutcome` is built then); :meth:`successes` and :meth:`failures` read the two
    kinds apart, so a middleware counting thousands of successes a second builds no outcome for
    them, and one that logs failures only does not even look at the successes' contexts.

    When no middleware wanted success contexts (:meth:`Middleware.wants_success_contexts`),
    successes come only as durations by (queue, task type), ``counted``: they are in
    :meth:`successes_by_task` and nowhere else (not in ``len``, the pairs or
    :meth:`successes`).
    """

    __slots__ = ("_contexts", "_counted", "_failed", "_outcomes")

    def __init__(
        self,
        contexts: Sequence[AttemptContext | KeptContext],
        outcomes: Sequence[AttemptOutcome | float],
        counted: dict[tuple[str, str], list[float]] | None = None,
    ) -> None:
        """``outcomes[i]`` is what became of ``contexts[i]`` (a context, or what
        :meth:`AttemptContext.kept` kept of it): an AttemptOutcome, or a success's duration in
        seconds. ``counted``: more successes, their durations in order by (queue, task type),
        without contexts."""
        self._contexts = contexts
        self._outcomes = outcomes
        self._counted = counted
        self._failed: list[int] | None = None  # where the failures are, once looked for

    @classmethod
    def of(cls, heard: Iterable[Heard]) -> Outcomes:
        """The batch of these pairs (itself, when it is one already)."""
        if isinstance(heard, Outcomes):
            return heard
        contexts: list[AttemptContext | KeptContext] = []
        outcomes: list[AttemptOutcome | float] = []
        for ctx, outcome in heard:
            contexts.append(ctx)
            outcomes.append(outcome)
        return cls(contexts, outcomes)

    def __len__(self) -> int:
        return len(self._contexts)

    @overload
    def __getitem__(self, index: int) -> Heard: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Heard]: ...

    def __getitem__(self, index: int | slice) -> Heard | Sequence[Heard]:
        if isinstance(index, slice):
            return Outcomes(self._contexts[index], self._outcomes[index])
        return _context(self._contexts[index]), _built(self._outcomes[index])

    def __iter__(self) -> Iterator[Heard]:
        for ctx, outcome in zip(self._contexts, self._outcomes, strict=True):
            yield _context(ctx), _built(outcome)

    def successes(self) -> Iterator[tuple[AttemptContext, float]]:
        """Each succeeded attempt's context and duration in seconds."""
        succeeded = TaskState.SUCCEEDED
        for ctx, outcome in zip(self._contexts, self._outcomes, strict=True):
            if isinstance(outcome, float):
                yield _context(ctx), outcome
            elif outcome.state is succeeded:
                yield _context(ctx), outcome.duration.total_seconds()

    def successes_by_task(self) -> dict[tuple[str, str], list[float]]:
        """The succeeded attempts' durations in seconds, in order, by (queue, task type): what
        counting them needs, read from the kept fields without making a context per success
        (those counted without a context first)."""
        grouped = {key: list(durations) for key, durations in (self._counted or {}).items()}
        if not self._contexts:
            return grouped
        succeeded = TaskState.SUCCEEDED
        queue = task = ""
        durations: list[float] = []
        for ctx, outcome in zip(self._contexts, self._outcomes, strict=True):
            if isinstance(outcome, float):
                seconds = outcome
            elif outcome.state is succeeded:
                seconds = outcome.duration.total_seconds()
            else:
                continue
            fields = ctx if isinstance(ctx, dict) else ctx.__dict__  # AttemptContext.kept()
            if fields["task"] != task or fields["queue"] != queue or not grouped:
                queue, task = fields["queue"], fields["task"]  # a batch is mostly one type
                durations = grouped.setdefault((queue, task), [])
            durations.append(seconds)
        return grouped

    def failures(self) -> Iterator[Heard]:
        """Every other outcome (retried, dead-lettered, cancelled) with its context."""
        if self._failed is None:  # looked for once: every middleware that counts or logs asks
            succeeded = TaskState.SUCCEEDED
            self._failed = [
                index
                for index, outcome in enumerate(self._outcomes)
                if not isinstance(outcome, float) and outcome.state is not succeeded
            ]
        contexts, outcomes = self._contexts, self._outcomes
        for index in self._failed:
            failed = outcomes[index]
            assert not isinstance(failed, float)  # for mypy: a float is a success
            yield _context(contexts[index]), failed


def _context(entry: AttemptContext | KeptContext) -> AttemptContext:
    if isinstance(entry, AttemptContext):
        return entry
    return _frozen(AttemptContext, entry)  # the same fields: the very same dict


def _built(outcome: AttemptOutcome | float) -> AttemptOutcome:
    if isinstance(outcome, AttemptOutcome):
        return outcome
    return AttemptOutcome.success(timedelta(seconds=outcome))


def error_type(exc: BaseException) -> str:
    """The qualified class name of ``exc`` (``builtins`` left out), as spans and outcomes say."""
    cls = type(exc)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
