"""Re-driving dead letters: their tasks go back to the queue, each dead letter at most once.

Owns :func:`redrive`: the original envelope goes back to the queue with its own ``task_id`` and
key, attempt 1, the next generation and a note saying who re-drove it from where and when.

"Never twice" is a durable ledger, the compacted ``<prefix>.<queue>.dlq.redriven`` topic keyed
``"partition:offset"``. A dead letter's key is written there, acknowledged, *before* its task is
re-submitted, so a crash in between loses a redrive (the operator sees it failed and can
tombstone the key) instead of running the task twice. Redrives go in chunks (``chunk_size``):
a chunk's entries are acknowledged before any of its tasks is produced, so such a crash can
lose up to a chunk. A ledger value is the ``queued`` status record the redrive wrote (task id,
generation, note), so the ledger needs no schema of its own.
Dead letters already in the ledger, without a decodable envelope (poison bytes, truncated
values) or superseded by a newer generation of their task are skipped with a reason.

Does not read or select dead letters (:mod:`streamjobs.ops.deadletters`) or guard against two
operators re-driving the same record at the same instant.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal

from streamjobs import client, statusreads
from streamjobs.envelope import Envelope
from streamjobs.errors import BadInput, StreamJobsError, SubmitError
from streamjobs.models import TaskState
from streamjobs.ops.deadletters import (
    DeadLetter,
    dead_letters,
    envelope_of,
    original_headers,
    parse_ref,
    selected,
)
from streamjobs.ops.rerun import CHUNK_SIZE, Chunks, Progress, Summary, default_actor, to_ms
from streamjobs.producer import Producer, Resubmission
from streamjobs.settings import Settings
from streamjobs.status import StatusView
from streamjobs.taskhandle import TaskHandle
from streamjobs.topics import queue_topics

Outcome = Literal["redriven", "would_redrive", "skipped", "failed"]


@dataclass(frozen=True, slots=True)
class RedriveItem:
    """What happened to one selected dead letter."""

    ref: str
    outcome: Outcome
    task_id: str | None = None
    task: str | None = None
    reason: str | None = None
    generation: int | None = None
    new_partition: int | None = None
    new_offset: int | None = None


class RedriveSummary(Summary[RedriveItem]):
    """The outcome of a redrive; in a dry run ``redriven`` counts what would be re-driven."""

    done_outcomes = ("redriven", "would_redrive")
    done_name = "redriven"

    @property
    def redriven(self) -> int:
        return self.done


class _Redriver:
    """Decides the redrive of one dead letter at a time; the re-submissions are written in
    chunks, each chunk's ledger entries acknowledged before its tasks are produced."""

    def __init__(self, settings: Settings, producer: Producer | None, actor: str) -> None:
        self.settings = settings
        self.producer = producer
        self.actor = actor
        self.topics = queue_topics(settings)
        self.statuses: dict[str, StatusView] = statusreads.snapshot(settings)
        self.done: set[str] = set()
        self.ledger = client.new_producer(settings) if producer is not None else None

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.flush(10.0)

    def consider(self, dead: DeadLetter) -> tuple[RedriveItem, Resubmission | None]:
        """The item for ``dead`` (final unless a resubmission to write comes with it)."""
        ref = dead.info.ref
        if dead.info.redriven:
            return RedriveItem(
                ref, "skipped", dead.info.task_id, dead.info.task, "already redriven"
            ), None
        try:
            envelope = envelope_of(dead)
        except BadInput as exc:
            reason = f"cannot be redriven, no decodable envelope ({exc.reason}): {exc}"
            return RedriveItem(ref, "skipped", dead.info.task_id, dead.info.task, reason), None
        ids = (envelope.task_id, envelope.task)
        skip = self._skip_reason(envelope)
        if skip is not None:
            return RedriveItem(ref, "skipped", *ids, reason=skip), None
        self.done.add(envelope.task_id)
        current = self.statuses.get(envelope.task_id)
        known = [envelope.generation, dead.info.generation, current.generation if current else 0]
        again = replace(envelope, generation=max(known) + 1)
        item = RedriveItem(ref, "would_redrive", *ids, generation=again.generation)
        if self.producer is None:
            return item, None
        try:
            return replace(item, outcome="redriven"), self._prepare(dead, again)
        except StreamJobsError as exc:
            return RedriveItem(ref, "failed", *ids, reason=f"not re-submitted: {exc}"), None

    def _skip_reason(self, envelope: Envelope) -> str | None:
        task_id = envelope.task_id
        if envelope.queue != self.settings.queue:
            return f"belongs to queue {envelope.queue!r}"
        if task_id in self.done:
            return "task already redriven in this run"
        current = self.statuses.get(task_id)
        if current is not None and current.state is TaskState.SUCCEEDED:
            return f"task has succeeded since (generation {current.generation})"
        if current is not None and current.generation > envelope.generation:
            return f"superseded: task is at generation {current.generation} ({current.state})"
        return None

    def _prepare(self, dead: DeadLetter, again: Envelope) -> Resubmission:
        assert self.producer is not None
        record = dead.record
        when = datetime.now(UTC).isoformat(timespec="seconds")
        note = f"redriven from dlq[{record.partition}]@{record.offset} by {self.actor} at {when}"
        return self.producer.prepare_resubmit(
            again,
            note=note,
            origin=record.position,
            headers=original_headers(dead.value),
            operation="redrive",
        )

    def write(self, chunk: list[tuple[RedriveItem, Resubmission]]) -> list[RedriveItem]:
        """The chunk's ledger entries, acknowledged, then its tasks in one confirmed write."""
        assert self.producer is not None
        assert self.ledger is not None
        # the ledger first: a crash after this line loses redrives, it never runs one twice
        entries = [(item.ref.encode(), prepared.queued_status) for item, prepared in chunk]
        client.produce_confirmed(self.ledger, self.topics.redriven, entries)
        results = self.producer.resubmit_many([prepared for _, prepared in chunk])
        final = [_settled(item, result) for (item, _), result in zip(chunk, results, strict=True)]
        unconfirmed = [(i.ref.encode(), None) for i in final if i.outcome == "failed"]
        if unconfirmed:
            # best effort: take those entries back so the dead letters can be re-driven later
            with contextlib.suppress(StreamJobsError):
                client.produce_confirmed(self.ledger, self.topics.redriven, unconfirmed)
        return final


def _settled(item: RedriveItem, result: TaskHandle | SubmitError) -> RedriveItem:
    if isinstance(result, SubmitError):
        return replace(
            item, outcome="failed", generation=None, reason=f"not re-submitted: {result}"
        )
    return replace(item, new_partition=result.partition, new_offset=result.offset)


def redrive(
    settings: Settings,
    *,
    reason: str | None = None,
    task: str | None = None,
    since: datetime | None = None,
    refs: list[str] | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
    actor: str | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> RedriveSummary:
    """Re-submit the selected dead letters' tasks; each dead letter is re-driven at most once.

    Selection: ``refs`` (``"partition:offset"``) if given, else every dead letter matching
    ``reason``, ``task`` and ``since``. ``progress(done, total)`` is called per selected letter.
    Re-submissions are written ``chunk_size`` at a time, in dead-letter order: a chunk's ledger
    entries are acknowledged before its tasks are produced, and the next chunk waits for both.
    """
    wanted = None if refs is None else {"{}:{}".format(*parse_ref(r)) for r in refs}
    since_ms = None if since is None else to_ms(since)
    chosen = [
        dead
        for dead in dead_letters(settings, since=since)
        if (wanted is None or dead.info.ref in wanted)
        and selected(dead.info, reason, task, since_ms)
    ]
    summary = RedriveSummary(dry_run=dry_run)
    with contextlib.ExitStack() as stack:
        producer = None if dry_run else stack.enter_context(Producer(settings))
        redriver = _Redriver(settings, producer, actor or default_actor())
        stack.callback(redriver.close)
        chunks = Chunks(chunk_size, redriver.write)
        for done, dead in enumerate(chosen, start=1):
            chunks.add(*redriver.consider(dead))
            if progress is not None:
                progress(done, len(chosen))
        chunks.flush()
    summary.items = chunks.items
    missing = sorted((wanted or set()) - {dead.info.ref for dead in chosen})
    summary.items += [
        RedriveItem(ref, "skipped", reason="no such dead letter (or filtered out)")
        for ref in missing
    ]
    return summary
