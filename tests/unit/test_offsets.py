"""streamjobs.worker.offsets: the highest contiguous completed offset of a partition."""

from __future__ import annotations

import random
import tracemalloc

import pytest

from streamjobs.worker.offsets import OffsetTracker


def _tracker(*offsets: int) -> OffsetTracker:
    tracker = OffsetTracker()
    for offset in offsets:
        tracker.dispatched(offset)
    return tracker


def test_nothing_to_commit_before_any_progress() -> None:
    assert OffsetTracker().commit_offset() is None
    tracker = _tracker(0, 1, 2)
    assert tracker.commit_offset() is None


def test_commit_offset_is_the_next_offset_to_read() -> None:
    tracker = _tracker(7)
    tracker.completed(7)
    assert tracker.commit_offset() == 8


def test_out_of_order_completion_commits_only_the_contiguous_prefix() -> None:
    tracker = _tracker(1, 2, 3)
    tracker.completed(3)
    assert tracker.commit_offset() is None
    tracker.completed(1)
    assert tracker.commit_offset() == 2
    tracker.completed(2)
    assert tracker.commit_offset() == 4


def test_gaps_between_dispatched_offsets_do_not_block_the_commit() -> None:
    # compaction, transaction markers and filtered records leave holes in a partition
    tracker = _tracker(5, 7)
    tracker.completed(7)
    assert tracker.commit_offset() is None
    tracker.completed(5)
    assert tracker.commit_offset() == 8


def test_commit_offset_is_none_again_once_marked_committed() -> None:
    tracker = _tracker(0, 1)
    tracker.completed(0)
    tracker.mark_committed(1)
    assert tracker.committed == 1
    assert tracker.commit_offset() is None
    tracker.completed(1)
    assert tracker.commit_offset() == 2


def test_commit_offset_offers_newer_progress_after_an_older_commit() -> None:
    tracker = _tracker(0, 1, 2)
    tracker.completed(0)
    tracker.mark_committed(1)  # e.g. an asynchronous commit of the earlier position
    tracker.completed(1)
    tracker.completed(2)
    assert tracker.commit_offset() == 3


def test_len_counts_dispatched_offsets_not_yet_completed() -> None:
    tracker = _tracker(1, 2, 3)
    assert len(tracker) == 3
    tracker.completed(3)
    assert len(tracker) == 2
    tracker.completed(1)
    assert len(tracker) == 1
    tracker.completed(2)
    assert len(tracker) == 0


def test_idle_only_when_every_dispatched_offset_is_completed() -> None:
    tracker = OffsetTracker()
    assert tracker.idle
    tracker.dispatched(4)
    tracker.dispatched(5)
    assert not tracker.idle
    tracker.completed(5)
    assert not tracker.idle
    tracker.completed(4)
    assert tracker.idle


def test_random_completion_order_always_commits_the_contiguous_prefix() -> None:
    rng = random.Random(20240229)
    offsets = sorted(rng.sample(range(10_000), 300))
    tracker = _tracker(*offsets)
    done: set[int] = set()
    for offset in rng.sample(offsets, len(offsets)):
        tracker.completed(offset)
        done.add(offset)
        prefix = 0
        while prefix < len(offsets) and offsets[prefix] in done:
            prefix += 1
        expected = offsets[prefix - 1] + 1 if prefix else None
        assert tracker.commit_offset() == expected
        assert len(tracker) == len(offsets) - len(done)


def test_offsets_completed_behind_an_unfinished_one_are_not_kept_in_memory() -> None:
    # key_ordered parks a task behind a retry that may wait 30 minutes while its partition's
    # other keys go on: the tracker must not grow with every offset completed meanwhile
    tracker = _tracker(0)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for offset in range(1, 100_001):
            tracker.dispatched(offset)
            tracker.completed(offset)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, f"{grown} bytes kept for 100,000 completed offsets"
    assert tracker.commit_offset() is None
    tracker.completed(0)
    assert tracker.commit_offset() == 100_001
    assert tracker.idle


def test_an_offset_dispatched_out_of_order_is_refused() -> None:
    tracker = _tracker(3, 4)
    with pytest.raises(ValueError, match="out of order"):
        tracker.dispatched(4)
    with pytest.raises(ValueError, match="out of order"):
        tracker.dispatched(2)
    tracker.completed(3)
    tracker.completed(4)
    assert tracker.commit_offset() == 5


def test_pending_hands_over_offsets_done_behind_an_unfinished_one() -> None:
    tracker = _tracker(3, 4, 5, 7, 8)
    tracker.completed(4)
    tracker.completed(7)
    tracker.completed(8)
    # nothing contiguous: the commit stays at the first offset, the done runs ride along
    assert tracker.commit_offset() is None
    assert tracker.pending() == (3, [(4, 5), (6, 9)])


def test_pending_is_none_until_a_task_completes_again_after_a_commit() -> None:
    tracker = _tracker(1, 2, 3)
    assert tracker.pending() is None
    tracker.completed(3)
    assert tracker.pending() == (1, [(3, 4)])
    tracker.mark_committed(1)
    assert tracker.pending() is None
    tracker.completed(1)
    assert tracker.pending() == (2, [(3, 4)])
    tracker.mark_committed(2)
    tracker.forget_commit()  # the commit failed: offer it again
    assert tracker.pending() == (2, [(3, 4)])


def test_offsets_a_previous_owner_finished_are_skipped_and_count_as_done() -> None:
    tracker = OffsetTracker()
    tracker.inherit([(11, 13), (20, 21)])
    tracker.dispatched(10)
    assert tracker.take_inherited(11)
    assert tracker.take_inherited(12)
    assert not tracker.take_inherited(13)
    tracker.dispatched(13)
    # what is not reached yet is handed on to the next owner too
    assert tracker.done_ahead() == [(11, 13), (20, 21)]
    tracker.completed(10)
    tracker.completed(13)
    assert tracker.commit_offset() == 14
    assert tracker.pending() == (14, [(20, 21)])
    assert not tracker.take_inherited(19)
    assert tracker.take_inherited(20)
    assert tracker.pending() == (21, [])
