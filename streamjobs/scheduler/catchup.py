"""What a schedule fires now: its due times since the last fire, after its catch-up policy.

Owns the pure decision :func:`plan`. A schedule remembers the due time of its last fire (on its
state record); everything due after that and up to now is *owed*. Usually one due time is owed
and it fires. After downtime (no worker running, or a leader failing over) several are, and the
policy decides:

* ``latest`` (the default): fire the newest owed due time once, skip the older ones.
* ``skip``: fire the newest only if it is less than :data:`SKIP_GRACE` late; otherwise skip it
  too and wait for the next due time.
* ``all``: fire every owed due time, oldest first, at most ``limit`` of them (the newest
  ``limit``; older ones are skipped).

Skipped due times are counted on the state record, never fired later. Does not compute due
times (:mod:`streamjobs.scheduler.timing`) or write anything.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from streamjobs.scheduler.timing import Cadence, due_after

#: ``skip`` still fires a due time this late: a leader failing over is not downtime.
SKIP_GRACE = timedelta(seconds=60)
DEFAULT_LIMIT = 100


class CatchUp(enum.StrEnum):
    """A schedule's policy for due times that passed while no worker could fire them."""

    SKIP = "skip"
    LATEST = "latest"
    ALL = "all"


@dataclass(frozen=True, slots=True)
class Plan:
    """Due times to fire now (oldest first), how many owed ones are skipped for good, and the
    due time the state settles at once the plan is carried out (None: nothing owed)."""

    fire: list[datetime]
    skipped: int
    settled: datetime | None


NOTHING = Plan([], 0, None)


def plan(
    cadence: Cadence,
    policy: CatchUp,
    *,
    since: datetime,
    now: datetime,
    limit: int = DEFAULT_LIMIT,
) -> Plan:
    """The fires owed at ``now`` after the last settled due time ``since``."""
    keep = limit if policy is CatchUp.ALL else 1
    owed, older = due_after(cadence, since, now, max(1, keep))
    if not owed:
        return NOTHING
    if policy is CatchUp.SKIP and now - owed[-1] >= SKIP_GRACE:
        return Plan([], older + len(owed), owed[-1])
    return Plan(owed, older, owed[-1])
