"""Delivery reports: serving librdkafka's reports to every thread waiting for one of its records.

Owns :class:`Pending` (one record's report, or why it has none) and :class:`Deliveries`, the
rule by which many submitting threads share one producer: librdkafka hands out reports only to
a thread that polls, so one thread at a time polls (the *leader*, serving every thread's
reports) while the others sleep on their own record's event, woken the moment the leader's poll
delivers their report; when the leader's own records are confirmed it hands the polling to one
sleeping thread. Nobody waits on a timer or on another thread's flush, so the records of eight
threads travel in shared batches and each thread returns as soon as its own are acknowledged.
Also owns the resident poll thread an event loop needs (it must never block in a poll).

Does not decide what is produced, nor in what order (:mod:`streamjobs.confirmed`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from streamjobs import client
from streamjobs.errors import KafkaUnavailable, StreamJobsError

_log = logging.getLogger(__name__)

#: the leader's poll: returns at once when a report arrives, so this only bounds a quiet wait
_LEAD_POLL_S = 0.01
#: a sleeping thread looks again after this long even if nobody woke it (a safety net only)
_FOLLOW_S = 0.1
#: the resident poll thread's poll
_RESIDENT_POLL_S = 0.05


@dataclass(slots=True, eq=False)
class Pending:
    """One record waiting for its delivery report (``done`` once it has one, or was refused)."""

    error: str | None = None  # "NAME: description" of a failed delivery or refusal
    partition: int = -1
    offset: int = -1
    done: bool = False
    #: set by the report, for a thread sleeping until it arrives (created only by such a thread)
    wake: threading.Event | None = None
    #: called once the report is in, on the thread that served it (pipelined writes)
    then: Callable[[], None] | None = None

    def report(self, delivery: client.Delivery) -> None:
        """The ``on_delivery`` of its record."""
        self.error = delivery.error
        self.partition, self.offset = delivery.partition, delivery.offset
        self._finish()

    def refuse(self, error: str) -> None:
        """librdkafka refused the record before queueing it."""
        self.error = error
        self._finish()

    def _finish(self) -> None:
        self.done = True  # before reading ``wake``: a sleeper sets ``wake`` before reading this
        wake = self.wake
        if wake is not None:
            wake.set()
        if self.then is not None:
            self.then()


class Deliveries:
    """Serves one producer's delivery reports to the threads waiting for them."""

    def __init__(self, producer: Callable[[], client.Producer]) -> None:
        """``producer`` gives the client (raising once the Producer is closed)."""
        self._producer = producer
        self._polling = threading.Lock()  # held by the thread polling librdkafka
        self._sleepers_lock = threading.Lock()
        self._sleepers: set[Pending] = set()
        self._resident: threading.Thread | None = None
        self._stop = threading.Event()

    def wait(self, pendings: Iterable[Pending], deadline: float) -> None:
        """Return once every one of ``pendings`` has its report, or ``deadline`` (a monotonic
        time) has passed."""
        for pending in pendings:
            while not pending.done and time.monotonic() <= deadline:
                if self._polling.acquire(blocking=False):
                    try:
                        self._lead(pending, deadline)
                    finally:
                        self._polling.release()
                        self._hand_over()
                else:
                    self._sleep(pending, deadline)

    def serve_once(self, timeout: float) -> None:
        """Poll once (waiting for the polling thread if there is one): the local queue was
        full, and serving reports makes room."""
        with self._polling:
            self._producer().poll(timeout)
        self._hand_over()

    def _lead(self, pending: Pending, deadline: float) -> None:
        poll = self._producer().poll
        while not pending.done and time.monotonic() <= deadline:
            poll(_LEAD_POLL_S)  # serves every thread's reports, waking their owners

    def _hand_over(self) -> None:
        """Wake one sleeping thread whose record has no report yet: it polls next."""
        with self._sleepers_lock:
            for pending in self._sleepers:
                if not pending.done and pending.wake is not None:
                    pending.wake.set()
                    return

    def _sleep(self, pending: Pending, deadline: float) -> None:
        wake = pending.wake
        if wake is None:
            wake = pending.wake = threading.Event()
        with self._sleepers_lock:
            self._sleepers.add(pending)
        try:
            # registered first, then the check: a leader leaving after it wakes this thread
            if not pending.done and self._polling.locked():
                wake.wait(max(0.0, min(_FOLLOW_S, deadline - time.monotonic())))
            wake.clear()
        finally:
            with self._sleepers_lock:
                self._sleepers.discard(pending)

    # -- the resident poll thread (asyncio) --------------------------------------------------

    def start(self, after_poll: Callable[[], None]) -> None:
        """Serve reports on a thread of its own until :meth:`stop`, calling ``after_poll``
        after each poll (records the local queue had no room for are produced again there).
        Threads waiting in :meth:`wait` meanwhile sleep until it serves their reports."""
        if self._resident is not None:
            return
        self._stop.clear()
        self._resident = threading.Thread(
            target=self._serve, args=(after_poll,), name="streamjobs-deliveries", daemon=True
        )
        self._resident.start()

    def stop(self) -> None:
        resident, self._resident = self._resident, None
        if resident is not None:
            self._stop.set()
            resident.join()

    def _serve(self, after_poll: Callable[[], None]) -> None:
        while not self._stop.is_set():
            try:
                with self._polling:
                    self._producer().poll(_RESIDENT_POLL_S)
            except KafkaUnavailable as exc:  # never reached: the records' reports say so
                _log.warning("producer: %s", exc)
            except StreamJobsError:  # the producer is closed
                return
            except Exception:  # the thread must outlive any one failure: log it, poll on
                _log.exception("serving delivery reports failed")
            self._hand_over()
            after_poll()
