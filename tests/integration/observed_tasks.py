"""Task types whose outcomes the observability tests count: one of each outcome.

``Greet`` succeeds and logs from inside its handler; ``Flaky`` fails its first attempt and then
succeeds; ``Broken`` always raises (retried, then dead-lettered for ``max_attempts``); ``Refused``
discards itself (dead-lettered at once with its reason).
"""

from __future__ import annotations

import logging
import threading

from streamjobs import Discard, Task, TaskRegistry

HANDLER_LOGGER = "tests.observed.handler"
_log = logging.getLogger(HANDLER_LOGGER)
_seen: set[str] = set()
_lock = threading.Lock()


class Greet(Task):
    name: str


class Flaky(Task):
    token: str


class Broken(Task):
    n: int = 0


class Refused(Task):
    why: str


registry = TaskRegistry()


@registry.handler(Greet)
def greet(task: Greet) -> str:
    _log.info("greeting %s", task.name)
    return f"hello {task.name}"


@registry.handler(Flaky)
def flaky(task: Flaky) -> str:
    with _lock:
        first = task.token not in _seen
        _seen.add(task.token)
    if first:
        raise ConnectionError("first attempt always fails")
    return "second time lucky"


@registry.handler(Broken)
def broken(task: Broken) -> None:
    raise ValueError(f"broken {task.n}")


@registry.handler(Refused)
def refused(task: Refused) -> None:
    raise Discard(task.why)
