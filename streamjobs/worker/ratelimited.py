"""The worker's rate limits on its poll thread: tokens asked for, tasks held, shares recomputed.

Owns :class:`RateLimits`, the glue between the poll loop and the pure
:class:`~streamjobs.worker.ratelimit.RateGate`: it asks whether a task read from Kafka may
start, pauses the task's partition when the worker already holds all the tasks it may, releases
held tasks as tokens come (and drops those of partitions given up), and recomputes this
worker's share of each limit after every assignment change (the README's "Rate limits"). Does
not count or start tasks (:mod:`streamjobs.worker.intake` does, with what
:meth:`RateLimits.release` returns) or decide token arithmetic (:mod:`streamjobs.worker.ratelimit`).
"""

from __future__ import annotations

import logging
import time

from streamjobs import client
from streamjobs.envelope import Envelope
from streamjobs.errors import StreamJobsError
from streamjobs.registry import Handler, TaskRegistry
from streamjobs.settings import Settings
from streamjobs.topics import ServedTopics
from streamjobs.worker.partitions import Assigned, Partition
from streamjobs.worker.ratelimit import Decision, RateGate

_log = logging.getLogger(__name__)

#: A task taken from Kafka and held for a token: what the loop needs to start it later.
HeldTask = tuple[client.Record, Envelope, Handler, Partition]


class RateLimits:
    """The rate limits of one worker's registry and queue, used from its poll thread only."""

    def __init__(
        self, settings: Settings, registry: TaskRegistry, topics: ServedTopics, parts: Assigned
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._topics = topics
        self._parts = parts
        self._gate: RateGate[HeldTask] = RateGate(
            {h.name: h.rate_limit for h in registry if h.rate_limit is not None},
            settings.queue_rate,
            max_held=settings.max_in_flight // 2,  # the other half stays for tasks that can run
            now=time.monotonic(),
        )
        self._task_partitions: int | None = None  # of all the served queues' task topics

    @property
    def held(self) -> int:
        """Tasks taken from Kafka and waiting for a token (not started)."""
        return self._gate.held

    def decide(
        self, consumer: client.Consumer, message: client.Record, part: Partition, envelope: Envelope
    ) -> Decision:
        """Whether a task may start now, waits (held, other tasks flow past it), or is left
        unread with its partition paused because the worker holds all the tasks it may."""
        if not self._gate.active or envelope.task not in self._registry:
            return Decision.RUN  # an unknown task is dead-lettered: it takes no token
        decision = self._gate.decide(envelope.task, envelope.record_key, time.monotonic())
        if decision is Decision.FULL:
            self._parts.rate_pause(consumer, part, message.offset)
        return decision

    def hold(self, task: HeldTask) -> None:
        """Keep a task :meth:`decide` answered HOLD for until its token comes."""
        envelope = task[1]
        self._gate.hold(envelope.task, envelope.record_key, task)

    def release(self, consumer: client.Consumer) -> tuple[list[HeldTask], int]:
        """The held tasks that have their tokens now (to start), and how many were dropped:
        those of partitions given up (never started, their offsets uncommitted: the next owner
        reads them again). Resumes rate-paused partitions once there is room again."""
        if not self._gate.active:
            return [], 0
        started, dropped = self._gate.release(time.monotonic(), _given_up)
        if self._gate.room_again:
            self._parts.rate_resume(consumer)
        return started, len(dropped)

    def reshare(self, consumer: client.Consumer) -> None:
        """After an assignment change: this worker's share of each limit is the fraction of
        the queue's task partitions it owns now."""
        if not self._gate.active:
            return
        if self._task_partitions is None:
            try:
                count = len(consumer.partition_ids(self._topics.first.main))
            except StreamJobsError as exc:
                _log.warning("partition count unknown, assuming the settings': %s", exc)
                count = 0
            # topics ensure gives every task topic of the queue the main topic's count
            count = count or self._settings.partitions
            self._task_partitions = count * len(self._topics.task_topics)
        self._gate.share(len(self._parts), self._task_partitions, time.monotonic())


def _given_up(task: HeldTask) -> bool:
    return task[3].revoked
