"""What a worker did and where it stands, as plain counters any thread may read.

Owns :class:`WorkerStats`: written by the worker's threads, read by tests, health probes and
metrics. Does not count anything itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from streamjobs.worker.partitions import PartitionProgress


@dataclass
class WorkerStats:
    """Counters of what this worker did; read them from any thread."""

    started: int = 0
    # attempts started by (queue, task type), counted by the executor threads that start them
    # (metrics export them as streamjobs_task_started)
    starts: dict[tuple[str, str], int] = field(default_factory=dict)
    succeeded: int = 0
    retried: int = 0
    dead_lettered: int = 0
    cancelled: int = 0
    hopped: int = 0
    # dead letters no attempt led to (bad input, crash loops), by reason: middleware never saw
    # them, so metrics read them here
    rejected: dict[str, int] = field(default_factory=dict)
    polled_at: float = 0.0  # time.monotonic() of the poll loop's latest turn (liveness)
    # the partitions owned now and their progress, refreshed by the poll thread every second
    partitions: tuple[PartitionProgress, ...] = ()
