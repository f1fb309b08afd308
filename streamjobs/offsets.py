"""Offset tracking: which offset of a partition may be committed. Pure, no Kafka.

Tasks of one partition finish out of order (per-key concurrency), but a Kafka commit means
"everything before this offset is done". The tracker records which dispatched offsets are
complete (their outcome durably written) and yields the highest contiguous one. Does not commit.
"""

from __future__ import annotations

import heapq


class OffsetTracker:
    """Completion state of one partition's dispatched offsets."""

    __slots__ = ("_done", "_in_flight", "_next_commit", "committed")

    def __init__(self) -> None:
        self._in_flight: list[int] = []  # min-heap of dispatched, unfinished offsets
        self._done: set[int] = set()
        self._next_commit: int | None = None  # what commit() would store: last done + 1
        self.committed: int | None = None  # last offset handed to Kafka as committed

    def __len__(self) -> int:
        return len(self._in_flight) - len(self._done)

    def dispatched(self, offset: int) -> None:
        heapq.heappush(self._in_flight, offset)

    def completed(self, offset: int) -> None:
        """Mark ``offset`` done; completing an offset twice (or one never dispatched) is a no-op."""
        heap = self._in_flight
        if offset in self._done or not heap or offset < heap[0]:
            return
        self._done.add(offset)
        while heap and heap[0] in self._done:
            head = heapq.heappop(heap)
            self._done.discard(head)
            self._next_commit = head + 1

    def commit_offset(self) -> int | None:
        """The offset to commit now (next to read), or None when nothing new is complete."""
        if self._next_commit is None or self._next_commit == self.committed:
            return None
        return self._next_commit

    def mark_committed(self, offset: int) -> None:
        self.committed = offset

    @property
    def idle(self) -> bool:
        return not self._in_flight
