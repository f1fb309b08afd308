"""Middleware: typed hooks around submitting a task and around each handler attempt.

Owns the hook points and the chain that runs them, so that tracing
(:class:`streamjobs.tracing.TracingMiddleware`, the default), metrics and log context can
observe and wrap but never decide. The frozen facts each hook sees (contexts, outcomes,
:class:`Outcomes`) are :mod:`streamjobs.hookfacts`'s, imported from here by users.

Deliberately does not let a middleware change what happens to a task. The worker, not the
chain, decides success, retry and dead letter, writes the outcome and commits the offset:

* an exception raised *by* a middleware (entering, leaving, observing) is logged and ignored:
  the submit or the attempt goes on as if that middleware were not there;
* an exception raised *inside* the wrapped block (the handler's) passes through every
  middleware and is re-raised even when a middleware's ``__exit__`` returns True or raises
  something else: a middleware cannot turn a failure into a success;
* the outcome handed to :meth:`Middleware.outcome` is frozen: it reports, it cannot steer.

Hooks (override any; the defaults do nothing)::

    submit(ctx: SubmitContext)   -> context manager around producing one task record
                                    (on the submitting thread; add headers to ctx.headers)
    submitted(ctx, SubmitOutcome)-> called once Kafka confirmed the record, or the submit
                                    failed (on the submitting thread; keep it quick)
    attempt(ctx: AttemptContext) -> context manager around one handler attempt
                                    (on the executor thread that runs the handler; one that
                                    only observes returns ``NOTHING_TO_WRAP``: no guard is
                                    built for it)
    outcome(ctx, AttemptOutcome) -> called once the attempt's outcome is written: acknowledged
                                    by Kafka (at least once) or staged in the transaction
                                    (exactly once); on the worker's poll thread, keep it quick
    outcome_batch(Outcomes)      -> the outcomes written since the poll loop's last turn,
                                    in order, all at once (the default calls ``outcome`` for
                                    each): override it instead to count thousands a second
                                    (``Outcomes.successes()`` builds no outcome per success,
                                    ``successes_by_task()`` not even a context)
    wants_success_contexts() -> bool
                                 -> asked once per poll-loop turn; when every middleware that
                                    hears outcomes says False, the next turn's successes reach
                                    ``outcome_batch`` only as durations by task type
                                    (``Outcomes.successes_by_task()``): the worker keeps no
                                    context per success until Kafka has its outcome
    wants_submit() -> bool       -> asked once per submit call; False: no submit hook for
                                    its tasks (an idle middleware costs nothing per task)

Chains nest in list order: the first middleware is the outermost, so with
``[TracingMiddleware(), LogContext()]`` the log context sees the span tracing opened. Attempts
of different keys run at once on several executor threads: a middleware's own state must be
thread-safe. An outcome is heard at most once per attempt, and not at all when the partition
was given up before the outcome was written (another worker runs the task again and reports
it). The context it is heard with equals the attempt's (the same fields and the same
``carry_headers`` list) but need not be the same object: the worker keeps only its fields
until Kafka has the outcome. Bad input that never reaches a handler (undecodable records,
unknown task types, crash loops) has no attempt and so no hooks;
:class:`streamjobs.worker.loop.WorkerStats` counts it.

Example, a log context per attempt and a line per outcome::

    task_context: ContextVar[dict[str, object]] = ContextVar("task_context", default={})

    class TaskLog(Middleware):
        @contextmanager
        def attempt(self, ctx: AttemptContext) -> Iterator[None]:
            token = task_context.set({"task_id": ctx.task_id, "attempt": ctx.attempt})
            try:
                yield
            finally:
                task_context.reset(token)

        def outcome(self, ctx: AttemptContext, outcome: AttemptOutcome) -> None:
            log.info("%s %s: %s in %s (%s)", ctx.task, ctx.task_id, outcome.state,
                     outcome.duration, outcome.error_type or "ok")

    Worker(settings, registry, middleware=[TracingMiddleware(), TaskLog()])
    Producer(settings, middleware=[TracingMiddleware(), TaskLog()])

``middleware=None`` (the default) means ``[TracingMiddleware()]``; ``middleware=[]`` none at all
(then no trace context travels with tasks either).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from types import TracebackType
from typing import Any, Literal

from streamjobs.hookfacts import (
    SCHEDULE_HEADER,
    AttemptContext,
    AttemptOutcome,
    Headers,
    Heard,
    KeptContext,
    Outcomes,
    RecordHeaders,
    SubmitContext,
    SubmitOutcome,
    error_type,
)

__all__ = [
    "NOTHING_TO_WRAP",
    "SCHEDULE_HEADER",
    "AttemptContext",
    "AttemptOutcome",
    "Headers",
    "Heard",
    "KeptContext",
    "Middleware",
    "MiddlewareChain",
    "Outcomes",
    "RecordHeaders",
    "SubmitContext",
    "SubmitOutcome",
    "chain_of",
    "error_type",
]

_log = logging.getLogger(__name__)

_HOOKS = ("submit", "submitted", "attempt", "outcome", "outcome_batch")


class Middleware:
    """Base class: override the hooks you need; see the module docstring for the contract."""

    def submit(self, ctx: SubmitContext) -> AbstractContextManager[object]:
        """Wrap producing the task record of ``ctx``."""
        return _NOTHING

    def wants_submit(self) -> bool:
        """Asked once per ``submit`` / ``submit_many`` call: False skips this middleware's
        ``submit`` hook for the whole batch (tracing without an SDK or a current span), so an
        idle middleware costs nothing per task."""
        return True

    def submitted(self, ctx: SubmitContext, outcome: SubmitOutcome) -> None:
        """Observe whether the task record of ``ctx`` was confirmed."""

    def attempt(self, ctx: AttemptContext) -> AbstractContextManager[object]:
        """Wrap one handler attempt; the handler's exception passes through (it is re-raised
        whatever this context manager does with it)."""
        return _NOTHING

    def outcome(self, ctx: AttemptContext, outcome: AttemptOutcome) -> None:
        """Observe the attempt's outcome once it is written."""

    def wants_success_contexts(self) -> bool:
        """Asked once per poll-loop turn, on the poll thread: False when this middleware reads
        successes only through :meth:`Outcomes.successes_by_task` (a counter), so that, when no
        middleware wants them, the worker keeps no context per success until Kafka has its
        outcome. The default, True, suits any middleware that reads each outcome."""
        return True

    def outcome_batch(self, heard: Sequence[Heard]) -> None:
        """Observe the outcomes written since the poll loop's last turn, in order (the chain
        passes an :class:`Outcomes`). The default calls :meth:`outcome` for each (one that
        raises is logged, the rest are still told); a middleware that overrides this one
        handles its own errors."""
        for ctx, outcome in heard:
            try:
                self.outcome(ctx, outcome)
            except Exception:
                _log.warning("middleware %s failed in outcome; ignored", _name(self), exc_info=True)


_NOTHING: AbstractContextManager[None] = nullcontext()  # reusable: nullcontext keeps no state
#: What a ``submit`` or ``attempt`` hook with nothing to wrap this time returns (the base class
#: hooks' own): the chain then enters nothing for it.
NOTHING_TO_WRAP = _NOTHING


class MiddlewareChain:
    """Middleware in nesting order (first = outermost), run so that none can change an outcome.

    Only middleware that override a hook are called for it, so a chain of none costs a
    shared no-op context manager per call.
    """

    def __init__(self, middleware: Iterable[Middleware] = ()) -> None:
        self.middleware: tuple[Middleware, ...] = tuple(middleware)
        for item in self.middleware:
            if not isinstance(item, Middleware):
                raise TypeError(f"middleware must subclass Middleware, got {item!r}")
        self._by_hook = {
            hook: tuple(m for m in self.middleware if _overrides(m, hook)) for hook in _HOOKS
        }
        self._by_hook["outcome_batch"] = tuple(
            m for m in self.middleware if _overrides(m, "outcome") or _overrides(m, "outcome_batch")
        )
        # the hooks that wrap, bound once: this is on every submit's and attempt's path
        self._submit_hooks = _hooks(self._by_hook["submit"], "submit")
        self._attempt_hooks = _hooks(self._by_hook["attempt"], "attempt")

    def submit(self, ctx: SubmitContext) -> AbstractContextManager[None]:
        """Every middleware's ``submit`` hook around the block, nested in chain order."""
        return _wrap(self._submit_hooks, "submit", ctx)

    def for_submit(self) -> MiddlewareChain | None:
        """The chain that wraps the records of one submit batch: the middleware that want it
        now (:meth:`Middleware.wants_submit`), or None when none does."""
        wanting = [m for m in self._by_hook["submit"] if _wants_submit(m)]
        if not wanting:
            return None
        return self if len(wanting) == len(self._by_hook["submit"]) else MiddlewareChain(wanting)

    def attempt(self, ctx: AttemptContext) -> AbstractContextManager[None]:
        """Every middleware's ``attempt`` hook around the block, nested in chain order."""
        return _wrap(self._attempt_hooks, "attempt", ctx)

    @property
    def observes_submits(self) -> bool:
        return bool(self._by_hook["submitted"])

    def submitted(self, ctx: SubmitContext, outcome: SubmitOutcome) -> None:
        """Tell every middleware; one that raises is logged and the others still hear it."""
        for middleware in self._by_hook["submitted"]:
            try:
                middleware.submitted(ctx, outcome)
            except Exception:
                _log.warning(
                    "middleware %s failed in submitted; ignored", _name(middleware), exc_info=True
                )

    @property
    def observes_outcomes(self) -> bool:
        return bool(self._by_hook["outcome_batch"])

    def wants_success_contexts(self) -> bool:
        """Whether any middleware that hears outcomes wants each success with its context
        (:meth:`Middleware.wants_success_contexts`; one that raises is taken to want them)."""
        for middleware in self._by_hook["outcome_batch"]:
            try:
                if middleware.wants_success_contexts():
                    return True
            except Exception:
                _log.warning(
                    "middleware %s failed in wants_success_contexts; taken as True",
                    _name(middleware),
                    exc_info=True,
                )
                return True
        return False

    def outcome(self, ctx: AttemptContext, outcome: AttemptOutcome) -> None:
        """Tell every middleware of one outcome (:meth:`outcome_batch` of one)."""
        self.outcome_batch(Outcomes([ctx], [outcome]))

    def outcome_batch(self, heard: Sequence[Heard]) -> None:
        """Tell every middleware of these outcomes (as one :class:`Outcomes`), in order; one
        that raises is logged and the others still hear them."""
        heard = Outcomes.of(heard)
        for middleware in self._by_hook["outcome_batch"]:
            try:
                middleware.outcome_batch(heard)
            except Exception:
                _log.warning(
                    "middleware %s failed in outcome; ignored", _name(middleware), exc_info=True
                )


def chain_of(
    middleware: Sequence[Middleware] | None, default: Callable[[], Middleware]
) -> MiddlewareChain:
    """The chain a Producer or Worker runs: ``middleware`` as given, or ``[default()]``."""
    return MiddlewareChain([default()] if middleware is None else middleware)


_Hook = Callable[[Any], AbstractContextManager[object]]
_Hooks = tuple[tuple[Middleware, _Hook], ...]


def _hooks(middleware: tuple[Middleware, ...], hook: str) -> _Hooks:
    """Each middleware with its bound ``hook``, looked up once per chain."""
    return tuple((m, getattr(m, hook)) for m in middleware)


def _wrap(
    hooks: _Hooks, hook: str, ctx: SubmitContext | AttemptContext
) -> AbstractContextManager[None]:
    # each hook is called just before it is entered (an inner one may read what an outer one
    # set up: the current span, say); hooks with nothing to wrap this time (tracing without an
    # SDK or a trace to continue, a hook that only counts) set nothing up, so they are called
    # now, and when none wraps anything there is no guard to build: the usual case
    for first, (middleware, call) in enumerate(hooks):
        try:
            manager = call(ctx)
        except Exception:
            _log.warning(
                "middleware %s failed entering %s; skipped", _name(middleware), hook, exc_info=True
            )
            continue
        if manager is not _NOTHING:
            return _Nested(hooks, hook, ctx, first, manager)
    return _NOTHING


class _Nested:
    """Enters each middleware's context manager in order and leaves them in reverse.

    A middleware that fails to enter is skipped (logged); one that fails to leave is logged;
    the block's own exception is re-raised in every case (``__exit__`` returns False). A hook
    returning the base class's no-op (nothing to wrap this time) costs nothing more.
    """

    __slots__ = ("_ctx", "_first", "_hook", "_hooks", "_open", "_start")

    def __init__(
        self,
        hooks: _Hooks,
        hook: str,
        ctx: SubmitContext | AttemptContext,
        start: int,
        first: AbstractContextManager[object],
    ) -> None:
        """``first`` is the manager ``hooks[start]`` returned; the hooks before it had nothing
        to wrap, the ones after it are called as they are entered."""
        self._hooks = hooks
        self._hook = hook
        self._ctx = ctx
        self._start = start
        self._first: AbstractContextManager[object] | None = first
        # the entered managers, each after the index of its middleware (no tuple per entry)
        self._open: list[Any] = []

    def __enter__(self) -> None:
        ctx, opened, hooks = self._ctx, self._open, self._hooks
        for index in range(self._start, len(hooks)):
            middleware, call = hooks[index]
            try:
                manager = self._first if self._first is not None else call(ctx)
                self._first = None
                if manager is _NOTHING:
                    continue
                manager.__enter__()
            except Exception:
                _log.warning(
                    "middleware %s failed entering %s; skipped",
                    _name(middleware),
                    self._hook,
                    exc_info=True,
                )
                continue
            opened.append(index)
            opened.append(manager)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        opened = self._open
        while opened:
            manager = opened.pop()
            index = opened.pop()
            try:
                manager.__exit__(exc_type, exc, tb)  # a True ("swallowed") is ignored
            except BaseException as raised:
                if raised is exc:
                    continue  # it re-raised the block's own exception: that is passing it on
                if not isinstance(raised, Exception):
                    raise  # KeyboardInterrupt, SystemExit: not ours to hide
                _log.warning(
                    "middleware %s failed leaving %s; ignored",
                    _name(self._hooks[index][0]),
                    self._hook,
                    exc_info=True,
                )
        return False


def _wants_submit(middleware: Middleware) -> bool:
    try:
        return middleware.wants_submit()
    except Exception:
        _log.warning("middleware %s failed in wants_submit; used", _name(middleware), exc_info=True)
        return True


def _overrides(middleware: Middleware, hook: str) -> bool:
    return getattr(type(middleware), hook) is not getattr(Middleware, hook)


def _name(middleware: Middleware) -> str:
    return type(middleware).__qualname__
