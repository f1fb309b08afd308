"""OpenTelemetry for streamjobs: span names, attributes and trace propagation through Kafka.

Owns every span name and attribute key streamjobs emits, the PRODUCER span of ``submit``, the
CONSUMER span a handler runs in, the linked span of a replay or dead-letter redrive, and trace
context in record headers (W3C ``traceparent``/``tracestate`` through the global propagator).
The library path uses the OpenTelemetry *API* only: without an installed provider every call
here is a cheap no-op that still passes an incoming trace context through to retry records.

:class:`TracingMiddleware` is how the producer and the worker use all this: it is their default
middleware (:mod:`streamjobs.middleware`). Installing the SDK and an exporter is the edge's job
(:func:`streamjobs.telemetry.configure`, called by ``streamjobs consume`` or an application),
never this module's.

Deliberately does not: install an SDK or exporter, read the environment (the OTel SDK reads its
standard ``OTEL_*`` variables itself), decide retries or statuses, or let a broken trace header
fail a task (it starts a fresh trace instead).

Spans, per the OpenTelemetry messaging semantic conventions for Kafka::

    send <topic>       PRODUCER  Producer.submit
    └─ process <topic> CONSUMER  attempt 1, the handler's own spans nest under it
       └─ process <retry topic>  attempt 2 (the retry record re-injects the context)
    replay|redrive <topic> PRODUCER, a new span *linked* to the record's original context
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Literal

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

from streamjobs.errors import Retry
from streamjobs.middleware import AttemptContext, Middleware, SubmitContext, error_type

__all__ = [
    "ATTR_ATTEMPT",
    "ATTR_CONSUMER_GROUP",
    "ATTR_DESTINATION",
    "ATTR_ERROR_TYPE",
    "ATTR_MESSAGE_KEY",
    "ATTR_OFFSET",
    "ATTR_OPERATION_NAME",
    "ATTR_OPERATION_TYPE",
    "ATTR_PARTITION",
    "ATTR_RETRY_REASON",
    "ATTR_SCHEDULE",
    "ATTR_SYSTEM",
    "ATTR_TASK",
    "ATTR_TASK_ID",
    "EVENT_RETRY_REQUESTED",
    "OP_PROCESS",
    "OP_REDRIVE",
    "OP_REPLAY",
    "OP_SEND",
    "SCHEMA_URL",
    "SYSTEM_KAFKA",
    "TRACER_NAME",
    "TRACE_HEADERS",
    "Headers",
    "TracingMiddleware",
    "current_trace_id",
    "extract",
    "fire_span",
    "inject",
    "process_span",
    "record_failure",
    "replay_span",
    "span_name",
    "submit_span",
    "trace_id_of",
]

TRACER_NAME = "streamjobs"
#: The semantic-conventions release the attribute keys below follow.
SCHEMA_URL = "https://opentelemetry.io/schemas/1.27.0"

# -- span names: "<operation> <destination>", as the messaging conventions name them ----------
OP_SEND = "send"
OP_PROCESS = "process"
OP_REPLAY = "replay"
OP_REDRIVE = "redrive"

# -- attribute keys: OpenTelemetry messaging conventions (Kafka) -------------------------------
ATTR_SYSTEM = "messaging.system"
SYSTEM_KAFKA = "kafka"
ATTR_DESTINATION = "messaging.destination.name"
ATTR_PARTITION = "messaging.destination.partition.id"
ATTR_OFFSET = "messaging.kafka.offset"
ATTR_MESSAGE_KEY = "messaging.kafka.message.key"
ATTR_CONSUMER_GROUP = "messaging.consumer.group.name"
ATTR_OPERATION_TYPE = "messaging.operation.type"
ATTR_OPERATION_NAME = "messaging.operation.name"
ATTR_ERROR_TYPE = "error.type"
# messaging.operation.type values
_TYPE_SEND = "send"
_TYPE_PROCESS = "process"

# -- attribute keys: streamjobs' own (same words as models, headers and status records) --------
ATTR_TASK_ID = "streamjobs.task_id"
ATTR_TASK = "streamjobs.task"
ATTR_ATTEMPT = "streamjobs.attempt"
ATTR_RETRY_REASON = "streamjobs.retry.reason"
EVENT_RETRY_REQUESTED = "streamjobs.retry_requested"
#: The recurring schedule that fired a task (on the fire span and the process span).
ATTR_SCHEDULE = "streamjobs.schedule"

#: The default (W3C) propagator's record headers; the global propagator decides the real set.
TRACE_HEADERS = ("traceparent", "tracestate")
# A trace header longer than this is not a trace header (W3C baggage allows 8 KiB, the rest far
# less); it is dropped before any parser sees it.
_MAX_HEADER_BYTES = 8192

Headers = list[tuple[str, bytes]]
RecordHeaders = Sequence[tuple[str, bytes | str | None]] | None


def span_name(operation: str, topic: str) -> str:
    """``"<operation> <topic>"``, e.g. ``"process orders.default"``."""
    return f"{operation} {topic}"


_CONTEXT_HEADERS = frozenset(("traceparent", "tracestate", "baggage"))


class _Provider:
    """Whether an SDK (or any real provider) is installed; the API's default is a proxy.

    OpenTelemetry lets a provider be installed once and never replaced, so once one is seen the
    answer is kept. Until then every call asks: a provider set in code after import is seen by
    the next submit. The API's own answer reads ``OTEL_PYTHON_TRACER_PROVIDER`` from
    ``os.environ`` on every call while no provider is set (two raised KeyErrors when it is
    unset: ~9,000 instructions, 3.5% of an asyncio submit), so after the first call only the
    API's global is looked at: that variable is read once, at the first submit (it names a
    provider to load, process configuration set before start). Should a later API keep its
    global elsewhere, every call asks the API again."""

    installed = False
    _asked = False

    @classmethod
    def recording(cls) -> bool:
        if not cls.installed:
            if cls._asked and getattr(trace, "_TRACER_PROVIDER", _UNKNOWN) is None:
                return False  # none set in code since; the environment was read already
            cls._asked = True
            cls.installed = not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
        return cls.installed


_UNKNOWN = object()
_recording = _Provider.recording


def active() -> bool:
    """Whether submitting now should open spans: a provider is installed, or the caller is
    inside a span whose context must travel with the task."""
    return _recording() or trace.get_current_span().get_span_context().is_valid


def _tracer() -> trace.Tracer:
    # Looked up per call, not cached: the application may install its provider after import.
    return trace.get_tracer(TRACER_NAME, schema_url=SCHEMA_URL)


def _task_attributes(
    operation: str, task: str, task_id: str, attempt: int, topic: str
) -> dict[str, Any]:
    return {
        ATTR_SYSTEM: SYSTEM_KAFKA,
        ATTR_DESTINATION: topic,
        ATTR_OPERATION_NAME: operation,
        ATTR_OPERATION_TYPE: _TYPE_PROCESS if operation == OP_PROCESS else _TYPE_SEND,
        ATTR_TASK: task,
        ATTR_TASK_ID: task_id,
        ATTR_ATTEMPT: attempt,
    }


def _propagated_fields() -> set[str]:
    return {name.lower() for name in propagate.get_global_textmap().fields}


def inject() -> Headers:
    """The current context as record headers (none when no span context is active)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    fields = _propagated_fields()
    return [(name, value.encode()) for name, value in carrier.items() if name.lower() in fields]


def extract(headers: RecordHeaders) -> otel_context.Context:
    """The context carried by record headers; absent or garbage headers give an empty context.

    Never raises: a record from a foreign or broken producer still runs, in a fresh trace.
    """
    fields = _propagated_fields()
    carrier: dict[str, str] = {}
    for name, value in headers or ():
        if value is None or name.lower() not in fields or len(value) > _MAX_HEADER_BYTES:
            continue
        if isinstance(value, bytes):
            try:
                value = value.decode("ascii")
            except UnicodeDecodeError:
                continue
        carrier[name.lower()] = value
    if not carrier:
        return otel_context.Context()
    try:
        return propagate.extract(carrier, context=otel_context.Context())
    except Exception:  # a propagator must never fail a task
        return otel_context.Context()


@contextmanager
def submit_span(task: str, task_id: str, topic: str, key: str | None) -> Iterator[Headers]:
    """A PRODUCER span around producing a task record; yields the headers to put on it."""
    if not _recording() and not trace.get_current_span().get_span_context().is_valid:
        yield []  # no SDK and no trace to continue: nothing to record or propagate
        return
    attributes = _task_attributes(OP_SEND, task, task_id, 1, topic)
    if key is not None:
        attributes[ATTR_MESSAGE_KEY] = key
    with _tracer().start_as_current_span(
        span_name(OP_SEND, topic), kind=SpanKind.PRODUCER, attributes=attributes
    ):
        yield inject()


@contextmanager
def fire_span(schedule: str, due_ms: int, lateness_ms: int) -> Iterator[None]:
    """An INTERNAL span around one fire of a recurring schedule; the task's PRODUCER span
    (:func:`submit_span`) opened inside it is its child."""
    if not _recording():
        yield
        return
    attributes: dict[str, str | int] = {
        ATTR_SCHEDULE: schedule,
        "streamjobs.schedule.due_ms": due_ms,
        "streamjobs.schedule.lateness_ms": lateness_ms,
    }
    with _tracer().start_as_current_span(
        f"fire {schedule}", kind=SpanKind.INTERNAL, attributes=attributes
    ):
        yield


def process_span(
    headers: RecordHeaders,
    *,
    task: str,
    task_id: str,
    attempt: int,
    topic: str,
    partition: int,
    offset: int,
    group: str,
    schedule: str | None = None,
) -> AbstractContextManager[Span]:
    """The CONSUMER span a handler runs in: a child of the context in ``headers``.

    The record's context (with its baggage) is made current first, so the handler's own spans
    nest under this one and see the submitter's baggage. Exceptions are recorded by the caller
    through :func:`record_failure`, which knows whether they are failures or control flow.
    """
    if not _recording() and not any(name in _CONTEXT_HEADERS for name, _ in headers or ()):
        return _NO_SPAN  # no SDK and nothing to pass on: a no-op span costs ~10 us
    where = (topic, partition, offset, group, schedule)
    return _process_span(headers, task, task_id, attempt, where)


_NO_SPAN = nullcontext(trace.INVALID_SPAN)  # reusable: nullcontext keeps no state


@contextmanager
def _process_span(
    headers: RecordHeaders,
    task: str,
    task_id: str,
    attempt: int,
    where: tuple[str, int, int, str, str | None],
) -> Iterator[Span]:
    topic, partition, offset, group, schedule = where
    attributes = _task_attributes(OP_PROCESS, task, task_id, attempt, topic)
    attributes[ATTR_PARTITION] = str(partition)
    attributes[ATTR_OFFSET] = offset
    attributes[ATTR_CONSUMER_GROUP] = group
    if schedule is not None:
        attributes[ATTR_SCHEDULE] = schedule
    token = otel_context.attach(extract(headers))
    try:
        with _tracer().start_as_current_span(
            span_name(OP_PROCESS, topic),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            yield span
    finally:
        otel_context.detach(token)


@contextmanager
def replay_span(
    original_headers: RecordHeaders,
    *,
    operation: Literal["replay", "redrive"],
    task: str,
    task_id: str,
    topic: str,
    key: str | None = None,
) -> Iterator[Headers]:
    """A PRODUCER span for writing an old record again (a dead-letter redrive or a replay).

    The span is *linked* to the context in ``original_headers`` rather than parented by it: the
    re-run is a new piece of work caused by an operator, not a step of the original attempt
    chain. Its parent is whatever is current (usually nothing, so a new trace starts). Yields
    the headers for the re-produced record, so its attempts form a trace under this span.
    """
    attributes = _task_attributes(operation, task, task_id, 1, topic)
    if key is not None:
        attributes[ATTR_MESSAGE_KEY] = key
    original = trace.get_current_span(extract(original_headers)).get_span_context()
    links = [Link(original)] if original.is_valid else []
    with _tracer().start_as_current_span(
        span_name(operation, topic), kind=SpanKind.PRODUCER, attributes=attributes, links=links
    ):
        yield inject()


def record_failure(span: Span, exc: BaseException) -> None:
    """Mark ``span`` failed by ``exc``: an exception event, ``error.type`` and ERROR status.

    A handler raising :class:`~streamjobs.errors.Retry` asked for another attempt on purpose:
    that is recorded as an event, not as an error.
    """
    if isinstance(exc, Retry):
        span.add_event(EVENT_RETRY_REQUESTED, {ATTR_RETRY_REASON: str(exc)[:1000]})
        return
    span.record_exception(exc)
    span.set_attribute(ATTR_ERROR_TYPE, error_type(exc))
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:1000]))


def trace_id_of(span: Span) -> str | None:
    """The span's trace id as 32 lowercase hex digits (as Jaeger shows it), if it has one."""
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


def current_trace_id() -> str | None:
    """The id of the trace the calling code runs in (as :func:`trace_id_of`), if any."""
    return trace_id_of(trace.get_current_span())


class TracingMiddleware(Middleware):
    """The PRODUCER span of each submitted (or replayed, redriven) task record and the CONSUMER
    span of each attempt, with the trace context carried in record headers.

    The default middleware of ``Producer`` and ``Worker``. The attempt's span is the child of
    the context in the record's headers (the submit span, or the previous attempt's span for a
    retry), and its context is put on the retry record through ``ctx.carry_headers``. Without
    an installed SDK and without an incoming trace context it opens nothing.
    """

    def wants_submit(self) -> bool:
        # without a provider or a current span, a span (a replay's too: it is linked, not
        # parented) would be a no-op that injects no headers, so none is opened
        return active()

    def submit(self, ctx: SubmitContext) -> AbstractContextManager[object]:
        if not active():
            return super().submit(ctx)  # the shared no-op: nothing to wrap
        return self._submit(ctx)

    @contextmanager
    def _submit(self, ctx: SubmitContext) -> Iterator[None]:
        if ctx.operation == "submit":
            span = submit_span(ctx.task, ctx.task_id, ctx.topic, ctx.key)
        else:
            span = replay_span(
                ctx.origin_headers,
                operation=ctx.operation,
                task=ctx.task,
                task_id=ctx.task_id,
                topic=ctx.topic,
                key=ctx.key,
            )
        with span as headers:
            ctx.headers.extend(headers)
            yield

    def attempt(self, ctx: AttemptContext) -> AbstractContextManager[object]:
        span = process_span(
            ctx.headers,
            task=ctx.task,
            task_id=ctx.task_id,
            attempt=ctx.attempt,
            topic=ctx.topic,
            partition=ctx.partition,
            offset=ctx.offset,
            group=ctx.group,
            schedule=ctx.schedule,
        )
        return super().attempt(ctx) if span is _NO_SPAN else self._attempt(ctx, span)

    @contextmanager
    def _attempt(
        self, ctx: AttemptContext, span_manager: AbstractContextManager[Span]
    ) -> Iterator[None]:
        with span_manager as span:
            # the retry record continues the trace: the next attempt is a child of this one
            ctx.carry_headers.extend(inject())
            try:
                yield
            except Exception as exc:
                record_failure(span, exc)
                raise
