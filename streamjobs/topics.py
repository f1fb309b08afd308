"""Topic policy: names, partition counts and configs of every topic of a queue, in one place.

Owns the naming scheme (``<prefix>.<queue>``, ``.retry.<delay>``, ``.delay.<delay>``, ``.dlq``,
``<prefix>.status``, ``<prefix>.submitted``, ``<prefix>.schemas``, ``<prefix>.schedules``,
``<prefix>.workers``, ``<prefix>.cancels``), the configuration each topic needs, its replication
(``replication_factor`` and ``min.insync.replicas`` from settings, or derived from the broker count:
3 and 2 on a real cluster, 1 and 1 on a single development broker), ``ensure``/``verify``, and
:func:`tier_drift`: the queue's tier topics on the cluster against the tiers of the settings (tiers
changed, or a command run without the workers' ``STREAMJOBS_RETRY_TIERS``). streamjobs never relies
on broker auto-creation. Does not produce or consume records.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
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
    #: the compacted "submitted" facts of new tasks (their ``queued``/``scheduled`` record)
    submitted: str
    schemas: str
    schedules: str
    workers: str
    cancels: str
    queue: str = ""

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
        submitted=f"{settings.topic_prefix}.submitted",
        schemas=f"{settings.topic_prefix}.schemas",
        schedules=f"{settings.topic_prefix}.schedules",
        workers=f"{settings.topic_prefix}.workers",
        cancels=f"{settings.topic_prefix}.cancels",
        queue=settings.queue,
    )


@dataclass(frozen=True)
class ServedTopics:
    """The topics of every queue one worker serves, highest priority first.

    A retry or delay tier belongs to its queue: :meth:`of` finds the queue of any task topic, so
    a retry goes to the tier of the queue its record came from, and keeps that queue's priority.
    """

    queues: tuple[QueueTopics, ...]
    _rank: dict[str, int] = field(init=False, repr=False, compare=False)
    _delay: dict[str, timedelta | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rank = {t: i for i, q in enumerate(self.queues) for t in q.task_topics}
        object.__setattr__(self, "_rank", rank)
        delay = {t: q.tier_delay(t) for q in self.queues for t in q.task_topics}
        object.__setattr__(self, "_delay", delay)  # asked for every record: a lookup

    @property
    def first(self) -> QueueTopics:
        return self.queues[0]

    @property
    def task_topics(self) -> list[str]:
        return [t for q in self.queues for t in q.task_topics]

    def of(self, topic: str) -> QueueTopics:
        """The queue whose task topic ``topic`` is (the first queue for any other topic)."""
        return self.queues[self.rank(topic)]

    def rank(self, topic: str) -> int:
        """The priority rank of ``topic``'s queue: 0 for the first (highest)."""
        return self._rank.get(topic, 0)

    def tier_delay(self, topic: str) -> timedelta | None:
        """The fixed delay of a tier topic, or None for a main topic."""
        return self._delay.get(topic)


def served_topics(settings: Settings) -> ServedTopics:
    """The topics of ``settings.served_queues``, in priority order."""
    return ServedTopics(
        tuple(queue_topics(settings.for_queue(name)) for name, _ in settings.served_queues)
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


@dataclass(frozen=True)
class Replication:
    """Replicas per partition and ``min.insync.replicas`` for the topics of a queue.

    ``factor`` -1 leaves it to the broker's ``default.replication.factor``; ``min_insync`` None
    to the broker's ``min.insync.replicas``. ``brokers`` is the count it was derived from.
    """

    factor: int
    min_insync: int | None
    brokers: int | None = None
    derived: bool = False

    def describe(self) -> str:
        factor = "broker default" if self.factor < 0 else str(self.factor)
        isr = "broker default" if self.min_insync is None else str(self.min_insync)
        text = f"replication factor {factor}, min.insync.replicas {isr}"
        if self.derived and self.brokers is not None:
            text += f" (derived from {self.brokers} broker{'s' if self.brokers != 1 else ''}"
            text += "; a single node is for development only)" if self.brokers < 3 else ")"
        return text


def replication(settings: Settings, brokers: int | None) -> Replication:
    """The replication topics get: the settings', else derived from ``brokers`` (None when the
    cluster is unknown: the broker's defaults). Three replicas with two in sync tolerate one
    broker down without refusing writes (``acks=all``) or losing acknowledged records."""
    factor = settings.replication_factor
    derived = factor is None
    if factor is None:
        factor = -1 if brokers is None else min(3, max(1, brokers))
    min_insync = settings.min_insync_replicas
    if min_insync is None and factor > 0:
        min_insync = max(1, factor - 1)
    return Replication(factor, min_insync, brokers, derived)


def topic_specs(settings: Settings, replicas: Replication | None = None) -> list[client.TopicSpec]:
    """What ``ensure`` creates, with ``replicas`` (default: from settings, for a cluster of
    unknown size). Tiers share the main topic's partition count so a key keeps its partition
    number on every hop."""
    names = queue_topics(settings)
    replicas = replicas or replication(settings, None)
    parts, rf = settings.partitions, replicas.factor
    isr = {} if replicas.min_insync is None else {"min.insync.replicas": str(replicas.min_insync)}
    max_bytes = str(settings.max_message_bytes + 1024)
    plain = {"max.message.bytes": max_bytes, **isr}
    status_retention = str(int(settings.status_retention.total_seconds() * 1000))
    specs = [client.TopicSpec(names.main, parts, rf, plain)]
    specs += [client.TopicSpec(t, parts, rf, plain) for t in names.retry.values()]
    specs += [client.TopicSpec(t, parts, rf, plain) for t in names.delay.values()]
    specs.append(
        client.TopicSpec(names.dlq, parts, rf, {**plain, "retention.ms": str(365 * _DAY_MS)})
    )
    # the redrive ledger: one record per re-driven dead letter, so none is re-driven twice
    forever = {"cleanup.policy": "compact", "retention.ms": "-1", **isr}
    specs.append(client.TopicSpec(names.redriven, 1, rf, forever))
    # the crash ledger: start counts of tasks that may have killed a worker (worker/quarantine.py)
    specs.append(client.TopicSpec(names.starts, 1, rf, {"cleanup.policy": "compact", **isr}))
    specs.append(
        client.TopicSpec(names.status, parts, rf, {**status_config(status_retention), **isr})
    )
    # what submit wrote for a new task, apart from the statuses it can then never overwrite
    # (streamjobs.confirmed); compacted and expired like the statuses
    specs.append(
        client.TopicSpec(names.submitted, parts, rf, {**status_config(status_retention), **isr})
    )
    specs.append(client.TopicSpec(names.schemas, 1, rf, forever))
    # recurring tasks: definitions and states; one partition, whose owner is the scheduling leader
    specs.append(client.TopicSpec(names.schedules, 1, rf, forever))
    # worker heartbeats (streamjobs.metrics.heartbeat): the latest report per worker; a killed
    # worker's last report is deleted a day later (graceful stops write a tombstone at once)
    specs.append(client.TopicSpec(names.workers, 1, rf, {**_WORKERS_CONFIG, **isr}))
    # cancel requests (streamjobs.cancels): every worker reads all of it, so one partition; kept
    # as long as a cancelled task may still be waiting to be reached (see cancels_config)
    specs.append(client.TopicSpec(names.cancels, 1, rf, {**cancels_config(settings), **isr}))
    return specs


def cancels_config(settings: Settings) -> dict[str, str]:
    """The latest cancel per task id, deleted ``max_future`` + ``status_retention`` after it
    was requested: by then the task was reached (a delay is at most ``max_future``) and its
    status expired. Workers forget a cancel at the same age (streamjobs.worker.cancels)."""
    keep = settings.max_future + settings.status_retention
    return {
        "cleanup.policy": "compact,delete",
        "retention.ms": str(int(keep.total_seconds() * 1000)),
        "segment.ms": str(_DAY_MS),
    }


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
    replicas = replication(settings, admin.broker_count())
    existing = admin.topic_partitions()
    missing = [s for s in topic_specs(settings, replicas) if s.name not in existing]
    admin.create_topics(missing)
    _await_visible(admin, [s.name for s in missing])
    verify(settings)
    return [s.name for s in missing]


def cluster_replication(settings: Settings) -> Replication:
    """The replication ``ensure`` gives new topics on the cluster ``settings`` point at."""
    return replication(settings, client.new_admin(settings).broker_count())


def _await_visible(admin: client.KafkaAdmin, names: list[str], timeout: float = 30.0) -> None:
    """Created topics reach the metadata cache a moment after CreateTopics returns."""
    if not names:
        return
    missing = [n for n in names if n not in _known(admin, names, timeout)]
    if missing:
        raise TopicError(f"created topics not visible after {timeout}s: {missing}")


def _known(admin: client.KafkaAdmin, names: list[str], timeout: float) -> dict[str, int]:
    """The cluster's topics (with their partition counts), asked again for up to ``timeout``
    seconds while one of ``names`` is not among them. Each broker of a cluster learns a new
    topic on its own, so the one answering may not know yet a topic created a moment ago."""
    deadline = time.monotonic() + timeout
    while True:
        existing = admin.topic_partitions()
        if all(n in existing for n in names) or time.monotonic() >= deadline:
            return existing
        time.sleep(0.1)  # metadata propagation has no event to wait on


def verify(
    settings: Settings, *, replicas_strict: bool = True, appear_within: float = 0.0
) -> list[str]:
    """Raise TopicError naming every topic that is missing or misconfigured.

    A topic with fewer replicas or a lower ``min.insync.replicas`` than the settings ask for is
    misconfigured too; with ``replicas_strict=False`` those are returned instead of raised (a
    worker warns about them and runs). A topic missing is asked for again for up to
    ``appear_within`` seconds: a worker started right after ``topics ensure`` may ask a broker
    of the cluster that has not learnt the new topics yet.
    """
    admin = client.new_admin(settings)
    replicas = replication(settings, admin.broker_count())
    specs = topic_specs(settings, replicas)
    existing = _known(admin, [s.name for s in specs], appear_within)
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
    weak = replication_problems(replicas, admin.topic_replicas(), configs)
    if not replicas_strict:
        _raise_if(problems)
        return weak
    _raise_if(problems + weak)
    return []


def _raise_if(problems: list[str]) -> None:
    if problems:
        raise TopicError("topics not as expected:\n  " + "\n  ".join(problems))


def replication_problems(
    replicas: Replication,
    actual_replicas: dict[str, int],
    configs: dict[str, dict[str, str]],
) -> list[str]:
    """Topics (of ``configs``) replicated less than ``replicas`` asks: fewer replicas on some
    partition, or a lower ``min.insync.replicas``."""
    problems = []
    for name in sorted(configs):
        found = actual_replicas.get(name)
        if replicas.factor > 0 and found is not None and found < replicas.factor:
            problems.append(f"{name}: {found} replicas, settings ask for {replicas.factor}")
        isr = configs[name].get("min.insync.replicas")
        wanted = replicas.min_insync
        if wanted is not None and isr is not None and isr.isdigit() and int(isr) < wanted:
            problems.append(f"{name}: min.insync.replicas={isr}, settings ask for {wanted}")
    return problems
