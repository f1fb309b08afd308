"""Test helpers shared by every test module: deadline-based waiting.

Tests never ``sleep`` to synchronise with Kafka; they poll an observable fact until a deadline.
Importable as ``from tests.support import wait_for`` and also offered as the ``wait_for`` fixture.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.05,
    message: str = "condition",
) -> T:
    """Call ``predicate`` until it returns something truthy, and return that value.

    Raises ``AssertionError`` naming ``message`` and the last value seen when ``timeout`` seconds
    pass first. The predicate is always called at least once, and once more at the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        last_check = time.monotonic() >= deadline
        value = predicate()
        if value:
            return value
        if last_check:
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for {message} (last value: {value!r:.200})"
            )
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def holds_for(
    predicate: Callable[[], object], seconds: float, interval: float = 0.05, message: str = ""
) -> None:
    """Assert ``predicate`` stays truthy for ``seconds``, sampled every ``interval``: how a test
    observes an absence (a commit that must not move, a fire that must not come), which only
    a window can show. The failure names ``message`` and the value seen."""
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        assert value, f"{message} (value: {value!r:.200})"
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(interval, left))
