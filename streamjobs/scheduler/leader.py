"""Who may fire: the leadership state machine of one scheduler.

The lock is Kafka's own: every scheduler of a queue joins one consumer group on the
one-partition schedules topic, and the member the group assigns that partition to is the
candidate. Partition ownership alone is not enough (a paused process may still believe it owns
the partition after the group moved it), so a candidate becomes leader in two steps:

1. **claim**: initialise the queue's scheduler transactional producer. Its ``transactional.id``
   is the same on every worker, so this fences the previous leader: its open transaction is
   aborted and any later commit of it fails.
2. **catch up**: read the schedules topic (``read_committed``) up to the end offset seen after
   the claim. The fenced leader can write nothing more, so the states read are final.

Only then does it fire. Losing the partition ends leadership at once. Being fenced by a newer
claimant (or a commit whose outcome is unknown) makes the runner leave the group and join again
as a new member, so it reads everything again before it can lead.

Owns :class:`Leadership`, pure and unit-tested. Does not touch Kafka
(:mod:`streamjobs.scheduler.runner` does, and reports events here).
"""

from __future__ import annotations

import enum
import logging

_log = logging.getLogger(__name__)


class Role(enum.StrEnum):
    FOLLOWER = "follower"  # not assigned the schedules partition
    CLAIMING = "claiming"  # assigned: must fence the previous leader first
    CATCHING_UP = "catching_up"  # fenced it: reading the topic to the end offset
    LEADING = "leading"  # may fire


class Leadership:
    """The role of one scheduler, driven by rebalance and transaction events."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.role = Role.FOLLOWER
        self._end: int | None = None
        self.terms = 0  # how many times this scheduler became leader

    @property
    def leading(self) -> bool:
        return self.role is Role.LEADING

    @property
    def must_claim(self) -> bool:
        return self.role is Role.CLAIMING

    def assigned(self) -> None:
        """The group gave us the schedules partition (again): claim before firing."""
        self._move(Role.CLAIMING)

    def released(self) -> None:
        """The partition was revoked or lost, or the scheduler stops."""
        self._move(Role.FOLLOWER)

    def claimed(self, end_offset: int) -> None:
        """The claim fenced earlier leaders; the topic must be read up to ``end_offset``."""
        if self.role is Role.CLAIMING:
            self._end = end_offset
            self._move(Role.CATCHING_UP)

    def read_to(self, position: int) -> bool:
        """The reader's position; True when this makes us the leader."""
        if self.role is Role.CATCHING_UP and self._end is not None and position >= self._end:
            self.terms += 1
            self._move(Role.LEADING)
            return True
        return False

    def _move(self, role: Role) -> None:
        if role is not self.role:
            _log.info("scheduler %s: %s -> %s", self.owner, self.role.value, role.value)
        self.role = role
        if role is not Role.CATCHING_UP:
            self._end = None
