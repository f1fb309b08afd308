"""Offset tracking: which offset of a partition may be committed. Pure, no Kafka.

Tasks of one partition finish out of order (per-key concurrency), but a Kafka commit means
"everything before this offset is done". The tracker records which dispatched offsets are
complete (their outcome durably written) and yields the highest contiguous one, with the runs
of offsets already done beyond it (for the commit's metadata, so the next owner skips them), and
skips what a previous owner recorded as done. Does not commit or encode.
"""

from __future__ import annotations

from collections import OrderedDict

from streamjobs.worker.commit_metadata import Runs, contains


class OffsetTracker:
    """Completion state of one partition's dispatched offsets.

    Memory follows the tasks not finished yet, not the partition's progress: behind one slow
    task (or one parked by ``key_ordered`` for a long retry tier) thousands of later offsets may
    complete, and none of them is remembered. This relies on a partition's offsets being
    dispatched in increasing order, as Kafka delivers them (a re-read after a pause or a seek
    starts past everything dispatched).
    """

    __slots__ = (
        "_ahead",
        "_changes",
        "_committed_changes",
        "_first",
        "_last",
        "_next_commit",
        "_unfinished",
        "committed",
    )

    def __init__(self) -> None:
        # dispatched, unfinished offsets in offset order, each mapped to the offset dispatched
        # just before it: when the first of them completes, that of the next one is the last
        # offset below it, all of them done
        self._unfinished: OrderedDict[int, int | None] = OrderedDict()
        self._last: int | None = None  # the highest offset dispatched
        self._next_commit: int | None = None  # what commit() would store: last done + 1
        self.committed: int | None = None  # last offset handed to Kafka as committed
        self._first: int | None = None  # the first offset dispatched: nothing before is ours
        self._ahead: Runs = []  # done by a previous owner, not reached yet
        self._changes = 0  # completions so far
        self._committed_changes = 0  # completions covered by the last commit (-1: it failed)

    def __len__(self) -> int:
        return len(self._unfinished)

    def dispatched(self, offset: int) -> None:
        """Record a task taken from ``offset``; offsets must come in increasing order."""
        if self._last is not None and offset <= self._last:
            # a bug upstream; carrying on could commit past a task that never ran
            raise ValueError(f"offset {offset} dispatched after {self._last}: out of order")
        self._unfinished[offset] = self._last
        self._last = offset
        if self._first is None:
            self._first = offset

    def completed(self, offset: int) -> None:
        """Mark ``offset`` done; completing an offset twice (or one never dispatched) is a no-op."""
        unfinished = self._unfinished
        if offset not in unfinished:
            return
        first = next(iter(unfinished))
        del unfinished[offset]
        self._changes += 1
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
        self._committed_changes = self._changes

    def forget_commit(self) -> None:
        """The last commit failed: offer the progress again."""
        self.committed = None
        self._committed_changes = -1

    # -- beyond the contiguous offset: handed from owner to owner in the commit metadata ------

    def pending(self) -> tuple[int, Runs] | None:
        """``(offset, done runs past it)`` to commit now, or None when no task completed since
        the last commit. Unlike :meth:`commit_offset`, progress past an unfinished task counts:
        a commit at the first dispatched offset still hands the done runs behind it over."""
        if self._changes == self._committed_changes:
            return None
        offset = self._next_commit if self._next_commit is not None else self._first
        if offset is None:
            return None
        return offset, self.done_ahead()

    def done_ahead(self) -> Runs:
        """Runs of offsets past the contiguous commit that need no run: dispatched and
        completed (offsets between dispatched ones hold no task: gaps), or done by a previous
        owner and not reached yet."""
        runs: Runs = []
        previous: int | None = None
        for offset in self._unfinished:
            if previous is not None and offset > previous + 1:
                runs.append((previous + 1, offset))
            previous = offset
        if previous is not None and self._last is not None and self._last > previous:
            runs.append((previous + 1, self._last + 1))
        beyond = -1 if self._last is None else self._last
        runs.extend((max(first, beyond + 1), end) for first, end in self._ahead if end > beyond + 1)
        return runs

    def inherit(self, runs: Runs) -> None:
        """Offsets a previous owner completed past its commit: :meth:`take_inherited` skips them."""
        self._ahead = list(runs)

    def take_inherited(self, offset: int) -> bool:
        """Whether a previous owner completed ``offset``; if so it counts as dispatched and
        completed here, and its task must not run again."""
        ahead = self._ahead
        while ahead and ahead[0][1] <= offset:
            ahead.pop(0)  # passed: offsets come in increasing order
        if not ahead or not contains(ahead, offset):
            return False
        self.dispatched(offset)
        self.completed(offset)
        return True

    @property
    def idle(self) -> bool:
        return not self._unfinished
