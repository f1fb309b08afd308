"""Running a selection of tasks again: what replay and redrive share.

Owns the chunked writing of re-submissions (:class:`Chunks`: one confirmed write per chunk),
the per-run summary of item outcomes (:class:`Summary`), the operator name left on the
statuses a run writes, and the timestamp conversion of ``--from-time``-style bounds.

Does not decide what is run again or how (:mod:`streamjobs.ops.replay` and
:mod:`streamjobs.ops.redrive` do), and does not read or write Kafka itself.
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from streamjobs.errors import ConfigError
from streamjobs.producer import Resubmission

Progress = Callable[[int, int], None]
ItemT = TypeVar("ItemT")


class _Item(Protocol):
    @property
    def outcome(self) -> str: ...


OutcomeItemT = TypeVar("OutcomeItemT", bound=_Item)

# re-submissions per confirmed write: large enough that the two round trips of a write are
# shared by many records, small enough that a failed write reports a bounded set of them
CHUNK_SIZE = 500


def default_actor() -> str:
    """``user@host`` of the operator, for the notes replays and redrives leave on statuses."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER: a bare container
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def to_ms(moment: datetime) -> int:
    """Unix milliseconds of a timezone-aware datetime (naive ones are refused: ambiguous)."""
    if moment.tzinfo is None:
        raise ConfigError(f"{moment.isoformat()} has no timezone (add one, e.g. +00:00 or Z)")
    return int(moment.astimezone(UTC).timestamp() * 1000)


@dataclass(slots=True)
class Summary(Generic[OutcomeItemT]):
    """The items of one run in order, counted by outcome.

    A subclass names its "done" outcomes (including the dry-run one, so a dry run counts what
    it would do) and the key under which :meth:`as_dict` reports them.
    """

    done_outcomes: ClassVar[tuple[str, ...]] = ()
    done_name: ClassVar[str] = "done"

    items: list[OutcomeItemT] = field(default_factory=list)
    dry_run: bool = False

    def _count(self, *outcomes: str) -> int:
        return sum(1 for item in self.items if item.outcome in outcomes)

    @property
    def done(self) -> int:
        return self._count(*self.done_outcomes)

    @property
    def skipped(self) -> int:
        return self._count("skipped")

    @property
    def failed(self) -> int:
        return self._count("failed")

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            self.done_name: self.done,
            "skipped": self.skipped,
            "failed": self.failed,
            "items": [asdict(item) for item in self.items],  # type: ignore[call-overload]
        }


class Chunks(Generic[ItemT]):
    """Items in the order decided; those with a :class:`Resubmission` wait for their chunk.

    A chunk is written once ``size`` resubmissions wait, and by :meth:`flush` at the end:
    ``write`` gets the waiting ``(item, resubmission)`` pairs in order and returns their final
    items, in the same order. One write per chunk is what makes a large replay fast: each
    write is a confirmed two-phase write, a round trip or two whatever its size.
    """

    def __init__(
        self,
        size: int,
        write: Callable[[list[tuple[ItemT, Resubmission]]], list[ItemT]],
    ) -> None:
        if size < 1:
            raise ConfigError(f"chunk size must be at least 1, not {size}")
        self.items: list[ItemT] = []
        self._size = size
        self._write = write
        self._waiting: list[tuple[int, Resubmission]] = []

    def add(self, item: ItemT, resubmission: Resubmission | None = None) -> None:
        if resubmission is not None:
            self._waiting.append((len(self.items), resubmission))
        self.items.append(item)
        if len(self._waiting) >= self._size:
            self.flush()

    def flush(self) -> None:
        if not self._waiting:
            return
        waiting, self._waiting = self._waiting, []
        final = self._write([(self.items[i], r) for i, r in waiting])
        for (index, _), item in zip(waiting, final, strict=True):
            self.items[index] = item
