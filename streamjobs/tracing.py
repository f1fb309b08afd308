"""OpenTelemetry for streamjobs, through the API only: span names, attributes and propagation.

Owns every span name and attribute constant, the PRODUCER span of ``submit``, the CONSUMER span
a handler runs in, and W3C ``traceparent``/``tracestate`` record headers. Does not configure an
SDK or exporter: the application (or ``streamjobs consume``) owns that; without a provider every
call here is a no-op.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

TRACER_NAME = "streamjobs"
TRACE_HEADERS = ("traceparent", "tracestate")

Headers = list[tuple[str, bytes]]


def _tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def _task_attributes(task: str, task_id: str, attempt: int, topic: str) -> dict[str, Any]:
    return {
        "messaging.system": "kafka",
        "messaging.destination.name": topic,
        "streamjobs.task": task,
        "streamjobs.task_id": task_id,
        "streamjobs.attempt": attempt,
    }


@contextmanager
def submit_span(task: str, task_id: str, topic: str, key: str | None) -> Iterator[Headers]:
    """A PRODUCER span around a submit; yields the trace headers to put on the record."""
    attributes = _task_attributes(task, task_id, 1, topic)
    attributes["messaging.operation.type"] = "send"
    if key is not None:
        attributes["messaging.kafka.message.key"] = key
    with _tracer().start_as_current_span(
        f"send {topic}", kind=SpanKind.PRODUCER, attributes=attributes
    ):
        yield inject()


def inject() -> Headers:
    """The current context as W3C record headers (empty when no span is recording)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [(k, v.encode()) for k, v in carrier.items() if k in TRACE_HEADERS]


def extract(headers: Sequence[tuple[str, bytes | None]] | None) -> otel_context.Context:
    """Context from record headers; garbage is ignored and yields a fresh (root) context."""
    carrier: dict[str, str] = {}
    for name, value in headers or ():
        if name in TRACE_HEADERS and value is not None:
            try:
                carrier[name] = value.decode("ascii")
            except UnicodeDecodeError:
                continue
    try:
        return propagate.extract(carrier)
    except Exception:  # a propagator must never fail a task
        return otel_context.Context()


@contextmanager
def process_span(
    headers: Sequence[tuple[str, bytes | None]] | None,
    *,
    task: str,
    task_id: str,
    attempt: int,
    topic: str,
    partition: int,
    offset: int,
    group: str,
) -> Iterator[Span]:
    """The CONSUMER span a handler runs in, a child of the submit (or previous hop) span."""
    attributes = _task_attributes(task, task_id, attempt, topic)
    attributes.update(
        {
            "messaging.operation.type": "process",
            "messaging.destination.partition.id": str(partition),
            "messaging.kafka.offset": offset,
            "messaging.consumer.group.name": group,
        }
    )
    with _tracer().start_as_current_span(
        f"process {topic}",
        context=extract(headers),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


def record_failure(span: Span, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


def trace_id_of(span: Span) -> str | None:
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None
