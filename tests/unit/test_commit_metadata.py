"""streamjobs.worker.commit_metadata: done offsets past a commit, in its metadata string."""

from __future__ import annotations

import random

import pytest

from streamjobs.worker.commit_metadata import MAX_CHARS, contains, decode, encode


def test_nothing_done_past_the_commit_encodes_as_empty_metadata() -> None:
    assert encode(10, []) == ""
    assert encode(10, [(3, 10)]) == ""  # below the commit: covered by the commit itself
    assert decode(10, "") == []


def test_long_runs_round_trip_exactly() -> None:
    runs = [(12, 15), (20, 100_000), (100_003, 100_004)]
    assert decode(10, encode(10, runs)) == runs


def test_runs_are_relative_to_the_commit_so_large_offsets_stay_short() -> None:
    base = 9_000_000_000
    metadata = encode(base, [(base + 1, base + 5000)])
    assert len(metadata) < 16
    assert decode(base, metadata) == [(base + 1, base + 5000)]


def test_alternating_done_offsets_use_a_bitset_and_round_trip() -> None:
    runs = [(o, o + 1) for o in range(101, 3000, 2)]
    metadata = encode(100, runs)
    assert metadata.startswith("sj1b")
    assert len(metadata) < 600  # one bit per offset, not a byte per run
    assert decode(100, metadata) == runs


def test_random_runs_round_trip() -> None:
    rng = random.Random(1313)
    for _ in range(50):
        base = rng.randrange(1 << 40)
        cursor, runs = base + 1, []
        for _ in range(rng.randrange(1, 40)):
            first = cursor + rng.randrange(1, 50)
            cursor = first + rng.randrange(1, 50)
            runs.append((first, cursor))
        assert decode(base, encode(base, runs)) == runs


def test_metadata_is_bounded_and_keeps_the_lowest_done_offsets() -> None:
    runs = [(o, o + 1) for o in range(1, 1_000_000, 2)]
    metadata = encode(0, runs)
    assert len(metadata) <= MAX_CHARS
    kept = decode(0, metadata)
    assert kept == runs[: len(kept)]
    assert len(kept) > 8000  # the bitset's share of the budget


def test_other_writers_metadata_yields_no_done_offsets() -> None:
    assert decode(5, "some other client's note") == []


@pytest.mark.parametrize("text", ["sj1r!!!!", "sj1rgA", "sj1x", "sj1rAQ"])
def test_corrupt_metadata_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="commit metadata"):
        decode(5, text)


def test_a_hostile_run_length_cannot_claim_unbounded_offsets() -> None:
    import base64

    huge = bytes([0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F])  # gap 0, length ~2**49
    text = "sj1r" + base64.urlsafe_b64encode(huge).decode().rstrip("=")
    assert decode(0, text) == []


def test_contains_finds_offsets_inside_runs_only() -> None:
    runs = [(2, 4), (10, 11), (20, 30)]
    assert [o for o in range(35) if contains(runs, o)] == [2, 3, 10, *range(20, 30)]
