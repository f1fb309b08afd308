"""One trace per task against a real broker, read back from the SDK's in-memory exporter.

The worker runs in a thread of the test process, so its spans and the producer's land in the
same exporter (the ``spans`` fixture); each span also names its task id, which is how a test
finds its own spans.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from streamjobs import Producer, Settings, Task, TaskRegistry, TaskState
from streamjobs.envelope import encode_envelope
from streamjobs.topics import queue_topics
from tests.integration.conftest import (
    RawProducer,
    ThreadWorker,
    latest,
    make_envelope,
)
from tests.support import wait_for

pytestmark = pytest.mark.integration


class Add(Task):
    a: int
    b: int


class Flaky(Task):
    token: str
    failures: int


def _spans_of(spans: InMemorySpanExporter, task_id: str) -> list[ReadableSpan]:
    return [
        s
        for s in spans.get_finished_spans()
        if (s.attributes or {}).get("streamjobs.task_id") == task_id
    ]


def _process_spans(spans: InMemorySpanExporter, task_id: str, count: int) -> list[ReadableSpan]:
    """The task's CONSUMER spans in attempt order, once ``count`` of them have ended."""

    def found() -> list[ReadableSpan]:
        done = [s for s in _spans_of(spans, task_id) if s.kind is SpanKind.CONSUMER]
        return done if len(done) >= count else []

    done = wait_for(found, 30.0, message=f"{count} process spans of task {task_id}")
    return sorted(done, key=_attempt)


def _attempt(span: ReadableSpan) -> int:
    attempt = (span.attributes or {}).get("streamjobs.attempt")
    assert isinstance(attempt, int), attempt
    return attempt


def _hex(trace_id: int) -> str:
    return format(trace_id, "032x")


def test_submitted_task_has_a_producer_span_and_a_process_span_as_its_child(
    settings: Settings,
    producer: Producer,
    worker: Callable[..., ThreadWorker],
    spans: InMemorySpanExporter,
) -> None:
    registry = TaskRegistry()

    @registry.handler(Add)
    def add(task: Add) -> int:
        with trace.get_tracer("tests").start_as_current_span("lookup rates"):
            return task.a + task.b

    worker(registry)
    handle = producer.submit(Add(a=2, b=3), key="calc")
    assert handle.wait(30.0) == 5

    (process,) = _process_spans(spans, handle.task_id, 1)
    (send,) = [s for s in _spans_of(spans, handle.task_id) if s.kind is SpanKind.PRODUCER]
    main = queue_topics(settings).main
    assert send.name == f"send {main}"
    assert process.name == f"process {main}"
    assert process.context.trace_id == send.context.trace_id
    assert process.parent is not None
    assert process.parent.span_id == send.context.span_id
    assert process.status.status_code is StatusCode.UNSET
    assert dict(process.attributes or {}) == {
        "messaging.system": "kafka",
        "messaging.destination.name": main,
        "messaging.destination.partition.id": str(handle.partition),
        "messaging.kafka.offset": handle.offset,
        "messaging.consumer.group.name": settings.group,
        "messaging.operation.name": "process",
        "messaging.operation.type": "process",
        "streamjobs.task": Add.task_name,
        "streamjobs.task_id": handle.task_id,
        "streamjobs.attempt": 1,
    }
    assert (send.attributes or {})["messaging.kafka.message.key"] == "calc"
    (lookup,) = [s for s in spans.get_finished_spans() if s.name == "lookup rates"]
    assert lookup.parent is not None
    assert lookup.parent.span_id == process.context.span_id
    view = latest(settings, handle.task_id)
    assert view is not None
    assert view.trace_id == _hex(send.context.trace_id)


def test_async_handler_spans_nest_under_the_process_span(
    producer: Producer, worker: Callable[..., ThreadWorker], spans: InMemorySpanExporter
) -> None:
    registry = TaskRegistry()

    @registry.handler(Add)
    async def add(task: Add) -> int:
        with trace.get_tracer("tests").start_as_current_span("await rates"):
            await asyncio.sleep(0)
            return task.a + task.b

    worker(registry)
    handle = producer.submit(Add(a=1, b=1))
    assert handle.wait(30.0) == 2

    (process,) = _process_spans(spans, handle.task_id, 1)
    (awaited,) = [s for s in spans.get_finished_spans() if s.name == "await rates"]
    assert awaited.parent is not None
    assert awaited.parent.span_id == process.context.span_id


def test_task_retried_twice_has_all_three_attempts_in_one_trace(
    make_settings: Callable[..., Settings],
    worker: Callable[..., ThreadWorker],
    spans: InMemorySpanExporter,
) -> None:
    settings = make_settings(retry_tiers="200ms,400ms", max_attempts=3)
    runs: Counter[str] = Counter()
    registry = TaskRegistry()

    @registry.handler(Flaky)
    def flaky(task: Flaky) -> str:
        runs[task.token] += 1
        if runs[task.token] <= task.failures:
            raise ConnectionError(f"attempt {runs[task.token]} failed")
        return "ok"

    worker(registry, settings)
    with Producer(settings) as producer:
        handle = producer.submit(Flaky(token="t", failures=2), key="flaky")
        assert handle.wait(60.0) == "ok"

    attempts = _process_spans(spans, handle.task_id, 3)
    (send,) = [s for s in _spans_of(spans, handle.task_id) if s.kind is SpanKind.PRODUCER]
    topics = queue_topics(settings)
    assert [_attempt(s) for s in attempts] == [1, 2, 3]
    assert {s.context.trace_id for s in attempts} == {send.context.trace_id}
    parents = [s.parent.span_id if s.parent else None for s in attempts]
    assert parents == [
        send.context.span_id,
        attempts[0].context.span_id,
        attempts[1].context.span_id,
    ]
    assert [s.name for s in attempts] == [
        f"process {topics.main}",
        f"process {topics.retry[settings.retry_tiers[0]]}",
        f"process {topics.retry[settings.retry_tiers[1]]}",
    ]
    assert [s.status.status_code for s in attempts] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    assert (attempts[0].attributes or {})["error.type"] == "ConnectionError"
    assert attempts[0].status.description == "ConnectionError: attempt 1 failed"
    view = latest(settings, handle.task_id)
    assert view is not None
    assert view.state is TaskState.SUCCEEDED
    assert view.trace_id == _hex(send.context.trace_id)


@pytest.mark.parametrize(
    "traceparent",
    [
        pytest.param(b"garbage", id="not-a-traceparent"),
        pytest.param(b"\xff\xfe\x00\x81", id="not-ascii"),
        pytest.param(b"00-" + b"0" * 32 + b"-00f067aa0ba902b7-01", id="zero-trace-id"),
    ],
)
def test_garbage_traceparent_still_runs_the_task_under_a_new_trace(
    settings: Settings,
    raw_producer: RawProducer,
    worker: Callable[..., ThreadWorker],
    spans: InMemorySpanExporter,
    traceparent: bytes,
) -> None:
    registry = TaskRegistry()

    @registry.handler(Add)
    def add(task: Add) -> int:
        return task.a + task.b

    worker(registry)
    envelope = make_envelope(settings, Add(a=20, b=22), key="k")
    raw_producer.produce(
        queue_topics(settings).main,
        encode_envelope(envelope),
        key=b"k",
        headers=[("traceparent", traceparent), ("tracestate", b"\x00{{")],
    )
    task_id = envelope.task_id

    wait_for(
        lambda: (
            (view := latest(settings, task_id)) is not None and view.state is TaskState.SUCCEEDED
        ),
        30.0,
        message="the task with a garbage traceparent to succeed",
    )
    view = latest(settings, task_id)
    assert view is not None
    assert view.result == 42
    (process,) = _process_spans(spans, task_id, 1)
    assert process.parent is None
    assert process.context.is_valid
    assert view.trace_id == _hex(process.context.trace_id)
