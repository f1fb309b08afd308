"""OpenTelemetry SDK for tests: one provider per test process, spans routed per test.

OpenTelemetry allows one global TracerProvider per process, set once. So this plugin installs
one when pytest starts (service ``streamjobs-tests``), before any test could install another,
and its only processor is a :class:`SpanRelay`; each test routes spans to processors of its own
for its duration: an in-memory exporter (the ``spans`` fixture), or an OTLP exporter to a real
Jaeger. Spans that end while no test listens (a worker thread finishing after its test) go
nowhere. ``streamjobs.telemetry.configure`` called inside the test process leaves it alone.

A pytest plugin: ``tests/conftest.py`` loads it with ``pytest_plugins``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

TEST_SERVICE_NAME = "streamjobs-tests"


class SpanRelay(SpanProcessor):
    """A span processor forwarding to whichever processors are routed to it right now."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._targets: tuple[SpanProcessor, ...] = ()

    @contextmanager
    def routing(self, processor: SpanProcessor) -> Iterator[SpanProcessor]:
        """Send spans to ``processor`` inside the block; flush and shut it down after."""
        with self._lock:
            self._targets = (*self._targets, processor)
        try:
            yield processor
        finally:
            with self._lock:
                self._targets = tuple(p for p in self._targets if p is not processor)
            processor.force_flush()
            processor.shutdown()

    def on_start(self, span: SdkSpan, parent_context: Context | None = None) -> None:
        for target in self._targets:
            target.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        for target in self._targets:
            target.on_end(span)

    def shutdown(self) -> None:
        """Nothing to do: each routed processor is shut down when its route ends."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return all(target.force_flush(timeout_millis) for target in self._targets)


_install_lock = threading.Lock()
_relay: SpanRelay | None = None


def install_test_provider() -> SpanRelay:
    """The relay of this process's test provider, installing the provider the first time."""
    global _relay
    with _install_lock:
        if _relay is None:
            if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
                raise RuntimeError("a TracerProvider is already installed in the test process")
            relay = SpanRelay()
            provider = TracerProvider(resource=Resource.create({SERVICE_NAME: TEST_SERVICE_NAME}))
            provider.add_span_processor(relay)
            trace.set_tracer_provider(provider)
            _relay = relay
        return _relay


def pytest_configure(config: pytest.Config) -> None:
    install_test_provider()


@pytest.fixture(scope="session")
def span_relay() -> SpanRelay:
    """The session's :class:`SpanRelay`; route an exporter through it with ``routing()``."""
    return install_test_provider()


@pytest.fixture
def spans(span_relay: SpanRelay) -> Iterator[InMemorySpanExporter]:
    """Every span that ends during this test, exported synchronously into memory."""
    exporter = InMemorySpanExporter()
    with span_relay.routing(SimpleSpanProcessor(exporter)):
        yield exporter
    exporter.clear()
