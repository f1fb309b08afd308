"""Rebalances and commits: the worker's side of partitions coming and going.

Owns what happens to the partitions a worker holds when the group changes them, and the commits
that record their progress:

- assigned: count the retries waiting on their tiers (``key_ordered``), read the crash ledger's
  suspect windows (quarantine) and mark them owned;
- revoked, and every partition at shutdown: start no queued task, let started ones settle
  within ``shutdown_grace``, commit, mark a clean handover, leave no pause behind;
- lost: another member may own them already, so commit nothing and drop staged outcomes;
- commits of each partition's highest contiguous completed offset (periodic, on revoke, at
  shutdown) and, after an aborted transaction, a rewind to the committed offsets (retried
  until they can be read; nothing is committed meanwhile);
- the done offsets beyond each commit, in its metadata (:mod:`streamjobs.worker.commit_metadata`):
  written with every at-least-once commit, read on assignment so that the new owner skips tasks
  the previous one already finished; every refused commit is logged at WARNING with its cause.

Runs on the poll thread: librdkafka calls the rebalance and commit callbacks from ``consume``.
Does not consume, route or run tasks (:mod:`streamjobs.worker.loop`,
:mod:`streamjobs.worker.routing`, :mod:`streamjobs.worker.intake`), decide when partitions pause
(:mod:`streamjobs.worker.partitions`) or write outcomes (:mod:`streamjobs.worker.outcomes`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from streamjobs import client
from streamjobs.errors import KafkaUnavailable, StreamJobsError, TransactionAborted
from streamjobs.settings import Settings
from streamjobs.worker import commit_metadata
from streamjobs.worker.keyorder import KeyOrder
from streamjobs.worker.outcomes import OutcomeWriter, TransactionalWriter
from streamjobs.worker.partitions import Assigned, Partition, TopicKey
from streamjobs.worker.quarantine import StartLedger

_log = logging.getLogger(__name__)


class Handover:
    """Takes partitions over from the group and hands them back, committing their progress."""

    def __init__(
        self,
        settings: Settings,
        parts: Assigned,
        writer: OutcomeWriter,
        ledger: StartLedger,
        order: KeyOrder | None,
        *,
        clients: client.Clients,
    ) -> None:
        self._settings = settings
        self._clients = clients  # the group's committed metadata, read outside the group
        self._parts = parts
        self._writer = writer
        self._ledger = ledger
        self._order = order
        self._last_commit = 0.0
        self._with_metadata = not writer.exactly_once  # until the broker refuses its size
        self._rewinding = False  # a transaction aborted: nothing commits until the rewind is done

    # -- rebalances ------------------------------------------------------------------------

    def assign(self, consumer: client.Consumer, partitions: list[client.TopicPartition]) -> None:
        keys = _keys(partitions)
        for key in keys:
            self._parts[key] = Partition(key)
        if keys and self._with_metadata:
            self._inherit(keys)
        if keys and self._order is not None:
            self._order.adopt_pending(consumer, keys)
        if keys:
            # quarantine is a safety net: without the ledger, tasks still run
            try:
                for key, window in self._ledger.suspects(consumer, partitions).items():
                    self._parts[key].suspect = window
            except StreamJobsError as exc:
                _log.warning("crash ledger unreadable, starts not counted: %s", exc)
            try:
                self._ledger.mark(keys, active=True)
            except StreamJobsError as exc:
                _log.warning("crash ledger unwritable, a crash here will not be noticed: %s", exc)

    def _inherit(self, keys: list[TopicKey]) -> None:
        """Read what the previous owners finished past their commits: those tasks are skipped.
        At least once only: a transactional worker's outcomes past its commit were never
        written (they wait in the stage for the commit that takes them).

        Asks from a consumer that never joins the group: the member's own ``committed()``
        inside this callback carries its member epoch, and under KIP-848 a newer epoch made it
        wait out its whole timeout during a rebalance storm, stalling the poll thread."""
        reader = self._clients.group_reader()
        try:
            found = reader.committed([client.TopicPartition(*k) for k in keys], timeout=10.0)
        except StreamJobsError as exc:
            _log.warning("committed offsets unreadable, finished tasks may run again: %s", exc)
            return
        finally:
            reader.close()
        for position in found:
            part = self._parts.get(position.key)
            if part is None or position.offset < 0 or not position.metadata:
                continue
            try:
                part.tracker.inherit(commit_metadata.decode(position.offset, position.metadata))
            except ValueError as exc:
                _log.warning("commit metadata of %s ignored: %s", position.key, exc)

    def revoke(self, consumer: client.Consumer, partitions: list[client.TopicPartition]) -> None:
        """Stop starting tasks for these partitions, let started ones finish, commit, release."""
        parts = [self._parts[k] for k in _keys(partitions) if k in self._parts]
        for part in parts:
            with part.lock:
                part.revoked = True
        self._settle(parts, self._settings.shutdown_grace.total_seconds())
        self.commit(consumer, parts, asynchronous=False)
        self._release(parts)
        self._parts.drop_pauses(consumer, parts)
        for part in parts:
            del self._parts[part.key]
        self._forget_order(parts)

    def lose(self, consumer: client.Consumer, partitions: list[client.TopicPartition]) -> None:
        """Another member may own these already: commit nothing, start nothing."""
        for key in _keys(partitions):
            part = self._parts.pop(key, None)
            if part is not None:
                with part.lock:
                    part.revoked = part.lost = True
                self._parts.drop_pauses(consumer, [part])
                self._forget_order([part])
        if isinstance(self._writer, TransactionalWriter):
            self._writer.drop(_keys(partitions))

    def hand_back(self, consumer: client.Consumer, *, grace: float | None = None) -> None:
        """At shutdown: like a revoke of every partition, but a task still running after the
        grace (``shutdown_grace`` unless given) is not a clean handover (the next owner counts
        its start)."""
        parts = list(self._parts.values())
        for part in parts:
            with part.lock:
                part.revoked = True  # queued tasks are not started; started ones finish
        self._settle(
            parts, self._settings.shutdown_grace.total_seconds() if grace is None else grace
        )
        self.commit(consumer, parts, asynchronous=False)
        if not any(p.running for p in parts):  # a task still running is not a clean handover
            self._release(parts)
        self._parts.clear()

    def _forget_order(self, parts: list[Partition]) -> None:
        if self._order is not None:
            self._order.forget(p.key for p in parts)

    def _release(self, parts: list[Partition]) -> None:
        """A clean handover: the next owner need not suspect a crash."""
        try:
            self._ledger.mark([p.key for p in parts], active=False)
        except KafkaUnavailable as exc:
            _log.warning("%s (the next owner will count task starts)", exc)

    def _settle(self, parts: list[Partition], grace_s: float) -> None:
        """Wait (bounded) for started tasks of ``parts`` and their outcome acknowledgements."""
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(p.running for p in parts):
            self._writer.serve(0.02)
        self._writer.serve(0)
        self._writer.flush(max(0.0, deadline - time.monotonic()))

    # -- commits ---------------------------------------------------------------------------

    def commit_due(self, consumer: client.Consumer) -> None:
        """Commit every partition's progress, asynchronously, once per ``commit_interval``
        (``commit_spacing``): a finished task waits at most that long to be committed."""
        if self._rewinding:
            self._rewind(consumer)  # the committed offsets were unreadable: try again
            return
        now = time.monotonic()
        if now - self._last_commit >= self._settings.commit_spacing.total_seconds():
            self._last_commit = now
            self.commit(consumer, list(self._parts.values()), asynchronous=True)

    def commit(
        self, consumer: client.Consumer, parts: list[Partition], *, asynchronous: bool
    ) -> None:
        if self._rewinding:
            return  # the progress to commit is being re-read (see _rewind)
        offsets = self._positions(parts)
        if not offsets:
            return
        try:
            refused = self._writer.commit(consumer, offsets, asynchronous=asynchronous)
        except TransactionAborted as exc:
            _log.warning("%s: re-reading uncommitted records", exc)
            self._rewind(consumer)
        except KafkaUnavailable as exc:
            _log.warning("commit failed (will retry): %s", exc)
            self._forget_commits(offsets)
        else:
            if refused:
                _log.warning("commit refused (will retry): %s", _describe(refused))
                self._forget_commits(refused)

    def _positions(self, parts: list[Partition]) -> list[client.TopicPartition]:
        """What to commit for ``parts``: at least once, the contiguous offset with the done runs
        beyond it; exactly once, the contiguous offset (outcomes past it are not written yet)."""
        offsets = []
        for part in parts:
            if self._writer.exactly_once:
                offset = part.tracker.commit_offset()
                if offset is not None:
                    offsets.append(client.TopicPartition(part.key[0], part.key[1], offset))
                    part.tracker.mark_committed(offset)
                    part.committed_at = time.time()
                continue
            pending = part.tracker.pending()
            if pending is not None:
                offset, runs = pending
                metadata = commit_metadata.encode(offset, runs) if self._with_metadata else ""
                offsets.append(client.TopicPartition(part.key[0], part.key[1], offset, metadata))
                part.tracker.mark_committed(offset)
                part.committed_at = time.time()
        return offsets

    def _rewind(self, consumer: client.Consumer) -> None:
        """After an aborted transaction: forget uncommitted progress and re-read from the
        committed offsets. Tasks already queued for the old state are never started, and
        ``key_ordered`` forgets what it counted and parked since the last commit.

        Until the committed offsets are read, nothing commits: the old partitions stay given
        up (their records are refused, their outcomes dropped) and ``commit_due`` tries again.
        The aborted outcomes are gone, so committing the old progress would mark tasks done
        whose outcome was never written; and a partition whose committed offset is unknown
        is not sent back to its beginning (that would run, and commit, everything again)."""
        self._rewinding = True
        old = list(self._parts.values())
        for part in old:
            with part.lock:
                part.revoked = part.lost = True
        try:
            positions = consumer.committed(
                [client.TopicPartition(*p.key) for p in old], timeout=30.0
            )
        except KafkaUnavailable as exc:
            _log.warning("committed offsets unreadable, rewind postponed: %s", exc)
            return
        unknown = [p for p in positions if p.error is not None]
        if unknown:
            _log.warning("committed offsets unknown, rewind postponed: %s", _describe(unknown))
            return
        for position in positions:
            self._parts[position.key] = Partition(position.key)
            offset = position.offset if position.offset >= 0 else client.OFFSET_BEGINNING
            consumer.seek(client.TopicPartition(position.topic, position.partition, offset))
        self._parts.lift(consumer, old)
        self._rewinding = False
        # the aborted transaction's retry records were never written, and the tasks parked
        # behind them are read again: count every key's retries afresh from what Kafka has
        self._forget_order(old)
        if self._order is not None:
            self._order.adopt_pending(consumer, [p.key for p in old])

    def committed(self, error: str | None, partitions: list[client.TopicPartition]) -> None:
        """librdkafka's report of an asynchronous commit: a failed request (``error``) or
        refused partitions (each with its ``error``, the request's ``error`` then None)."""
        if error is not None:
            _log.warning("async commit failed (will retry): %s", error)
            self._forget_commits(partitions)
            return
        refused = [p for p in partitions if p.error is not None]
        if refused:
            _log.warning("async commit refused (will retry): %s", _describe(refused))
            self._forget_commits(refused)

    def _forget_commits(self, partitions: list[client.TopicPartition]) -> None:
        if self._with_metadata and any(client.metadata_too_large(p.error) for p in partitions):
            # offset.metadata.max.bytes is below what we write: commit offsets alone from now
            _log.warning(
                "the broker refuses our commit metadata: finished tasks past a commit "
                "will run again after a handover"
            )
            self._with_metadata = False
        for key in _keys(partitions):
            part = self._parts.get(key)
            if part is not None:
                part.tracker.forget_commit()


def _describe(refused: Sequence[client.TopicPartition]) -> str:
    return ", ".join(f"{p.topic}[{p.partition}]@{p.offset}: {p.error}" for p in refused)


def _keys(partitions: Sequence[client.TopicPartition]) -> list[TopicKey]:
    return [p.key for p in partitions]
