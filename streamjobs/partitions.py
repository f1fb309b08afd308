"""The worker's partitions: what it knows about each one it owns, and when they are paused.

Owns per-partition state (offset tracker, revoked/lost flags, started tasks, the suspect window
of crash-loop quarantine, a held tier head) and flow control: a tier partition whose head is not
due yet is paused until it is, and every partition is paused while the executor stays full, so
the poll thread never sleeps and the group never sees a silent member. Pausing makes librdkafka
drop what it prefetched, so resuming seeks back to the first record not yet taken. Does not
consume, commit or run tasks (:mod:`streamjobs.worker`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from streamjobs import client, status
from streamjobs.offsets import OffsetTracker
from streamjobs.settings import Settings

TopicKey = tuple[str, int]
# the executor may stay full this long before partitions are paused (a pause costs a refetch)
_PAUSE_AFTER_S = 1.0


class Partition:
    """The worker's view of one assigned partition."""

    __slots__ = (
        "held_until_ms",
        "hold_offset",
        "key",
        "lock",
        "lost",
        "next_offset",
        "paused",
        "revoked",
        "running",
        "suspect",
        "tracker",
    )

    def __init__(self, key: TopicKey) -> None:
        self.key = key
        self.tracker = OffsetTracker()
        self.lock = threading.Lock()
        self.running = 0
        self.revoked = False  # no new task starts; started ones still settle and commit
        self.lost = False  # given up without a handover: outcomes no longer count
        self.next_offset: int | None = None
        self.held_until_ms: int | None = None
        self.hold_offset = 0
        self.paused = False
        self.suspect = range(0)  # offsets a dead previous owner may have been running

    def alive(self) -> bool:
        return not self.lost

    def completer(self, offset: int) -> Callable[[], bool]:
        """The ``done`` of an outcome: completes ``offset`` unless the partition was given up."""

        def done() -> bool:
            if self.lost:
                return False
            self.tracker.completed(offset)
            return True

        return done


class Assigned(dict[TopicKey, Partition]):
    """The partitions this worker owns now, by (topic, partition), with their flow control."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self._limit = settings.max_in_flight
        self.backpressure = False
        self._full_since: float | None = None

    def hold(self, consumer: client.Consumer, part: Partition, offset: int, until_ms: int) -> None:
        """Pause a tier partition whose head is not due: the thread keeps polling the rest."""
        part.held_until_ms = until_ms
        part.hold_offset = offset
        consumer.pause([client.tp(*part.key)])

    def resume_due(self, consumer: client.Consumer) -> None:
        now = status.now_ms()
        for part in list(self.values()):
            if part.held_until_ms is not None and part.held_until_ms <= now:
                part.held_until_ms = None
                if not part.paused:
                    resume(consumer, part, part.hold_offset)

    def pause_new(self, consumer: client.Consumer, part: Partition, offset: int) -> None:
        """A partition that arrived (or spoke up) while all are paused joins them; ``offset``
        is the first record not taken, read again on resume."""
        part.paused = True
        part.next_offset = offset
        consumer.pause([client.tp(*part.key)])

    def apply_backpressure(self, consumer: client.Consumer, in_flight: int) -> None:
        """Pause every partition while the executor stays full; the loop keeps polling.

        Long tasks must not stop the poll loop (the group would evict us after
        ``max.poll.interval.ms``), so after a short grace the partitions are paused and
        ``consume`` keeps being called; it returns nothing until they are resumed.
        """
        now = time.monotonic()
        if in_flight < self._limit:
            self._full_since = None
        elif self._full_since is None:
            self._full_since = now
        full_long = self._full_since is not None and now - self._full_since > _PAUSE_AFTER_S
        if not self.backpressure and full_long:
            self.backpressure = True
            for part in self.values():
                if part.held_until_ms is None and not part.paused:
                    part.paused = True
                    consumer.pause([client.tp(*part.key)])
        elif self.backpressure and in_flight <= self._limit // 2:
            self.backpressure = False
            for part in self.values():
                if part.paused:
                    part.paused = False
                    if part.held_until_ms is None:
                        resume(consumer, part, part.next_offset)


def resume(consumer: client.Consumer, part: Partition, offset: int | None) -> None:
    consumer.resume([client.tp(*part.key)])
    if offset is not None:  # drop what was prefetched before the pause; re-read from here
        consumer.seek(client.tp(part.key[0], part.key[1], offset))
