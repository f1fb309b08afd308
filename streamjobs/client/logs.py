"""librdkafka's own log and error reports, through Python ``logging``.

Owns the logger of each client kind (``streamjobs.kafka.consumer``, ``.producer``, ``.admin``),
the mapping between librdkafka's syslog levels and Python's, :class:`Repeats` (a warning that
repeats is logged once, then summarised at most every ``every`` seconds), and :class:`LogSink`:
the ``logger`` and ``error_cb`` handed to confluent-kafka. librdkafka queues both; they reach
Python in the thread that polls the client, never raw on stderr. Connection failures also go to
the client's :class:`~streamjobs.client.reach.Reach` (the cause of its one-line error), and are
held back while the caller is the one to report them. Does not decide what a failure means for
a request (:mod:`streamjobs.client.reach`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from confluent_kafka import KafkaError

from streamjobs.client.failures import connection_cause, describe, failure_text
from streamjobs.client.reach import Reach

Kind = Literal["consumer", "producer", "admin"]

#: librdkafka's syslog levels as Python levels (confluent-kafka hands log lines over already
#: mapped this way: 0-2 CRITICAL, 3 ERROR, 4 WARNING, 5-6 INFO, 7 DEBUG)
SYSLOG_TO_PYTHON = {
    0: logging.CRITICAL,
    1: logging.CRITICAL,
    2: logging.CRITICAL,
    3: logging.ERROR,
    4: logging.WARNING,
    5: logging.INFO,
    6: logging.INFO,
    7: logging.DEBUG,
}
#: facilities of a failed connection: retried by librdkafka, so a warning, not an error
_CONNECTION_FACILITIES = frozenset({"FAIL"})
_OTHER_KIND = "will be ignored by this"
SUMMARY_EVERY_S = 30.0


def logger_for(kind: Kind) -> logging.Logger:
    return logging.getLogger(f"streamjobs.kafka.{kind}")


def syslog_threshold(level: int) -> int:
    """librdkafka's ``log_level`` for a Python logger at ``level``: the highest syslog level
    whose lines the logger would let through (0 when it lets nothing through)."""
    passing = [s for s, p in SYSLOG_TO_PYTHON.items() if p >= level]
    return max(passing, default=0)


def python_level(facility: str, level: int, text: str = "") -> int:
    """The level a librdkafka line is logged at: connection failures (retried) are warnings;
    a passthrough key of another client kind is expected (one passthrough serves every
    client), so its "ignored by this producer instance" is debug; the rest keep their level."""
    if facility in _CONNECTION_FACILITIES and level > logging.WARNING:
        return logging.WARNING
    if facility == "CONFWARN" and _OTHER_KIND in text:
        return logging.DEBUG
    return level


class Repeats:
    """Summarises repeats: the first occurrence of a key passes, later ones are counted and
    let through at most once every ``every`` seconds, with the count of those held back.
    Thread-safe (a producer is polled by every thread that submits)."""

    def __init__(self, every: float) -> None:
        self.every = every
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def admit(self, key: str, now: float) -> int | None:
        """None: hold this occurrence back; else how many were held back since the last one
        let through (0 for the first)."""
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.every:
                self._held[key] = self._held.get(key, 0) + 1
                return None
            self._last[key] = now
            return self._held.pop(key, 0)


class LogSink:
    """What confluent-kafka calls with librdkafka's log lines (``log``) and error reports
    (``on_error``, its ``error_cb``), for one client."""

    def __init__(
        self,
        logger: logging.Logger,
        reach: Reach,
        *,
        every: float = SUMMARY_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.reach = reach
        self._repeats = Repeats(every)
        self._clock = clock

    def log(self, level: int, _format: str, *args: Any) -> None:
        """confluent-kafka's call: ``logger.log(level, "%s [%s] %s", facility, name, text)``."""
        facility, text = (str(args[0]), str(args[-1])) if len(args) >= 2 else ("", str(args))
        text = _without_thread(text)
        level = python_level(facility, level, text)
        if facility in _CONNECTION_FACILITIES and self.reach.holding():
            return  # the cause reaches the caller's error through on_error
        if level < logging.WARNING:
            self.logger.log(level, "%s: %s", facility, text)
            return
        self._summarised(level, f"{facility} {_subject(text)}", f"{facility}: {text}")

    def on_error(self, error: Any) -> None:
        cause = connection_cause(error)
        if cause is not None:
            self.reach.failed(cause)  # the FAIL log line of the same failure is the log's
            return
        fatal = isinstance(error, KafkaError) and bool(error.fatal())
        name = error.name() if isinstance(error, KafkaError) else type(error).__name__
        text = describe(error)
        self._summarised(logging.ERROR if fatal else logging.WARNING, f"error {name}", text)

    def _summarised(self, level: int, key: str, message: str) -> None:
        held = self._repeats.admit(key, self._clock())
        if held is None:
            return
        if held:
            self.logger.log(level, "%s (%d more like it since it was last logged)", message, held)
        else:
            self.logger.log(level, "%s", message)


def callbacks(kind: Kind, reach: Reach) -> dict[str, Any]:
    """The confluent-kafka configuration entries that route a client's log and error reports
    through :class:`LogSink`; ``log_level`` asks librdkafka only for the lines the logger
    would let through (a ``log_level`` in the passthrough, merged after, wins)."""
    sink = LogSink(logger_for(kind), reach)
    return {
        "logger": sink,
        "error_cb": sink.on_error,
        "log_level": syslog_threshold(sink.logger.getEffectiveLevel()),
    }


def _without_thread(text: str) -> str:
    """``[thrd:main]: rest`` → ``rest``."""
    if text.startswith("[thrd:"):
        return text.partition("]: ")[2] or text
    return text


def _subject(text: str) -> str:
    """What a line is about, for counting repeats: its broker (``h:9092/1``), else its text
    without librdkafka's varying state suffix."""
    head, sep, _ = text.partition(": ")
    if sep and "/" in head and " " not in head:
        return head
    return failure_text(text)
