"""Result expiry: tombstone the statuses of tasks that finished long enough ago.

Owns choosing the statuses to expire (final states, ``succeeded`` or ``dead_lettered``, last updated
before the cutoff, of one queue unless asked for all) and writing their tombstones (key ``task_id``,
no value) to the compacted status topic and to the submitted topic (where a new task's ``queued``
fact lives: left there, the id would answer ``queued`` again). Readers drop a task id at its
tombstones at once; the log cleaner removes the tombstone itself after the topic's
``delete.retention.ms``, which ``topics ensure`` sets from ``settings.status_retention``.

Does not touch tasks that are still queued, scheduled, running or waiting for a retry, delete
records from task topics (their own ``retention.ms`` does), or run on a schedule: call
:func:`purge` from cron or ``streamjobs purge``. A task re-submitted (replayed, re-driven) in
the instant between the read and the tombstone loses its ``queued`` status until it runs.
"""

from __future__ import annotations

from datetime import timedelta

from streamjobs import client, status, statusreads
from streamjobs.errors import ConfigError
from streamjobs.settings import Settings
from streamjobs.status import StatusView
from streamjobs.topics import queue_topics


def expired(
    views: dict[str, StatusView],
    *,
    queue: str | None,
    older_than: timedelta,
    now_ms: int,
) -> list[str]:
    """Task ids whose final status was last updated more than ``older_than`` before now."""
    cutoff = now_ms - older_than // timedelta(milliseconds=1)
    return sorted(
        task_id
        for task_id, view in views.items()
        if view.state.final
        and view.updated_at_ms < cutoff
        and (queue is None or view.queue == queue)
    )


def purge(
    settings: Settings,
    older_than: timedelta,
    dry_run: bool = False,
    *,
    all_queues: bool = False,
) -> int:
    """Tombstone the final statuses older than ``older_than``; returns how many (would be) purged.

    Only the tasks of ``settings.queue`` unless ``all_queues`` (queues of one topic prefix
    share the status topic).
    """
    if older_than < timedelta(0):
        raise ConfigError(f"older_than must not be negative, got {older_than}")
    views = statusreads.snapshot(settings)
    ids = expired(
        views,
        queue=None if all_queues else settings.queue,
        older_than=older_than,
        now_ms=status.now_ms(),
    )
    if dry_run or not ids:
        return len(ids)
    names = queue_topics(settings)
    tombstones: list[tuple[bytes, bytes | None]] = [(i.encode(), None) for i in ids]
    producer = client.new_producer(settings)
    try:
        # the submitted records first: should the status write then fail, the ids still answer
        # their outcome, never a stale ``queued``
        client.produce_confirmed(producer, names.submitted, tombstones)
        client.produce_confirmed(producer, names.status, tombstones)
    finally:
        producer.flush(10.0)
    return len(ids)
