"""Prometheus metrics of workers and producers: prometheus-client's one home.

Owns every metric name and label (``streamjobs_`` prefix, named after celery-exporter's and the
Sidekiq exporters' conventions; the README's "Monitoring" section documents each), the two
middleware that count (:class:`WorkerMetrics` for handler attempts, :class:`SubmitMetrics` for
a producer, usable in a web app's own ``/metrics``), the collector that reads a worker's gauges
from its stats when scraped (in flight, parked, partitions with their lag and last-commit age,
poll loop age) and the exposition text. Attempts are **counters** that only grow, never gauges
derived from records that compaction may remove. Does not serve HTTP
(:mod:`streamjobs.metrics.endpoint`) or write logs.

Metrics register on ``prometheus_client``'s default registry unless given another: one
``WorkerMetrics`` (and one ``SubmitMetrics``) per registry.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from streamjobs.errors import Cancelled, Discard, Retry
from streamjobs.metrics import running
from streamjobs.metrics.tally import OutcomeTally
from streamjobs.middleware import (
    AttemptContext,
    AttemptOutcome,
    Heard,
    Middleware,
    Outcomes,
    SubmitContext,
    SubmitOutcome,
)
from streamjobs.models import TaskState

if TYPE_CHECKING:
    from streamjobs.worker.loop import Worker

__all__ = [
    "CONTENT_TYPE",
    "DURATION_BUCKETS",
    "REGISTRY",
    "CollectorRegistry",
    "SubmitMetrics",
    "WorkerMetrics",
    "exposition",
    "new_registry",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST
#: Handler durations span milliseconds (e-mails) to an hour (reports).
DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
    600.0, 1800.0, 3600.0,
)  # fmt: skip
SUBMIT_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
_TASK = ("queue", "task")
# a handler steering its own task (Retry, Discard), or a cancelled one, did not fail
_CONTROL = frozenset(f"{c.__module__}.{c.__qualname__}" for c in (Retry, Discard, Cancelled))


def new_registry() -> CollectorRegistry:
    """A registry of its own (tests, or several workers in one process)."""
    return CollectorRegistry(auto_describe=True)


def exposition(registry: CollectorRegistry = REGISTRY) -> bytes:
    """The text format Prometheus scrapes (``CONTENT_TYPE``)."""
    return generate_latest(registry)


class WorkerMetrics(Middleware):
    """Counts each handler attempt's outcome and times it. :meth:`watch` adds what a worker
    keeps itself, read at scrape time: the attempts it started (counted where they start, no
    hook on the attempt's path), the attempts running now, its gauges."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        # plain counts written by the poll thread (the outcome hooks run there), rendered at
        # scrape time
        self.tally = OutcomeTally(DURATION_BUCKETS)
        registry.register(_Outcomes(self.tally))

    def watch(self, worker: Worker) -> None:
        """Export ``worker``'s starts and gauges (read from its stats at each scrape)."""
        self.registry.register(_WorkerGauges(worker))

    def wants_success_contexts(self) -> bool:
        return False  # successes are counted by task type (Outcomes.successes_by_task)

    def outcome_batch(self, heard: Sequence[Heard]) -> None:
        batch = Outcomes.of(heard)
        # the usual case, counted per task type: no context or outcome object built per success
        self.tally.succeeded_many(batch.successes_by_task())
        for ctx, outcome in batch.failures():
            self.outcome(ctx, outcome)

    def outcome(self, ctx: AttemptContext, outcome: AttemptOutcome) -> None:
        seconds = outcome.duration.total_seconds()
        if outcome.state is TaskState.CANCELLED:  # neither a success nor a failure
            self.tally.cancelled(ctx.queue, ctx.task, seconds)
            return
        if outcome.state is TaskState.SUCCEEDED:
            self.tally.succeeded(ctx.queue, ctx.task, seconds)
            return
        tier = None
        if outcome.state is TaskState.RETRY_SCHEDULED:
            tier = f"{outcome.retry_tier.total_seconds() if outcome.retry_tier else 0.0:g}s"
        exception = None if outcome.error_type in _CONTROL else outcome.error_type or ""
        self.tally.failed(
            ctx.queue, ctx.task, seconds, exception=exception, tier=tier, reason=outcome.reason
        )


class _Outcomes(Collector):
    """The tallies' counters and histogram, as families at scrape time."""

    def __init__(self, tally: OutcomeTally) -> None:
        self._tally = tally

    def describe(self) -> Iterable[Metric]:
        return []  # unchecked: label values come and go with the task types seen

    def collect(self) -> Iterable[Metric]:
        succeeded = CounterMetricFamily(
            "streamjobs_task_succeeded", "Attempts that succeeded (outcome written).", labels=_TASK
        )
        cancelled = CounterMetricFamily(
            "streamjobs_task_cancelled",
            "Attempts that ended cancelled (an async handler interrupted, a sync one raising"
            " Cancelled).",
            labels=_TASK,
        )
        failed = CounterMetricFamily(
            "streamjobs_task_failed",
            "Attempts whose handler raised or timed out, by exception type; each is then"
            " retried or dead-lettered.",
            labels=(*_TASK, "exception"),
        )
        retried = CounterMetricFamily(
            "streamjobs_task_retried",
            "Failed attempts given another attempt on a retry tier.",
            labels=(*_TASK, "tier"),
        )
        dead = CounterMetricFamily(
            "streamjobs_task_dead_lettered",
            "Attempts whose task went to the dead-letter topic, by reason.",
            labels=(*_TASK, "reason"),
        )
        duration = HistogramMetricFamily(
            "streamjobs_task_duration_seconds",
            "Wall time of handler attempts, whatever their outcome.",
            labels=_TASK,
        )
        les = [repr(float(b)) for b in self._tally.bounds] + ["+Inf"]  # as the client spells them
        for (queue, task), tally in self._tally.items():
            succeeded.add_metric([queue, task], tally.succeeded)
            cancelled.add_metric([queue, task], tally.cancelled)
            for family, counts in ((failed, tally.failed), (retried, tally.retried),
                                   (dead, tally.dead_lettered)):  # fmt: skip
                for label, count in list(counts.items()):
                    family.add_metric([queue, task, label], count)
            buckets = list(zip(les, tally.cumulative(), strict=True))
            duration.add_metric([queue, task], buckets, tally.duration_sum)
        return [succeeded, cancelled, failed, retried, dead, duration]


class SubmitMetrics(Middleware):
    """Counts submitted task records (confirmed or not) and times the confirmed write; give it
    to ``Producer(settings, middleware=[TracingMiddleware(), SubmitMetrics()])`` and the web
    app's own ``/metrics`` shows them."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self._submitted = Counter(
            "streamjobs_task_submitted",
            "Task records Kafka confirmed (submit, replay, redrive).",
            (*_TASK, "operation"),
            registry=registry,
        )
        self._errors = Counter(
            "streamjobs_task_submit_errors",
            "Task records whose submit failed (not confirmed).",
            (*_TASK, "operation"),
            registry=registry,
        )
        self._latency = Histogram(
            "streamjobs_task_submit_duration_seconds",
            "Wall time of confirmed writes: one submit, or one submit_many batch per task.",
            ("queue",),
            buckets=SUBMIT_BUCKETS,
            registry=registry,
        )

    def submitted(self, ctx: SubmitContext, outcome: SubmitOutcome) -> None:
        labels = (ctx.queue, ctx.task, ctx.operation)
        (self._submitted if outcome.confirmed else self._errors).labels(*labels).inc()
        self._latency.labels(ctx.queue).observe(outcome.duration.total_seconds())


class _WorkerGauges(Collector):
    """A worker's gauges, computed from its stats when scraped (no thread of their own)."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    def describe(self) -> Iterable[Metric]:
        return []  # unchecked collector: families depend on the partitions owned now

    def collect(self) -> Iterable[Metric]:
        worker, stats = self._worker, self._worker.stats
        queue = ",".join(worker.queues)  # a worker serving several queues: all, highest first
        tasks = worker.running_tasks()
        info = InfoMetricFamily(
            "streamjobs_worker", "One per worker process.", labels=("queue", "worker_id", "group")
        )
        info.add_metric([queue, worker.worker_id, worker.settings.group], {})
        yield info
        started = CounterMetricFamily(
            "streamjobs_task_started", "Handler attempts started.", labels=_TASK
        )
        for (task_queue, task), count in list(stats.starts.items()):
            started.add_metric([task_queue, task], count)
        yield started
        yield _gauge("streamjobs_worker_tasks_in_flight", "Tasks taken and not finished yet"
                     " (running or waiting for their key).", queue, worker.in_flight)  # fmt: skip
        yield _gauge("streamjobs_worker_tasks_running", "Handler attempts running now.",
                     queue, len(tasks))  # fmt: skip
        yield _gauge("streamjobs_worker_tasks_parked", "key_ordered: tasks waiting for a retry"
                     " of their key.", queue, worker.parked)  # fmt: skip
        yield _gauge("streamjobs_worker_partitions", "Partitions assigned to this worker.",
                     queue, len(stats.partitions))  # fmt: skip
        age = time.monotonic() - stats.polled_at if stats.polled_at else 0.0
        yield _gauge("streamjobs_worker_poll_age_seconds", "Seconds since the poll loop last"
                     " turned (stays near 0 while the worker is alive).", queue, age)  # fmt: skip
        rejected = CounterMetricFamily(
            "streamjobs_task_rejected",
            "Records dead-lettered without an attempt (undecodable, unknown task type, crash"
            " loop), by reason.",
            labels=("queue", "reason"),
        )
        for reason, count in list(stats.rejected.items()):
            rejected.add_metric([queue, reason], count)
        yield rejected
        settled = CounterMetricFamily(
            "streamjobs_worker_tasks_cancelled",
            "Tasks this worker settled cancelled: before they started (queued, delayed, waiting"
            " for a retry) or during their attempt.",
            labels=("queue",),
        )
        settled.add_metric([queue], stats.cancelled)
        yield settled
        yield from self._partition_gauges()
        oldest = GaugeMetricFamily(
            "streamjobs_task_oldest_running_seconds",
            "Age of the oldest attempt running now, per task type.",
            labels=_TASK,
        )
        now = time.time()
        for task, started_at in running.oldest_by_task(tasks).items():
            oldest.add_metric([queue, task], now - started_at)
        yield oldest

    def _partition_gauges(self) -> Iterator[Metric]:
        labels = ("queue", "topic", "partition")
        lag = GaugeMetricFamily(
            "streamjobs_consumer_lag",
            "Records of an assigned partition after the committed offset.",
            labels=labels,
        )
        age = GaugeMetricFamily(
            "streamjobs_consumer_last_commit_age_seconds",
            "Seconds since this worker last committed the partition (or was assigned it).",
            labels=labels,
        )
        now = time.time()
        for progress in self._worker.stats.partitions:
            queue = self._worker.queue_of(progress.topic)  # a tier topic counts for its queue
            names = [queue, progress.topic, str(progress.partition)]
            if progress.lag is not None:
                lag.add_metric(names, progress.lag)
            age.add_metric(names, now - progress.committed_at)
        yield lag
        yield age


def _gauge(name: str, documentation: str, queue: str, value: float) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, documentation, labels=("queue",))
    gauge.add_metric([queue], value)
    return gauge
