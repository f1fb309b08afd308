"""Task ids: random 128-bit ids as 32 hex digits (like ``uuid4().hex``), drawn from a pool.

Owns :func:`new_id` and :func:`new_ids`. A submit needs one id, and ``os.urandom`` is a system
call that gives up the GIL (tens of microseconds under load, when another thread takes it
meanwhile), so ids come from a pool of 256 filled by one 4 KiB ``urandom`` read and refilled
when empty. The pool is emptied in a forked child, so parent and child never hand out the same
id. Does not decide whether an id is free (:mod:`streamjobs.producer` checks a caller's own).
"""

from __future__ import annotations

import os

_ID_BYTES = 16
_POOL_BYTES = 4096


class _Pool:
    """Ids not handed out yet. ``list.pop`` is atomic: threads never share an id, and two
    threads refilling at once each get fresh randomness."""

    def __init__(self) -> None:
        self._ids: list[str] = []

    def take(self) -> str:
        try:
            return self._ids.pop()
        except IndexError:
            raw = os.urandom(_POOL_BYTES).hex()
            step = 2 * _ID_BYTES
            fresh = [raw[i : i + step] for i in range(0, len(raw), step)]
            self._ids = fresh
            return fresh.pop()

    def clear(self) -> None:
        self._ids = []


_POOL = _Pool()
os.register_at_fork(after_in_child=_POOL.clear)


def new_id() -> str:
    """One random task id."""
    return _POOL.take()


def new_ids(count: int) -> list[str]:
    """``count`` random task ids; a large batch reads its own randomness in one call."""
    if count > 64:
        raw = os.urandom(_ID_BYTES * count).hex()
        step = 2 * _ID_BYTES
        return [raw[i : i + step] for i in range(0, len(raw), step)]
    return [_POOL.take() for _ in range(count)]
