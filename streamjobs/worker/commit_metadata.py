"""Completed offsets beyond a commit, carried in the commit's metadata string. Pure, no Kafka.

A Kafka commit says "everything before this offset is done"; tasks finish out of order, so
when a partition changes owner, offsets past the commit may be done already (behind one slow or
queued task, thousands of other keys' tasks may have finished). The commit's ``metadata``
string carries them, as the Confluent Parallel Consumer does, so the next owner skips them
instead of running them a second time.

Owns the encoding: runs of done offsets, ``(first, end)`` half-open and absolute, written
relative to the committed offset either as varint run lengths (``r``: few long runs) or as a
bitset (``b``: many short ones), whichever is shorter in full, in base64url behind the ``sj1``
version tag. Bounded: past ``max_chars`` the highest runs are left out (the next owner runs
those again: a duplicate, never a loss). Does not decide which offsets are done
(:mod:`streamjobs.worker.offsets`) nor read or write commits (:mod:`streamjobs.worker.handover`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

Runs = list[tuple[int, int]]  # sorted, disjoint [first, end) ranges of done offsets

_TAG = "sj1"
# the broker refuses commits whose metadata exceeds offset.metadata.max.bytes (4096 by default)
MAX_CHARS = 3000
# a decoded metadata string never yields more done offsets than this (a hostile or corrupt
# string cannot make the worker allocate without bound; fewer skips only mean re-runs)
MAX_DECODED = 1 << 22


def encode(base: int, runs: Sequence[tuple[int, int]], max_chars: int = MAX_CHARS) -> str:
    """The metadata for a commit at ``base`` (the next offset to read) of the done ``runs``.

    Runs below ``base`` are left out (they are covered by the commit itself). Returns "" when
    nothing past ``base`` is done.
    """
    runs = _clip(base, runs)
    if not runs:
        return ""
    budget = (max_chars - len(_TAG) - 1) * 3 // 4  # bytes that fit once base64-encoded
    # the bitset pays one bit per offset of the span, the runs a few bytes per run: build
    # only the one that is shorter in full (then cut to the budget)
    if (runs[-1][1] - base + 7) // 8 < _run_size(base, runs):
        kind, data = "b", _bit_bytes(base, runs, budget)
    else:
        kind, data = "r", _run_bytes(base, runs, budget)
    if not data:
        return ""
    return _TAG + kind + base64.urlsafe_b64encode(data).decode().rstrip("=")


def decode(base: int, text: str) -> Runs:
    """The done runs in ``text``, a metadata string written by :func:`encode` for a commit at
    ``base``. "" (or another writer's metadata) yields no runs; a corrupt string raises
    ValueError."""
    if not text.startswith(_TAG):
        return []
    kind, body = text[len(_TAG) : len(_TAG) + 1], text[len(_TAG) + 1 :]
    try:
        data = base64.b64decode(body + "=" * (-len(body) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"commit metadata is not base64: {exc}") from exc
    if kind == "r":
        return _from_runs(base, data)
    if kind == "b":
        return _from_bits(base, data)
    raise ValueError(f"unknown commit metadata kind {kind!r}")


def contains(runs: Runs, offset: int) -> bool:
    """Whether ``offset`` lies in one of the sorted ``runs``."""
    lo, hi = 0, len(runs)
    while lo < hi:
        mid = (lo + hi) // 2
        first, end = runs[mid]
        if offset < first:
            hi = mid
        elif offset >= end:
            lo = mid + 1
        else:
            return True
    return False


def _clip(base: int, runs: Sequence[tuple[int, int]]) -> Runs:
    if not runs or runs[0][0] >= base:  # the usual case: every run is past the commit
        return list(runs)
    clipped = []
    for first, end in runs:
        first = max(first, base)
        if end > first:
            clipped.append((first, end))
    return clipped


# -- varint runs: gap, length, gap, length, ... from base ------------------------------------


def _run_bytes(base: int, runs: Runs, budget: int) -> bytes:
    out = bytearray()
    cursor = base
    for first, end in runs:
        item = _varint(first - cursor) + _varint(end - first)
        if len(out) + len(item) > budget:
            break
        out += item
        cursor = end
    return bytes(out)


def _from_runs(base: int, data: bytes) -> Runs:
    numbers = _varints(data)
    if len(numbers) % 2:
        raise ValueError("commit metadata runs end mid-pair")
    runs: Runs = []
    cursor, total = base, 0
    for gap, length in zip(numbers[::2], numbers[1::2], strict=True):
        total += length
        if total > MAX_DECODED:
            break
        first = cursor + gap
        cursor = first + length
        if length:
            runs.append((first, cursor))
    return runs


def _run_size(base: int, runs: Runs) -> int:
    """The bytes :func:`_run_bytes` needs for every run (a commit at a busy partition has
    hundreds of runs, 50 times a second: inline, and at least 2 bytes a run, so when even that
    is more than the bitset the exact size is not needed)."""
    bitset = (runs[-1][1] - base + 7) // 8
    if 2 * len(runs) > bitset:
        return 2 * len(runs)
    size, cursor = 0, base
    for first, end in runs:
        size += ((first - cursor).bit_length() + 6) // 7 or 1
        size += ((end - first).bit_length() + 6) // 7 or 1
        cursor = end
    return size


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _varints(data: bytes) -> list[int]:
    numbers, value, shift = [], 0, 0
    for byte in data:
        value |= (byte & 0x7F) << shift
        shift += 7
        if shift > 63:
            raise ValueError("commit metadata varint too long")
        if not byte & 0x80:
            numbers.append(value)
            value, shift = 0, 0
    if shift:
        raise ValueError("commit metadata ends mid-varint")
    return numbers


# -- bitset: bit i (little-endian within each byte) set when base + i is done ----------------


def _bit_bytes(base: int, runs: Runs, budget: int) -> bytes:
    span = min(runs[-1][1] - base, budget * 8)
    # the bits as a string of 0s and 1s, highest offset first, read as one int: string
    # repeats and one int() are C loops (or-ing each run into a growing int copied it each time)
    digits: list[str] = []
    cursor = base + span  # one past the highest bit
    for first, end in reversed(runs):
        end = min(end, cursor)
        if end <= first:
            continue
        digits.append("0" * (cursor - end))
        digits.append("1" * (end - first))
        cursor = first
    digits.append("0" * (cursor - base))
    text = "".join(digits)
    bits = int(text, 2) if text else 0
    return bits.to_bytes((span + 7) // 8, "little")


def _from_bits(base: int, data: bytes) -> Runs:
    data = data[: MAX_DECODED // 8]
    runs: Runs = []
    start: int | None = None
    for index in range(len(data) * 8):
        done = bool(data[index >> 3] >> (index & 7) & 1)
        if done and start is None:
            start = base + index
        elif not done and start is not None:
            runs.append((start, base + index))
            start = None
    if start is not None:
        runs.append((start, base + len(data) * 8))
    return runs
