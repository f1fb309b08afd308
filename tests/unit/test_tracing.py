"""Trace propagation without a broker: span kinds, parents, attributes, garbage headers, edge setup.

Spans go to the SDK's in-memory exporter through the test provider (``spans`` fixture). What
needs a process without that provider (no SDK at all) runs in a subprocess; the edge's SDK
setup is tested in ``test_telemetry.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from streamjobs import tracing
from streamjobs.errors import Discard, Retry
from streamjobs.middleware import AttemptContext, Middleware, MiddlewareChain, SubmitContext

REPO = Path(__file__).resolve().parents[2]
TOPIC = "sj.default"
VALID_PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
VALID_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def _process(headers: tracing.RecordHeaders, attempt: int = 1, topic: str = TOPIC) -> ReadableSpan:
    """Run an empty handler under ``process_span`` and return the span it ran in."""
    holder: list[trace.Span] = []
    with tracing.process_span(
        headers,
        task="add",
        task_id="t-1",
        attempt=attempt,
        topic=topic,
        partition=2,
        offset=41,
        group="sj.default.workers",
    ) as span:
        holder.append(span)
    finished = holder[0]
    assert isinstance(finished, ReadableSpan)
    return finished


def _submit(key: str | None = "k") -> tuple[ReadableSpan, tracing.Headers]:
    with tracing.submit_span("add", "t-1", TOPIC, key) as headers:
        current = trace.get_current_span()
    assert isinstance(current, ReadableSpan)
    return current, headers


def _hex(trace_id: int) -> str:
    return format(trace_id, "032x")


def test_submit_span_is_a_producer_span_with_messaging_attributes(
    spans: InMemorySpanExporter,
) -> None:
    send, _ = _submit(key="customer-7")

    assert send.name == f"send {TOPIC}"
    assert send.kind is SpanKind.PRODUCER
    assert send.parent is None
    assert dict(send.attributes or {}) == {
        "messaging.system": "kafka",
        "messaging.destination.name": TOPIC,
        "messaging.operation.name": "send",
        "messaging.operation.type": "send",
        "messaging.kafka.message.key": "customer-7",
        "streamjobs.task": "add",
        "streamjobs.task_id": "t-1",
        "streamjobs.attempt": 1,
    }
    assert [s.context.span_id for s in spans.get_finished_spans()] == [send.context.span_id]


def test_submit_span_without_key_has_no_message_key(spans: InMemorySpanExporter) -> None:
    send, _ = _submit(key=None)
    assert "messaging.kafka.message.key" not in (send.attributes or {})


def test_submit_headers_carry_the_producer_span_context(spans: InMemorySpanExporter) -> None:
    send, headers = _submit()

    names = [name for name, _ in headers]
    assert "traceparent" in names
    traceparent = dict(headers)["traceparent"].decode()
    ids = f"{_hex(send.context.trace_id)}-{send.context.span_id:016x}"
    assert traceparent == f"00-{ids}-{send.context.trace_flags:02x}"


def test_process_span_is_a_consumer_child_of_the_submit_span(spans: InMemorySpanExporter) -> None:
    send, headers = _submit()
    process = _process(headers)

    assert process.name == f"process {TOPIC}"
    assert process.kind is SpanKind.CONSUMER
    assert process.context.trace_id == send.context.trace_id
    assert process.parent is not None
    assert process.parent.span_id == send.context.span_id
    assert process.parent.is_remote


def test_process_span_carries_kafka_coordinates_and_task_attributes(
    spans: InMemorySpanExporter,
) -> None:
    process = _process([("traceparent", VALID_PARENT.encode())], attempt=3)

    assert dict(process.attributes or {}) == {
        "messaging.system": "kafka",
        "messaging.destination.name": TOPIC,
        "messaging.destination.partition.id": "2",
        "messaging.kafka.offset": 41,
        "messaging.consumer.group.name": "sj.default.workers",
        "messaging.operation.name": "process",
        "messaging.operation.type": "process",
        "streamjobs.task": "add",
        "streamjobs.task_id": "t-1",
        "streamjobs.attempt": 3,
    }


def test_spans_a_handler_starts_nest_under_its_process_span(spans: InMemorySpanExporter) -> None:
    with (
        tracing.process_span(
            [("traceparent", VALID_PARENT.encode())],
            task="add",
            task_id="t-1",
            attempt=1,
            topic=TOPIC,
            partition=0,
            offset=0,
            group="g",
        ) as process,
        trace.get_tracer("handler").start_as_current_span("GET /prices") as child,
    ):
        pass

    assert isinstance(child, ReadableSpan)
    assert child.parent is not None
    assert child.parent.span_id == process.get_span_context().span_id
    assert _hex(child.context.trace_id) == VALID_TRACE_ID


def test_handler_sees_the_baggage_the_submitter_sent(spans: InMemorySpanExporter) -> None:
    token = otel_context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        _, headers = _submit()
    finally:
        otel_context.detach(token)
    assert baggage.get_baggage("tenant") is None

    with tracing.process_span(
        headers, task="add", task_id="t-1", attempt=1, topic=TOPIC, partition=0, offset=0, group="g"
    ):
        seen = baggage.get_baggage("tenant")

    assert seen == "acme"


def test_headers_injected_during_an_attempt_chain_every_attempt_into_one_trace(
    spans: InMemorySpanExporter,
) -> None:
    send, headers = _submit()
    attempts: list[ReadableSpan] = []
    for attempt in (1, 2, 3):
        with tracing.process_span(
            headers,
            task="add",
            task_id="t-1",
            attempt=attempt,
            topic=TOPIC if attempt == 1 else f"{TOPIC}.retry.1s",
            partition=0,
            offset=attempt,
            group="g",
        ) as span:
            headers = tracing.inject()  # what the worker puts on the retry record
        assert isinstance(span, ReadableSpan)
        attempts.append(span)

    assert {s.context.trace_id for s in attempts} == {send.context.trace_id}
    parents = [s.parent.span_id if s.parent else None for s in attempts]
    assert parents == [
        send.context.span_id,
        attempts[0].context.span_id,
        attempts[1].context.span_id,
    ]


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([("traceparent", b"garbage")], id="not-a-traceparent"),
        pytest.param([("traceparent", b"\xff\xfe\x00\x81")], id="not-ascii"),
        pytest.param([("traceparent", VALID_PARENT.upper().encode())], id="uppercase-hex"),
        pytest.param([("traceparent", b"00-" + b"0" * 32 + b"-00f067aa0ba902b7-01")], id="zero-id"),
        pytest.param([("traceparent", b"ff" + VALID_PARENT[2:].encode())], id="version-ff"),
        pytest.param([("traceparent", VALID_PARENT.encode()[:-3])], id="truncated"),
        pytest.param([("traceparent", b"00-" + b"a" * 20_000)], id="oversized"),
        pytest.param([("traceparent", None)], id="null-value"),
        pytest.param([("traceparent", b"")], id="empty"),
        pytest.param([], id="no-headers"),
        pytest.param(None, id="headers-none"),
    ],
)
def test_garbage_trace_headers_start_a_fresh_trace(
    spans: InMemorySpanExporter, headers: tracing.RecordHeaders
) -> None:
    process = _process(headers)

    assert process.parent is None
    assert process.context.is_valid
    assert _hex(process.context.trace_id) != VALID_TRACE_ID


def test_garbage_tracestate_keeps_a_valid_traceparent(spans: InMemorySpanExporter) -> None:
    headers = [("traceparent", VALID_PARENT.encode()), ("tracestate", b"\x00=={{,,bad")]
    process = _process(headers)

    assert process.parent is not None
    assert _hex(process.context.trace_id) == VALID_TRACE_ID


def test_headers_the_propagator_does_not_own_are_ignored(spans: InMemorySpanExporter) -> None:
    process = _process([("x-trace", VALID_PARENT.encode()), ("task", b"\xff")])
    assert process.parent is None


def test_extract_never_raises_when_the_propagator_does(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object, **_kwargs: object) -> otel_context.Context:
        raise ValueError("propagator bug")

    monkeypatch.setattr("opentelemetry.propagate.extract", broken)

    assert tracing.extract([("traceparent", VALID_PARENT.encode())]) == otel_context.Context()
    assert _process([("traceparent", VALID_PARENT.encode())]).parent is None


def test_inject_outside_any_span_writes_no_trace_headers(spans: InMemorySpanExporter) -> None:
    assert tracing.inject() == []


def test_replay_span_starts_a_new_trace_linked_to_the_original(
    spans: InMemorySpanExporter,
) -> None:
    original = [("traceparent", VALID_PARENT.encode())]
    with tracing.replay_span(
        original, operation="redrive", task="add", task_id="t-1", topic=TOPIC, key="k"
    ) as headers:
        redrive = trace.get_current_span()
    process = _process(headers)

    assert isinstance(redrive, ReadableSpan)
    assert redrive.name == f"redrive {TOPIC}"
    assert redrive.kind is SpanKind.PRODUCER
    assert redrive.parent is None
    assert _hex(redrive.context.trace_id) != VALID_TRACE_ID
    assert [(_hex(link.context.trace_id), link.context.span_id) for link in redrive.links] == [
        (VALID_TRACE_ID, 0x00F067AA0BA902B7)
    ]
    assert (redrive.attributes or {})["messaging.operation.name"] == "redrive"
    assert process.parent is not None
    assert process.parent.span_id == redrive.context.span_id


def test_replay_span_of_a_record_without_context_has_no_link(
    spans: InMemorySpanExporter,
) -> None:
    with tracing.replay_span(
        [("traceparent", b"garbage")], operation="replay", task="add", task_id="t-1", topic=TOPIC
    ):
        replay = trace.get_current_span()

    assert isinstance(replay, ReadableSpan)
    assert replay.name == f"replay {TOPIC}"
    assert list(replay.links) == []


def test_record_failure_marks_the_span_failed_with_the_exception_type(
    spans: InMemorySpanExporter,
) -> None:
    with tracing.process_span(
        None, task="add", task_id="t-1", attempt=1, topic=TOPIC, partition=0, offset=0, group="g"
    ) as span:
        tracing.record_failure(span, ValueError("three is bad"))
    assert isinstance(span, ReadableSpan)

    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "ValueError: three is bad"
    assert (span.attributes or {})["error.type"] == "ValueError"
    assert [event.name for event in span.events] == ["exception"]


def test_a_discard_is_a_failure_but_a_retry_request_is_not(spans: InMemorySpanExporter) -> None:
    for exc in (Discard("stale"), Retry(message="rate limited")):
        with tracing.process_span(
            None, task="a", task_id="t", attempt=1, topic=TOPIC, partition=0, offset=0, group="g"
        ) as span:
            tracing.record_failure(span, exc)
    discarded, retried = spans.get_finished_spans()

    assert discarded.status.status_code is StatusCode.ERROR
    assert (discarded.attributes or {})["error.type"] == "streamjobs.errors.Discard"
    assert retried.status.status_code is StatusCode.UNSET
    assert [(e.name, dict(e.attributes or {})) for e in retried.events] == [
        ("streamjobs.retry_requested", {"streamjobs.retry.reason": "rate limited"})
    ]


def test_trace_id_of_is_the_32_hex_digit_id_jaeger_shows(spans: InMemorySpanExporter) -> None:
    with tracing.process_span(
        [("traceparent", VALID_PARENT.encode())],
        task="a",
        task_id="t",
        attempt=1,
        topic=TOPIC,
        partition=0,
        offset=0,
        group="g",
    ) as span:
        assert tracing.trace_id_of(span) == VALID_TRACE_ID
    assert tracing.trace_id_of(trace.INVALID_SPAN) is None


# -- TracingMiddleware: the same spans through the middleware chain -----------------------------


def _attempt_ctx(headers: tracing.Headers, attempt: int = 1) -> AttemptContext:
    return AttemptContext(
        task_id="t-1",
        task="add",
        key="k",
        attempt=attempt,
        queue="default",
        topic=TOPIC,
        partition=2,
        offset=41,
        group="sj.default.workers",
        worker_id="w-1",
        headers=tuple(headers),
    )


def _submit_ctx(**overrides: Any) -> SubmitContext:
    fields: dict[str, Any] = {"task_id": "t-1", "task": "add", "key": "k", "queue": "default"}
    return SubmitContext(**{**fields, "topic": TOPIC, **overrides})


def test_tracing_middleware_wraps_a_submit_in_a_send_span_whose_context_rides_on_the_record(
    spans: InMemorySpanExporter,
) -> None:
    ctx = _submit_ctx()
    with MiddlewareChain([tracing.TracingMiddleware()]).submit(ctx):
        send = trace.get_current_span()
    assert isinstance(send, ReadableSpan)

    assert send.name == f"send {TOPIC}"
    assert send.kind is SpanKind.PRODUCER
    (process,) = [_process(ctx.headers)]
    assert process.parent is not None
    assert process.parent.span_id == send.context.span_id


def test_tracing_middleware_links_a_redriven_task_to_its_original_trace(
    spans: InMemorySpanExporter,
) -> None:
    ctx = _submit_ctx(operation="redrive", origin_headers=(("traceparent", VALID_PARENT.encode()),))
    with MiddlewareChain([tracing.TracingMiddleware()]).submit(ctx):
        redrive = trace.get_current_span()
    assert isinstance(redrive, ReadableSpan)

    assert redrive.name == f"redrive {TOPIC}"
    assert [_hex(link.context.trace_id) for link in redrive.links] == [VALID_TRACE_ID]
    assert [name for name, _ in ctx.headers] == ["traceparent"]


def test_tracing_middleware_runs_an_attempt_in_a_process_span_continued_by_the_retry_record(
    spans: InMemorySpanExporter,
) -> None:
    chain = MiddlewareChain([tracing.TracingMiddleware()])
    first = _attempt_ctx([("traceparent", VALID_PARENT.encode())])
    with chain.attempt(first):
        trace_id = tracing.current_trace_id()
    second = _attempt_ctx(first.carry_headers, attempt=2)
    with chain.attempt(second):
        pass

    one, two = sorted(spans.get_finished_spans(), key=lambda s: s.start_time or 0)
    assert trace_id == VALID_TRACE_ID
    assert (one.name, one.kind) == (f"process {TOPIC}", SpanKind.CONSUMER)
    assert _hex(two.context.trace_id) == VALID_TRACE_ID
    assert two.parent is not None
    assert two.parent.span_id == one.context.span_id


def test_tracing_middleware_marks_the_span_of_a_failed_attempt_even_when_another_swallows_it(
    spans: InMemorySpanExporter,
) -> None:
    class Swallower(Middleware):
        @contextmanager
        def attempt(self, ctx: AttemptContext) -> Iterator[None]:
            with suppress(Exception):
                yield

    chain = MiddlewareChain([tracing.TracingMiddleware(), Swallower()])
    with pytest.raises(ValueError, match="three is bad"), chain.attempt(_attempt_ctx([])):
        raise ValueError("three is bad")

    (span,) = spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "ValueError"


# -- processes without the test provider --------------------------------------------------------


def _python(code: str, env: dict[str, str] | None = None) -> str:
    """Run ``code`` in a fresh interpreter (no test provider installed); return its stdout."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_library_path_never_imports_the_sdk() -> None:
    out = _python(
        """
        import sys
        import streamjobs, streamjobs.producer, streamjobs.worker.loop, streamjobs.tracing
        print(sorted(m for m in sys.modules if m.startswith("opentelemetry.sdk")))
        print("streamjobs.telemetry" in sys.modules)
        """
    )
    assert out.splitlines() == ["[]", "False"]


def test_a_provider_installed_after_the_first_submit_is_seen_by_the_next() -> None:
    out = _python(
        """
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from streamjobs import tracing
        print(tracing.active(), tracing.active())
        trace.set_tracer_provider(TracerProvider())
        print(tracing.active())
        """
    )
    assert out.splitlines() == ["False False", "True"]


def test_without_a_provider_an_incoming_trace_passes_through_to_retry_records() -> None:
    out = _python(
        f"""
        from streamjobs import tracing
        with tracing.process_span(
            [("traceparent", b"{VALID_PARENT}")],
            task="a", task_id="t", attempt=1, topic="q", partition=0, offset=0, group="g",
        ) as span:
            print(tracing.trace_id_of(span), dict(tracing.inject())["traceparent"].decode())
        with tracing.submit_span("a", "t", "q", None) as headers:
            print(headers)
        """
    )
    assert out.splitlines() == [f"{VALID_TRACE_ID} {VALID_PARENT}", "[]"]


def test_without_a_provider_the_middleware_adds_no_headers_but_passes_an_incoming_trace_on() -> (
    None
):
    out = _python(
        f"""
        from streamjobs.middleware import AttemptContext, MiddlewareChain, SubmitContext
        from streamjobs.tracing import TracingMiddleware
        chain = MiddlewareChain([TracingMiddleware()])
        submit = SubmitContext(task_id="t", task="a", key=None, queue="q", topic="q")
        with chain.submit(submit):
            pass
        attempt = AttemptContext(
            task_id="t", task="a", key=None, attempt=1, queue="q", topic="q", partition=0,
            offset=0, group="g", worker_id="w", headers=(("traceparent", b"{VALID_PARENT}"),),
        )
        with chain.attempt(attempt):
            pass
        print(submit.headers, dict(attempt.carry_headers)["traceparent"].decode())
        """
    )
    assert out.split() == ["[]", VALID_PARENT]


def test_every_span_name_and_attribute_key_is_a_constant_of_the_tracing_module() -> None:
    keys = {v for k, v in vars(tracing).items() if k.startswith(("ATTR_", "EVENT_"))}
    ops = {v for k, v in vars(tracing).items() if k.startswith("OP_")}
    assert ops == {"send", "process", "replay", "redrive"}
    assert all(key.startswith(("messaging.", "streamjobs.", "error.")) for key in keys)


def test_a_fire_span_names_its_schedule_and_parents_the_fired_tasks_producer_span(
    spans: InMemorySpanExporter,
) -> None:
    with tracing.fire_span("nightly-cleanup", 1_000, 12):
        producer, headers = _submit()
    fire = next(s for s in spans.get_finished_spans() if s.name == "fire nightly-cleanup")
    assert fire.attributes is not None
    assert fire.attributes[tracing.ATTR_SCHEDULE] == "nightly-cleanup"
    assert fire.attributes["streamjobs.schedule.lateness_ms"] == 12
    assert producer.parent is not None
    assert producer.parent.span_id == fire.context.span_id
    holder: list[trace.Span] = []
    with tracing.process_span(
        headers,
        task="add",
        task_id="t-1",
        attempt=1,
        topic=TOPIC,
        partition=0,
        offset=0,
        group="g",
        schedule="nightly-cleanup",
    ) as span:
        holder.append(span)
    process = holder[0]
    assert isinstance(process, ReadableSpan)
    assert process.attributes is not None
    assert process.attributes[tracing.ATTR_SCHEDULE] == "nightly-cleanup"
    assert process.context.trace_id == fire.context.trace_id
