"""The pure parts of streamjobs.metrics: heartbeat reports and liveness, probes, log formats,
outcome lines and the Prometheus middleware, without a broker."""

from __future__ import annotations

import io
import json
import logging
import urllib.request
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamjobs.errors import Cancelled, Discard
from streamjobs.metrics import health, logs
from streamjobs.metrics.endpoint import Endpoint
from streamjobs.metrics.heartbeat import (
    Liveness,
    WorkerReport,
    classify,
    decode_report,
    encode_report,
    latest_reports,
)
from streamjobs.metrics.prometheus import (
    DURATION_BUCKETS,
    WorkerMetrics,
    exposition,
    new_registry,
)
from streamjobs.metrics.running import RunningTask
from streamjobs.metrics.tally import OutcomeTally
from streamjobs.metrics.tasklog import TaskLog, fields_of, line_of
from streamjobs.middleware import (
    NOTHING_TO_WRAP,
    AttemptContext,
    AttemptOutcome,
    Middleware,
    MiddlewareChain,
)
from streamjobs.models import TaskState
from streamjobs.taskcontext import CurrentTask, running


def report(worker_id: str = "w1", reported_at_ms: int = 10_000, **changes: Any) -> WorkerReport:
    fields: dict[str, Any] = {
        "worker_id": worker_id,
        "host": "h",
        "pid": 7,
        "version": "0.1.0",
        "queue": "default",
        "group": "g",
        "concurrency": 4,
        "started_at_ms": 1_000,
        "reported_at_ms": reported_at_ms,
        "interval_ms": 1_000,
        "partitions": 3,
        "in_flight": 2,
        "parked": 0,
        "started": 10,
        "succeeded": 8,
        "retried": 1,
        "dead_lettered": 0,
        "running": (RunningTask("t1", "Email", "k", 2, 9.5),),
    }
    fields.update(changes)
    return WorkerReport(**fields)


def test_worker_report_round_trips_through_its_avro_schema() -> None:
    original = report()
    assert decode_report(encode_report(original)) == original


def test_worker_is_lost_only_after_more_than_lost_after_of_its_own_intervals() -> None:
    reports = [report("a", reported_at_ms=10_000), report("b", reported_at_ms=6_999)]
    views = {v.report.worker_id: v for v in classify(reports, now_ms=10_000, lost_after=3)}
    assert views["a"].state is Liveness.LIVE
    assert views["b"].state is Liveness.LOST
    assert views["b"].age_ms == 3_001
    at_limit = classify([report("c", reported_at_ms=7_000)], now_ms=10_000, lost_after=3)
    assert at_limit[0].state is Liveness.LIVE


def test_latest_report_per_worker_wins_and_a_tombstone_removes_the_worker() -> None:
    old, new = report("a", reported_at_ms=1), report("a", reported_at_ms=2)
    records = [
        (b"a", encode_report(old)),
        (b"b", encode_report(report("b"))),
        (b"a", encode_report(new)),
        (b"b", None),
        (b"c", b"garbage"),
    ]
    assert latest_reports(records) == [new]


def test_liveness_fails_only_when_a_started_poll_loop_stalls() -> None:
    assert health.liveness(0.0, now=100.0).ok  # still starting
    assert health.liveness(90.0, now=100.0).ok
    stalled = health.liveness(60.0, now=100.0, stall_after=timedelta(seconds=30))
    assert not stalled.ok
    assert stalled.detail == "poll loop stalled for 40.0s"


def test_readiness_needs_a_turning_poll_loop_and_partitions() -> None:
    assert not health.readiness(0.0, now=1.0, partitions=3).ok
    assert health.readiness(99.0, now=100.0, partitions=0).detail == "no partitions assigned"
    assert health.readiness(99.0, now=100.0, partitions=3).ok
    assert not health.readiness(10.0, now=100.0, partitions=3).ok


def test_endpoint_serves_metrics_and_probe_verdicts_with_their_status() -> None:
    endpoint = Endpoint(
        "127.0.0.1",
        0,
        exposition=lambda: (b"m 1\n", "text/plain"),
        live=lambda: health.Verdict(True, "polling"),
        ready=lambda: health.Verdict(False, "no partitions assigned"),
    ).start()
    host, port = endpoint.address
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics") as answer:
            assert answer.read() == b"m 1\n"
        with urllib.request.urlopen(f"http://{host}:{port}/livez") as answer:
            assert answer.status == 200
        with pytest.raises(urllib.error.HTTPError) as failed:
            urllib.request.urlopen(f"http://{host}:{port}/readyz")
        assert failed.value.code == 503
        failed.value.close()
    finally:
        endpoint.close()
    assert host == "127.0.0.1"


def _ctx(**changes: Any) -> AttemptContext:
    fields: dict[str, Any] = {
        "task_id": "abc",
        "task": "Email",
        "key": "user-7",
        "attempt": 2,
        "queue": "default",
        "topic": "sj.default",
        "partition": 1,
        "offset": 42,
        "group": "g",
        "worker_id": "w1",
    }
    fields.update(changes)
    return AttemptContext(**fields)


def test_outcome_line_names_the_task_where_it_ran_and_what_became_of_it() -> None:
    outcome = AttemptOutcome.failure(
        TaskState.RETRY_SCHEDULED,
        timedelta(milliseconds=12.5),
        ValueError("boom"),
        retry_tier=timedelta(seconds=5),
    )
    fields = fields_of(_ctx(), outcome)
    assert fields["outcome"] == "retried"
    assert fields["retry_tier_s"] == 5.0
    assert line_of(fields) == (
        "retried Email task_id=abc key=user-7 attempt=2 queue=default at sj.default[1]@42"
        " in 12.5ms retry_tier=5s: ValueError: boom"
    )


def _records(level: int = logging.DEBUG) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.formatter("json"))
    handler.addFilter(logs.TaskContextFilter())
    logger = logging.getLogger(f"test.outcomes.{id(stream)}")
    logger.propagate = False
    logger.setLevel(level)
    logger.addHandler(handler)
    return logger, stream


def _attempt(chain: MiddlewareChain, ctx: AttemptContext, exc: Exception | None) -> None:
    """Run an attempt through ``chain`` that raises ``exc`` (re-raised by the chain)."""
    if exc is None:
        with chain.attempt(ctx):
            return
    with pytest.raises(type(exc)), chain.attempt(ctx):
        raise exc


def test_a_dead_letter_logs_its_outcome_line_and_its_traceback_at_error() -> None:
    logger, stream = _records()
    chain = MiddlewareChain([TaskLog(logger)])
    ctx = _ctx()
    _attempt(chain, ctx, ValueError("boom"))
    chain.outcome(
        ctx,
        AttemptOutcome.failure(
            TaskState.DEAD_LETTERED, timedelta(0), ValueError("boom"), reason="max_attempts"
        ),
    )
    outcome_line, traceback_line = (json.loads(x) for x in stream.getvalue().splitlines())
    assert outcome_line["level"] == "INFO"
    assert outcome_line["reason"] == "max_attempts"
    assert traceback_line["level"] == "ERROR"
    assert "ValueError: boom" in traceback_line["exception"]


def test_a_discard_logs_its_outcome_but_no_traceback() -> None:
    logger, stream = _records()
    chain = MiddlewareChain([TaskLog(logger)])
    ctx = _ctx()
    _attempt(chain, ctx, Discard("spam"))
    chain.outcome(
        ctx,
        AttemptOutcome.failure(
            TaskState.DEAD_LETTERED, timedelta(0), Discard("spam"), reason="spam"
        ),
    )
    [line] = (json.loads(x) for x in stream.getvalue().splitlines())
    assert line["reason"] == "spam"
    assert "exception" not in line


def test_successes_are_not_even_formatted_below_debug() -> None:
    logger, stream = _records(logging.INFO)
    chain = MiddlewareChain([TaskLog(logger)])
    chain.outcome(_ctx(), AttemptOutcome(TaskState.SUCCEEDED, timedelta(0)))
    assert stream.getvalue() == ""


def test_log_context_tags_records_written_inside_a_handler_call_only() -> None:
    logger, stream = _records()
    with running(CurrentTask("abc", "Email", "user-7", 2)):  # as the worker's handler call
        logger.info("inside")
    logger.info("outside")
    inside, outside = (json.loads(x) for x in stream.getvalue().splitlines())
    assert (inside["task_id"], inside["task"], inside["attempt"]) == ("abc", "Email", 2)
    assert "task_id" not in outside


def test_text_format_appends_the_task_of_a_handler_record() -> None:
    record = logging.LogRecord("h", logging.INFO, "f", 1, "hi %s", ("there",), None)
    with logs.task_context(_ctx()):
        logs.TaskContextFilter().filter(record)
    text = logs.formatter("text").format(record)
    assert text.endswith("INFO h: hi there [task_id=abc task=Email]")


def test_handler_records_carry_the_trace_id_of_the_attempts_span() -> None:
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    span = NonRecordingSpan(SpanContext(0xABC, 0x1, is_remote=False, trace_flags=TraceFlags(1)))
    record = logging.LogRecord("h", logging.INFO, "f", 1, "hi", (), None)
    with trace.use_span(span), logs.task_context(_ctx()):
        logs.TaskContextFilter().filter(record)
    assert record.trace_id == format(0xABC, "032x")


def test_unknown_log_format_is_refused() -> None:
    with pytest.raises(ValueError, match="text, json"):
        logs.formatter("xml")  # type: ignore[arg-type]


def test_worker_metrics_count_attempts_by_outcome_and_time_them() -> None:
    registry = new_registry()
    metrics = WorkerMetrics(registry)
    chain = MiddlewareChain([metrics])
    for state, exc, extra in (
        (TaskState.SUCCEEDED, None, {}),
        (TaskState.RETRY_SCHEDULED, OSError("x"), {"retry_tier": timedelta(seconds=5)}),
        (TaskState.DEAD_LETTERED, OSError("x"), {"reason": "max_attempts"}),
    ):
        ctx = _ctx()
        _attempt(chain, ctx, exc)
        duration = timedelta(seconds=0.2)
        outcome = (
            AttemptOutcome(state, duration)
            if exc is None
            else AttemptOutcome.failure(state, duration, exc, **extra)
        )
        chain.outcome(ctx, outcome)
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(exposition(registry).decode())
        for s in family.samples
    }
    base = (("queue", "default"), ("task", "Email"))
    assert found[("streamjobs_task_succeeded_total", base)] == 1
    assert found[("streamjobs_task_failed_total", (("exception", "OSError"), *base))] == 2
    assert found[("streamjobs_task_retried_total", (*base, ("tier", "5s")))] == 1
    assert found[("streamjobs_task_dead_lettered_total", (*base[:1], ("reason", "max_attempts"),
                                                          base[1]))] == 1  # fmt: skip
    assert found[("streamjobs_task_duration_seconds_count", base)] == 3
    assert found[("streamjobs_task_duration_seconds_bucket", (("le", "0.25"), *base))] == 3


def test_a_cancelled_attempt_is_counted_as_cancelled_and_timed_but_not_as_failed() -> None:
    registry = new_registry()
    chain = MiddlewareChain([WorkerMetrics(registry)])
    ctx = _ctx()
    exc = Cancelled("cancelled by ana")
    _attempt(chain, ctx, exc)
    outcome = AttemptOutcome.failure(
        TaskState.CANCELLED, timedelta(seconds=0.2), exc, reason="cancelled"
    )
    chain.outcome(ctx, outcome)
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(exposition(registry).decode())
        for s in family.samples
    }
    base = (("queue", "default"), ("task", "Email"))
    assert found[("streamjobs_task_cancelled_total", base)] == 1
    assert found[("streamjobs_task_succeeded_total", base)] == 0
    assert found[("streamjobs_task_duration_seconds_count", base)] == 1
    assert not [name for name, _ in found if name.startswith(("streamjobs_task_failed",
                "streamjobs_task_retried", "streamjobs_task_dead_lettered"))]  # fmt: skip


def test_tally_buckets_include_their_upper_bound_as_prometheus_le_does() -> None:
    tally = OutcomeTally((0.1, 1.0))
    for seconds in (0.1, 0.5, 1.0, 7.0):
        tally.succeeded("q", "T", seconds)
    [((queue, task), counts)] = tally.items()
    assert (queue, task) == ("q", "T")
    assert counts.cumulative() == [1, 3, 4]
    assert counts.succeeded == 4
    assert counts.duration_sum == pytest.approx(8.6)


def test_successes_counted_per_task_type_at_once_match_those_counted_one_by_one() -> None:
    durations = [0.004, 0.1, 0.1000001, 0.73, 12.0, 4000.0, 1e-9]
    one_by_one, at_once = OutcomeTally(DURATION_BUCKETS), OutcomeTally(DURATION_BUCKETS)
    for tally in (one_by_one, at_once):
        tally.succeeded("q", "T", 0.3)  # an earlier batch's
    for seconds in durations:
        one_by_one.succeeded("q", "T", seconds)
    one_by_one.succeeded("q", "U", 1.0)
    at_once.succeeded_many({("q", "T"): durations, ("q", "U"): [1.0]})
    expected, got = dict(one_by_one.items()), dict(at_once.items())
    assert got.keys() == expected.keys()
    for key, tally in expected.items():
        assert got[key].buckets == tally.buckets
        assert got[key].succeeded == tally.succeeded
        assert got[key].duration_sum == tally.duration_sum  # the same additions in order


def test_the_task_log_wants_success_contexts_only_while_it_logs_successes() -> None:
    logger, _ = _records(logging.INFO)
    log = TaskLog(logger)
    assert not log.wants_success_contexts()
    logger.setLevel(logging.DEBUG)
    assert log.wants_success_contexts()
    assert not WorkerMetrics(new_registry()).wants_success_contexts()


def test_worker_metrics_put_nothing_on_an_attempts_path() -> None:
    metrics = WorkerMetrics(new_registry())
    assert type(metrics).attempt is Middleware.attempt  # starts are the worker's own count
    assert MiddlewareChain([metrics]).attempt(_ctx()) is NOTHING_TO_WRAP  # no guard built
