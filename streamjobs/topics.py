"""Topic policy: names, partition counts and configs of every topic of a queue, in one place.

Owns the naming scheme (``<prefix>.<queue>``, ``.retry.<delay>``, ``.delay.<delay>``, ``.dlq``,
``<prefix>.status``, ``<prefix>.schemas``, ``<prefix>.schedules``, ``<prefix>.workers``), the
configuration each topic needs, ``ensure``/``verify``, and :func:`tier_drift`: the queue's tier
topics on the cluster against the tiers of the settings (tiers changed, or a command run without
the workers' ``STREAMJOBS_RETRY_TIERS``). streamjobs never relies on broker auto-creation. Does
not produce or consume records.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from streamjobs import client
from streamjobs.errors import TopicError
from streamjobs.settings import Settings, format_duration, parse_duration

_DAY_MS = 86_400_000


@dataclass(frozen=True)
class QueueTopics:
    """The topic names of one queue, derived from settings."""

    main: str
    retry: dict[timedelta, str]
    delay: dict[timedelta, str]
    dlq: str
    redriven: str
    starts: str
    status: str
    schemas: str
    schedules: str
    workers: str

    @property
    def task_topics(self) -> list[str]:
        """Every topic that carries task envelopes and is consumed by the queue's workers."""
        return [self.main, *self.retry.values(), *self.delay.values()]

    def tier_delay(self, topic: str) -> timedelta | None:
        """The fixed delay of a tier topic, or None for the main topic."""
        for tiers in (self.retry, self.delay):
            for delay, name in tiers.items():
                if name == topic:
                    return delay
        return None


def queue_topics(settings: Settings) -> QueueTopics:
    base = f"{settings.topic_prefix}.{settings.queue}"
    return QueueTopics(
        main=base,
        retry={d: f"{base}.retry.{format_duration(d)}" for d in settings.retry_tiers},
        delay={d: f"{base}.delay.{format_duration(d)}" for d in settings.delay_tiers},
        dlq=f"{base}.dlq",
        redriven=f"{base}.dlq.redriven",
        starts=f"{base}.starts",
        status=f"{settings.topic_prefix}.status",
        schemas=f"{settings.topic_prefix}.schemas",
        schedules=f"{settings.topic_prefix}.schedules",
        workers=f"{settings.topic_prefix}.workers",
    )


@dataclass(frozen=True)
class TierDrift:
    """The queue's tier topics on the cluster that the settings do not name (``extra``: records
    there are read by no worker with these settings), and the settings' tiers with no topic
    (``missing``)."""

    extra: list[str]
    missing: list[str]

    def __bool__(self) -> bool:
        return bool(self.extra or self.missing)


def compare_tiers(settings: Settings, existing: Iterable[str]) -> TierDrift:
    """Which ``<prefix>.<queue>.retry.<d>`` / ``.delay.<d>`` topics of ``existing`` differ from
    the settings' tiers (pure)."""
    names = queue_topics(settings)
    tier = re.compile(rf"{re.escape(names.main)}\.(retry|delay)\.(\d+(?:ms|s|m|h|d))")
    wanted = [*names.retry.values(), *names.delay.values()]  # retry then delay, shortest first
    found = {m.group(0): m for m in map(tier.fullmatch, existing) if m is not None}
    extra = sorted(
        (m for name, m in found.items() if name not in wanted),
        key=lambda m: (m.group(1) != "retry", parse_duration(m.group(2))),
    )
    return TierDrift(
        extra=[m.group(0) for m in extra], missing=[t for t in wanted if t not in found]
    )


def tier_drift(settings: Settings) -> TierDrift:
    """:func:`compare_tiers` against the cluster's topics."""
    return compare_tiers(settings, client.new_admin(settings).topic_partitions())


TIERS_CHANGED_HINT = (
    "tier topics differ from these settings: run this command with the workers' "
    "STREAMJOBS_RETRY_TIERS and STREAMJOBS_DELAY_TIERS; to change the tiers, run "
    "`streamjobs topics ensure` with the new values and keep the old ones in the list until "
    "their backlog is 0 (`streamjobs inspect`)"
)


def topic_specs(settings: Settings) -> list[client.TopicSpec]:
    """What ``ensure`` creates. Tiers share the main topic's partition count so a key keeps
    its partition number on every hop."""
    names = queue_topics(settings)
    parts, rf = settings.partitions, settings.replication_factor
    max_bytes = str(settings.max_message_bytes + 1024)
    plain = {"max.message.bytes": max_bytes}
    status_retention = str(int(settings.status_retention.total_seconds() * 1000))
    specs = [client.TopicSpec(names.main, parts, rf, plain)]
    specs += [client.TopicSpec(t, parts, rf, plain) for t in names.retry.values()]
    specs += [client.TopicSpec(t, parts, rf, plain) for t in names.delay.values()]
    specs.append(
        client.TopicSpec(names.dlq, parts, rf, {**plain, "retention.ms": str(365 * _DAY_MS)})
    )
    # the redrive ledger: one record per re-driven dead letter, so none is re-driven twice
    specs.append(
        client.TopicSpec(names.redriven, 1, rf, {"cleanup.policy": "compact", "retention.ms": "-1"})
    )
    # the crash ledger: start counts of tasks that may have killed a worker (worker/quarantine.py)
    specs.append(client.TopicSpec(names.starts, 1, rf, {"cleanup.policy": "compact"}))
    specs.append(client.TopicSpec(names.status, parts, rf, status_config(status_retention)))
    specs.append(
        client.TopicSpec(names.schemas, 1, rf, {"cleanup.policy": "compact", "retention.ms": "-1"})
    )
    # recurring tasks: definitions and states; one partition, whose owner is the scheduling leader
    specs.append(
        client.TopicSpec(
            names.schedules, 1, rf, {"cleanup.policy": "compact", "retention.ms": "-1"}
        )
    )
    # worker heartbeats (streamjobs.metrics.heartbeat): the latest report per worker; a killed
    # worker's last report is deleted a day later (graceful stops write a tombstone at once)
    specs.append(client.TopicSpec(names.workers, 1, rf, _WORKERS_CONFIG))
    return specs


_WORKERS_CONFIG = {
    "cleanup.policy": "compact,delete",
    "retention.ms": str(_DAY_MS),
    "segment.ms": str(3_600_000),
    "min.cleanable.dirty.ratio": "0.1",
}


def status_config(delete_retention_ms: str) -> dict[str, str]:
    """A compacted topic: the latest status per task id survives; tombstones expire results."""
    return {
        "cleanup.policy": "compact",
        "delete.retention.ms": delete_retention_ms,
        "min.cleanable.dirty.ratio": "0.1",
        "segment.ms": str(3_600_000),
    }


def ensure(settings: Settings) -> list[str]:
    """Create the queue's missing topics, then verify them all. Returns the created names."""
    admin = client.new_admin(settings)
    existing = admin.topic_partitions()
    missing = [s for s in topic_specs(settings) if s.name not in existing]
    admin.create_topics(missing)
    _await_visible(admin, [s.name for s in missing])
    verify(settings)
    return [s.name for s in missing]


def _await_visible(admin: client.KafkaAdmin, names: list[str], timeout: float = 30.0) -> None:
    """Created topics reach the metadata cache a moment after CreateTopics returns."""
    deadline = time.monotonic() + timeout
    while names:
        existing = admin.topic_partitions()
        names = [n for n in names if n not in existing]
        if names and time.monotonic() > deadline:
            raise TopicError(f"created topics not visible after {timeout}s: {names}")
        if names:
            time.sleep(0.1)  # metadata propagation has no event to wait on


def verify(settings: Settings) -> None:
    """Raise TopicError naming every topic that is missing or misconfigured."""
    admin = client.new_admin(settings)
    specs = topic_specs(settings)
    existing = admin.topic_partitions()
    problems = [f"{s.name}: missing" for s in specs if s.name not in existing]
    # settings.partitions only sizes new topics; what must hold is that every tier has the main
    # topic's partition count, so a key keeps its partition number on every hop
    names = queue_topics(settings)
    main_count = existing.get(names.main)
    problems += [
        f"{t}: {existing[t]} partitions, but {names.main} has {main_count}"
        for t in names.task_topics
        if main_count is not None and t in existing and existing[t] != main_count
    ]
    present = [s for s in specs if s.name in existing]
    configs = admin.topic_configs([s.name for s in present]) if present else {}
    for spec in present:
        policy = spec.config.get("cleanup.policy")
        actual = configs.get(spec.name, {}).get("cleanup.policy")
        if policy and actual != policy:
            problems.append(f"{spec.name}: cleanup.policy={actual}, expected {policy}")
    if problems:
        drift = compare_tiers(settings, existing)
        if drift.missing and drift.extra:  # tiers changed, or this command lacks the variables
            problems.append(
                "tier topics on the cluster not in the settings: " + ", ".join(drift.extra)
            )
            problems.append(TIERS_CHANGED_HINT)
        raise TopicError("topics not as expected:\n  " + "\n  ".join(problems))
