"""Running one handler call: payload decoding, sync or async, with a deadline, result to JSON.

Owns turning an envelope into the handler's call (resolving the payload's writer schema when
it was written by an older model), the per-task timeout (a sync handler blocked in C cannot be
interrupted in CPython, so at the deadline the attempt fails with HandlerTimeout and the call is
abandoned; an async handler is cancelled), and encoding the result. Whatever a handler raises,
down to ``KeyboardInterrupt`` and ``SystemExit``, reaches the caller's thread as it was: an async
handler's never escapes into the event loop (asyncio re-raises those two out of
``run_forever``, which would end the loop thread). Each call runs with its task current
(``streamjobs.current_task()``) and registered in the worker's
:class:`~streamjobs.worker.cancels.CancelBook`: a task cancelled before the call never starts,
an async handler cancelled while running has its asyncio task cancelled, and whatever a call
of a cancelled task raises reaches the caller as ``Cancelled``. Does not decide what a failure means
(:mod:`streamjobs.retry`) or write anything to Kafka.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import threading
from datetime import timedelta
from typing import Any

from streamjobs.envelope import Envelope
from streamjobs.errors import BadResult, Cancelled, HandlerTimeout, error_text
from streamjobs.registry import Handler
from streamjobs.schemastore import SchemaStore
from streamjobs.settings import Settings
from streamjobs.taskcontext import reset_current, running_task, set_current
from streamjobs.worker.cancels import CancelBook


class HandlerRunner:
    """Calls handlers for a worker; owns the event loop and the pool for timed sync calls."""

    def __init__(
        self,
        settings: Settings,
        schemas: SchemaStore,
        *,
        needs_loop: bool,
        cancels: CancelBook | None = None,
    ) -> None:
        self._settings = settings
        self._schemas = schemas
        self.cancels = cancels if cancels is not None else CancelBook(settings)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        if needs_loop:
            self._loop = asyncio.new_event_loop()
            self._loop_thread = threading.Thread(
                target=self._loop.run_forever, name="streamjobs-asyncio", daemon=True
            )
            self._loop_thread.start()

    def dead_threads(self) -> list[str]:
        """Names of this runner's long-lived threads that have died (the event loop's)."""
        thread = self._loop_thread
        return [] if thread is None or thread.is_alive() else [thread.name]

    def close(self) -> None:
        if self._loop is not None and self._loop_thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join(5.0)
            if not self._loop.is_running():
                self._loop.close()  # an unclosed loop warns (ResourceWarning) when collected

    def call(self, handler: Handler, envelope: Envelope, written_at_ms: int) -> str | None:
        """Decode the payload, run the handler, return its result as JSON (None for None)."""
        fingerprint = envelope.payload_schema
        writer = None
        if fingerprint != handler.task_type.fingerprint:
            writer = self._schemas.writer(fingerprint, written_at_ms)
        task = handler.load(envelope.payload, writer)
        timeout = handler.timeout or self._settings.task_timeout
        current = self.cancels.begin(envelope)  # Cancelled: the handler never starts
        token = set_current(current)
        try:
            if handler.is_async:
                result = self._call_async(handler, task, timeout)
            elif timeout is not None:
                result = self._call_with_timeout(handler, task, timeout)
            else:
                result = handler.func(task)
        except BaseException as exc:
            if current.cancelled and not isinstance(exc, Cancelled):
                raise Cancelled(f"cancelled while running ({type(exc).__name__})") from exc
            raise
        finally:
            reset_current(token)
            self.cancels.end(current)
        return result_json(result)

    def _call_async(self, handler: Handler, task: Any, timeout: timedelta | None) -> Any:
        assert self._loop is not None, "registry changed after the worker started"
        seconds = timeout.total_seconds() if timeout else None
        future = asyncio.run_coroutine_threadsafe(
            _guarded(handler.func(task), seconds, handler.name), self._loop
        )
        # no timeout here: if the loop thread dies the worker's watchdog stops the worker, and
        # this abandoned attempt is never settled (its offset is not committed: it runs again)
        result, error = future.result()
        if error is not None:
            raise error
        return result

    def _call_with_timeout(self, handler: Handler, task: Any, timeout: timedelta) -> Any:
        """One daemon thread per timed call: an abandoned (hung) call keeps only its own
        thread, never a slot other tasks need, and does not block interpreter exit."""
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["result"] = handler.func(task)
            except BaseException as exc:  # re-raised in the caller's thread, as it was
                outcome["error"] = exc

        context = contextvars.copy_context()  # the process span stays current in the handler
        thread = threading.Thread(
            target=context.run, args=(run,), name=f"streamjobs-timed-{handler.name}", daemon=True
        )
        thread.start()
        thread.join(timeout.total_seconds())
        if thread.is_alive():
            raise HandlerTimeout(
                f"{handler.name} exceeded its timeout of {timeout.total_seconds():g}s"
            )
        if "error" in outcome:
            raise outcome["error"]
        return outcome.get("result")


async def _guarded(coro: Any, seconds: float | None, name: str) -> tuple[Any, BaseException | None]:
    """The handler's (result, None) or (None, what it raised), any ``BaseException`` included:
    asyncio re-raises a task's KeyboardInterrupt or SystemExit out of the loop, ending it.
    A cancel of the running task cancels this asyncio task."""
    _interruptible()
    try:
        return await _with_deadline(coro, seconds, name), None
    except BaseException as exc:
        current = asyncio.current_task()
        if isinstance(exc, asyncio.CancelledError) and current and current.cancelling():
            raise  # the task itself is being cancelled (not the handler raising it): let it go
        return None, exc


def _interruptible() -> None:
    """Let a cancel of the current streamjobs task cancel the running asyncio task: it ends
    (its ``finally`` blocks run) before the attempt's outcome is decided."""
    current, me = running_task(), asyncio.current_task()
    if current is not None and me is not None:
        loop = asyncio.get_running_loop()

        def interrupt() -> None:
            loop.call_soon_threadsafe(me.cancel)

        current.on_cancel(interrupt)


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


def result_json(result: Any) -> str | None:
    """A handler's return value as JSON text; a value JSON cannot hold is ``bad_result``.

    Any failure to encode counts (a cycle, a nesting deeper than the recursion limit, a model
    whose serializer raises): no retry of the same handler would change it.
    """
    if result is None:
        return None
    try:
        if hasattr(type(result), "model_dump_json"):  # a pydantic model
            return str(result.model_dump_json())
        return json.dumps(result)
    except Exception as exc:
        raise BadResult(
            f"handler result ({type(result).__name__}) is not JSON: {error_text(exc, 500)}"
        ) from exc
