"""Handlers that misbehave on purpose, one ``kind`` per misbehaviour, for the tests of
``test_handler_misbehaviour.py``; also run by ``streamjobs consume`` subprocesses as
``tests.integration.misbehaving:registry``.

``kind="ok"`` is the well-behaved task a test submits after a misbehaving one, to show the worker
still runs the next task. Handlers that block wait on ``RELEASE`` (set by the tests' teardown),
so nothing they start outlives the test in the test process.
"""

from __future__ import annotations

import asyncio
import ctypes
import sys
import threading
from typing import Any

from streamjobs import Task, TaskRegistry

RELEASE = threading.Event()
#: how long ``hold_gil`` keeps the GIL (a C call through ctypes.PyDLL never releases it)
GIL_SECONDS = 1.5


class CustomBaseError(BaseException):
    """A handler's own BaseException subclass."""


class Misbehave(Task):
    kind: str
    n: int = 0


class AsyncMisbehave(Task):
    kind: str
    n: int = 0


registry = TaskRegistry()


def _spawn() -> str:
    threading.Thread(target=RELEASE.wait, name="left-by-handler", daemon=False).start()
    return "spawned"


def _print_megabytes() -> str:
    sys.stdout.write("x" * 5_000_000 + "\n")
    sys.stdout.flush()
    return "printed"


def _close_stdio() -> str:
    sys.stdout.close()
    sys.stderr.close()
    return "closed"


def _hold_gil() -> str:
    ctypes.PyDLL(None).usleep(int(GIL_SECONDS * 1_000_000))
    return "held"


def _mutate(task: Misbehave) -> str:
    task.kind = "changed"  # type: ignore[misc]  # tasks are frozen: this raises
    return "mutated"


def _cyclic() -> Any:
    loop: list[Any] = []
    loop.append(loop)
    return loop


def _raise(error: BaseException) -> Any:
    raise error


_SYNC: dict[str, Any] = {
    "ok": lambda task: task.n,
    "keyboard_interrupt": lambda task: _raise(KeyboardInterrupt("from the handler")),
    "system_exit": lambda task: sys.exit(3),
    "generator_exit": lambda task: _raise(GeneratorExit("from the handler")),
    "custom_base": lambda task: _raise(CustomBaseError("custom")),
    "not_json": lambda task: object(),
    "cyclic": lambda task: _cyclic(),
    "too_large": lambda task: "x" * 1_100_000,
    "hang": lambda task: RELEASE.wait(),
    "spawn_thread": lambda task: _spawn(),
    "print_megabytes": lambda task: _print_megabytes(),
    "close_stdio": lambda task: _close_stdio(),
    "hold_gil": lambda task: _hold_gil(),
    "mutate": _mutate,
}


@registry.handler(Misbehave)
def misbehave(task: Misbehave) -> Any:
    return _SYNC[task.kind](task)


@registry.handler(AsyncMisbehave)
async def async_misbehave(task: AsyncMisbehave) -> Any:
    if task.kind == "ok":
        return task.n
    if task.kind == "keyboard_interrupt":
        raise KeyboardInterrupt("from the async handler")
    if task.kind == "system_exit":
        sys.exit(4)
    if task.kind == "cancelled":
        raise asyncio.CancelledError("raised by the handler")
    if task.kind == "stop_loop":  # kills the worker's event loop thread
        asyncio.get_running_loop().stop()
        await asyncio.sleep(3600)
    raise ValueError(f"unknown kind {task.kind}")
