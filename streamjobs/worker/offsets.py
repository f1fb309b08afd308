"""Offset tracking: which offset of a partition may be committed. Pure, no Kafka.

Tasks of one partition finish out of order (per-key concurrency), but a Kafka commit means
"everything before this offset is done". The tracker records which dispatched offsets are
complete (their outcome durably written) and yields the highest contiguous one. Does not commit.
"""

from __future__ import annotations

from collections import OrderedDict


class OffsetTracker:
    """Completion state of one partition's dispatched offsets.

    Memory follows the tasks not finished yet, not the partition's progress: behind one slow
    task (or one parked by ``key_ordered`` for a long retry tier) thousands of later offsets may
    complete, and none of them is remembered. This relies on a partition's offsets being
    dispatched in increasing order, as Kafka delivers them (a re-read after a pause or a seek
    starts past everything dispatched).
    """

    __slots__ = ("_last", "_next_commit", "_unfinished", "committed")

    def __init__(self) -> None:
        # dispatched, unfinished offsets in offset order, each mapped to the offset dispatched
        # just before it: when the first of them completes, that of the next one is the last
        # offset below it, all of them done
        self._unfinished: OrderedDict[int, int | None] = OrderedDict()
        self._last: int | None = None  # the highest offset dispatched
        self._next_commit: int | None = None  # what commit() would store: last done + 1
        self.committed: int | None = None  # last offset handed to Kafka as committed

    def __len__(self) -> int:
        return len(self._unfinished)

    def dispatched(self, offset: int) -> None:
        """Record a task taken from ``offset``; offsets must come in increasing order."""
        if self._last is not None and offset <= self._last:
            # a bug upstream; carrying on could commit past a task that never ran
            raise ValueError(f"offset {offset} dispatched after {self._last}: out of order")
        self._unfinished[offset] = self._last
        self._last = offset

    def completed(self, offset: int) -> None:
        """Mark ``offset`` done; completing an offset twice (or one never dispatched) is a no-op."""
        unfinished = self._unfinished
        if offset not in unfinished:
            return
        first = next(iter(unfinished))
        del unfinished[offset]
        if offset != first:
            return  # an earlier task is still running: the commit cannot move yet
        if unfinished:
            before = unfinished[next(iter(unfinished))]
            assert before is not None, "only the first offset dispatched has none before it"
            self._next_commit = before + 1
        else:
            assert self._last is not None
            self._next_commit = self._last + 1

    def commit_offset(self) -> int | None:
        """The offset to commit now (next to read), or None when nothing new is complete."""
        if self._next_commit is None or self._next_commit == self.committed:
            return None
        return self._next_commit

    def mark_committed(self, offset: int) -> None:
        self.committed = offset

    @property
    def idle(self) -> bool:
        return not self._unfinished
