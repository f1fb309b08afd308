"""The producers: confluent-kafka's ``Producer`` behind our methods, types and errors.

Owns :class:`KafkaProducer` (produce with a delivery report in our types, a full local queue
reported instead of raised, poll and flush), :class:`KafkaTransactionalProducer` (begin, send
offsets and commit with librdkafka's resume contract, abort, and renewal that fences a broken
instance) and :func:`produce_confirmed`. Raises only :mod:`streamjobs.errors`. Does not choose
what to write (the producer, the worker) nor its configuration (:mod:`streamjobs.client.config`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaException, Message, Producer
from confluent_kafka import TopicPartition as KafkaTopicPartition

from streamjobs.client.config import Config
from streamjobs.client.failures import describe, is_fatal, is_retriable, unavailable
from streamjobs.client.logs import callbacks
from streamjobs.client.protocols import OnDelivery, ProduceHeaders
from streamjobs.client.reach import Reach, contacted
from streamjobs.client.records import Delivery, GroupMetadata, TopicPartition
from streamjobs.errors import KafkaUnavailable

_RESUMES = 3  # tries of a transactional call that keeps timing out
_INIT_TIMEOUT_S = 30.0
_MIN_CALL_S = 0.1  # a resumed call gets at least this long to learn an outcome already known
#: how long past its own timeout a transactional call is waited for before it is given up
_UNRETURNED_MARGIN_S = 5.0


class KafkaProducer:
    """One librdkafka producer. ``produce`` is thread-safe; delivery reports run in the thread
    that calls :meth:`poll` or :meth:`flush`.

    Until the producer has had an answer from the cluster, :meth:`poll` gives up on the records
    waiting for one once the connect timeout has passed since the first was queued: it purges
    them (never sent: they fail with ``_PURGE_QUEUE``) and raises the one-line
    KafkaUnavailable naming the address and the cause.
    """

    def __init__(self, config: Config, reach: Reach | None = None) -> None:
        self._reach = reach or Reach.of(config)
        self._producer = self._new(config)
        self._reached = False
        self._waiting_since: float | None = None  # first record queued while not reached

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        *,
        headers: ProduceHeaders | None = None,
        on_delivery: OnDelivery | None = None,
    ) -> bool:
        """Queue one record (``value`` None is a tombstone). False when the local queue is full
        (serve delivery reports, then try again); KafkaUnavailable when librdkafka refuses the
        record outright (too large, unknown topic, ...)."""
        try:
            if on_delivery is None:
                self._producer.produce(topic, value, key, headers=_headers(headers))
            else:
                self._producer.produce(
                    topic, value, key, headers=_headers(headers), on_delivery=_report(on_delivery)
                )
        except BufferError:
            return False
        except KafkaException as exc:
            raise unavailable(exc, "record refused") from exc
        if not self._reached and self._waiting_since is None:
            self._waiting_since = time.monotonic()
            self._reach.hold()
        return True

    def poll(self, timeout: float) -> int:
        """Serve delivery reports for up to ``timeout`` seconds; returns how many were served.
        Raises KafkaUnavailable when the cluster was never reached (see the class)."""
        served = int(self._producer.poll(timeout))
        if self._waiting_since is not None:
            self._give_up_unreached()
        return served

    def _new(self, config: Config) -> Producer:
        return Producer({**callbacks("producer", self._reach), **config})

    def _give_up_unreached(self) -> None:
        assert self._waiting_since is not None
        if time.monotonic() - self._waiting_since < self._reach.connect_timeout:
            return
        if contacted(self._producer):
            self._reached, self._waiting_since = True, None
            return
        # queued only: nothing was sent without an answer from the cluster; should the answer
        # come between the check above and the purge, records may be on their way: the purged
        # ones then fail on their own (their reports), and no error claims the others failed
        self._producer.purge(in_queue=True, in_flight=False, blocking=True)
        if contacted(self._producer):
            self._reached, self._waiting_since = True, None
            return
        self._waiting_since = None  # the next record waits a connect timeout again
        raise self._reach.unreachable(lambda: self._producer.poll(0))

    def flush(self, timeout: float) -> int:
        """Wait up to ``timeout`` for every queued record's report; returns how many remain."""
        return int(self._producer.flush(timeout))


class KafkaTransactionalProducer(KafkaProducer):
    """A producer with a ``transactional.id``: records and consumed offsets commit together.

    Every call raises KafkaUnavailable on failure; :meth:`abort` then says whether the producer
    can still abort, else :meth:`renew` replaces it (a new instance with the same id fences the
    old one's transaction). librdkafka's calls are resumable: one that timed out (its outcome
    unknown, e.g. while the transaction coordinator moves to another broker) is learnt by
    making the same call again, so :meth:`send_offsets` and :meth:`commit` repeat a retriable
    failure a few times, and an initialisation that timed out is completed by the next
    :meth:`begin` before anything else.
    """

    def __init__(self, config: Config, reach: Reach | None = None) -> None:
        self._config = config
        self._fatal = False
        self._ready = False  # init_transactions has succeeded on the current instance
        super().__init__(config, reach)
        self._init()

    def begin(self) -> None:
        if not self._ready:  # a renewal whose initialisation timed out: resume it first
            self._init()
        self._call(self._producer.begin_transaction)

    def send_offsets(
        self, offsets: Sequence[TopicPartition], group: GroupMetadata, timeout: float = 30.0
    ) -> None:
        """Add the consumed ``offsets`` to the open transaction (committed with it), within
        ``timeout`` seconds in all."""
        wanted = [KafkaTopicPartition(p.topic, p.partition, p.offset) for p in offsets]
        send = self._producer.send_offsets_to_transaction
        self._repeating(lambda left: send(wanted, group.handle, left), timeout)

    def commit(self, timeout: float = 30.0) -> None:
        """Commit within ``timeout`` seconds in all; a retriable error leaves the outcome
        unknown, and the same call is the way to learn it (librdkafka's contract), so it is
        repeated (a few times, in what is left of ``timeout``) before giving up."""
        self._repeating(self._producer.commit_transaction, timeout)

    def abort(self, timeout: float = 30.0) -> bool:
        """Abort the open transaction; False when the producer cannot (a fatal error, such as
        being fenced, or another call still in progress whose outcome is unknown): then only
        :meth:`renew` helps."""
        if self._fatal or not self._ready:
            return False
        try:
            self._producer.abort_transaction(timeout)
        except KafkaException:
            return False
        return True

    def renew(self) -> None:
        """Replace the librdkafka producer by a new one with the same transactional id; its
        initialisation fences the old one's transaction. KafkaUnavailable when that did not
        finish in time: the next :meth:`begin` resumes it."""
        self._producer = self._new(self._config)
        self._fatal = False
        self._ready = False
        self._init()

    def _init(self) -> None:
        self._call(self._producer.init_transactions, _INIT_TIMEOUT_S)
        self._ready = True

    def _repeating(self, call: Callable[[float], Any], timeout: float) -> None:
        """:func:`resumed`, each try watched by :func:`bounded`: librdkafka's
        ``send_offsets_to_transaction`` can block far past its timeout when the group
        coordinator's broker is gone (confluentinc/librdkafka#5456, #5511). A try that does not
        return is left to its thread and this instance is given up: :meth:`abort` refuses, so
        the caller renews the producer, whose initialisation fences the stuck transaction."""
        try:
            resumed(lambda left: bounded(lambda: call(left), left + _UNRETURNED_MARGIN_S), timeout)
        except KafkaException as exc:
            self._fatal = self._fatal or is_fatal(exc)
            raise unavailable(exc, "transaction failed") from exc
        except Unreturned as exc:
            self._fatal = True  # this instance is busy for good: only a renewal helps
            raise KafkaUnavailable(
                f"transaction failed: {exc} (a known librdkafka hang, confluentinc/librdkafka#5456)"
            ) from exc

    def _call(self, method: Callable[..., Any], *args: Any) -> None:
        try:
            method(*args)
        except KafkaException as exc:
            self._fatal = self._fatal or is_fatal(exc)
            raise unavailable(exc, "transaction failed") from exc


class Unreturned(Exception):
    """A librdkafka call did not return in time; it is left running on its thread."""


def bounded(call: Callable[[], Any], timeout: float) -> None:
    """``call()`` on a thread of its own, waited for at most ``timeout`` seconds: re-raises what
    it raised, or raises :class:`Unreturned` (the call goes on, its thread a daemon)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # handed to the waiting thread
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, name="streamjobs-txn-call", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        raise Unreturned(f"a transactional call did not return within {timeout:g}s")
    if outcome[0] is not None:
        raise outcome[0]


def resumed(
    call: Callable[[float], Any], timeout: float, clock: Callable[[], float] = time.monotonic
) -> None:
    """``call(seconds left)`` again after each retriable failure (librdkafka's resume
    contract), at most ``_RESUMES`` times and within ``timeout`` seconds for all of them; raises
    the last KafkaException."""
    deadline = clock() + timeout
    for attempt in range(_RESUMES):
        try:
            call(max(deadline - clock(), _MIN_CALL_S))
            return
        except KafkaException as exc:
            if not is_retriable(exc) or attempt == _RESUMES - 1 or clock() >= deadline:
                raise


def produce_confirmed(
    producer: KafkaProducer,
    topic: str,
    records: Sequence[tuple[bytes, bytes | None]],
    timeout: float = 30.0,
) -> None:
    """Produce ``(key, value)`` records (None is a tombstone) and wait for every acknowledgement.

    Raises KafkaUnavailable naming the first failure, or when acknowledgements do not arrive in
    ``timeout`` seconds: the caller must not act as if the records were durable.
    """
    errors: list[str] = []

    def on_delivery(report: Delivery) -> None:
        if report.error is not None:
            errors.append(report.error)

    for key, value in records:
        while not producer.produce(topic, value, key, on_delivery=on_delivery):
            producer.poll(0.05)  # local queue full: serve acknowledgements, then try again
    remaining = producer.flush(timeout)
    if errors:
        raise KafkaUnavailable(f"write to {topic} failed: {errors[0]}")
    if remaining:
        raise KafkaUnavailable(f"{remaining} records to {topic} not acknowledged in {timeout}s")


def _headers(headers: ProduceHeaders | None) -> list[tuple[str, str | bytes | None]] | None:
    if not headers:
        return None
    return headers if type(headers) is list else list(headers)


def _report(on_delivery: OnDelivery) -> Callable[[Any, Message], None]:
    def report(error: Any, message: Message) -> None:
        if error is None:  # ints on a delivered record
            on_delivery(Delivery(None, message.partition() or 0, message.offset() or 0))
        else:
            on_delivery(Delivery(describe(error)))

    return report
