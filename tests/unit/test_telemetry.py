"""The edge's one-call OpenTelemetry setup: SDK, OTLP/HTTP exporter, standard variables.

Exporting runs in a subprocess (the test process already has its provider) against a stand-in
OTLP/HTTP receiver on 127.0.0.1.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry import trace

from streamjobs import Settings, telemetry
from tests.tracing_support import SpanRelay

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
        ("http://jaeger:4318/", "http://jaeger:4318/v1/traces"),
        ("https://otel.example/v1/traces", "https://otel.example/v1/traces"),
        (" http://collector:4318/otlp ", "http://collector:4318/otlp/v1/traces"),
    ],
)
def test_otlp_endpoint_is_a_base_url_like_otel_exporter_otlp_endpoint(
    given: str, expected: str
) -> None:
    assert telemetry.otlp_traces_url(given) == expected


def test_configure_leaves_an_installed_provider_alone(span_relay: SpanRelay) -> None:
    before = trace.get_tracer_provider()
    settings = Settings(otlp_endpoint="http://127.0.0.1:9")
    assert telemetry.configure(settings, service_name="not-used") is None
    assert trace.get_tracer_provider() is before


class _OtlpSink:
    """A stand-in OTLP/HTTP receiver on 127.0.0.1 that records every request it gets."""

    def __init__(self) -> None:
        self.requests: queue.Queue[tuple[str, str, bytes]] = queue.Queue()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                sink.requests.put((self.path, self.headers.get("Content-Type", ""), body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def otlp_sink() -> Iterator[_OtlpSink]:
    sink = _OtlpSink()
    yield sink
    sink.close()


_EXPORT_ONE_SPAN = """
    import sys
    from streamjobs import Settings, telemetry
    settings = Settings(otlp_endpoint=sys.argv[1]) if len(sys.argv) > 1 else Settings()
    provider = telemetry.configure(settings, service_name="svc-under-test")
    assert provider is not None
    assert telemetry.configure(settings, service_name="again") is None
    from streamjobs.middleware import SubmitContext
    from streamjobs.tracing import TracingMiddleware
    ctx = SubmitContext(task_id="t-42", task="add", key=None, queue="default", topic="q")
    with TracingMiddleware().submit(ctx):  # what Producer.submit does, after the setup
        pass
    assert [name for name, _ in ctx.headers] == ["traceparent"], ctx.headers
    provider.shutdown()
"""


def test_configure_exports_batches_over_otlp_http_to_the_given_endpoint(
    otlp_sink: _OtlpSink,
) -> None:
    subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_EXPORT_ONE_SPAN), otlp_sink.url],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=True,
        timeout=60,
    )

    path, content_type, body = otlp_sink.requests.get(timeout=10)
    assert path == "/v1/traces"
    assert content_type == "application/x-protobuf"
    assert b"svc-under-test" in body
    assert b"t-42" in body


def test_configure_without_an_endpoint_follows_the_standard_otel_variables(
    otlp_sink: _OtlpSink,
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_sink.url}
    env.pop("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None)
    subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_EXPORT_ONE_SPAN)],
        cwd=REPO,
        env=env,
        check=True,
        timeout=60,
    )

    path, _, body = otlp_sink.requests.get(timeout=10)
    assert path == "/v1/traces"
    assert b"svc-under-test" in body


def test_without_a_service_name_the_standard_otel_service_name_applies_and_spans_flush_at_exit(
    otlp_sink: _OtlpSink,
) -> None:
    script = """
        from streamjobs import Settings, telemetry
        from streamjobs.tracing import submit_span
        telemetry.configure(Settings())
        with submit_span("add", "t-43", "q", None):
            pass
    """
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_sink.url,
        "OTEL_SERVICE_NAME": "svc-from-env",
    }
    env.pop("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None)
    env.pop("STREAMJOBS_SERVICE_NAME", None)
    subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], cwd=REPO, env=env, check=True, timeout=60
    )

    _, _, body = otlp_sink.requests.get(timeout=10)
    assert b"svc-from-env" in body
    assert b"t-43" in body


def test_without_an_endpoint_configure_installs_nothing_and_loads_no_sdk() -> None:
    script = """
        import sys
        from opentelemetry import trace
        from streamjobs import Settings, telemetry
        print(telemetry.configure(Settings(), service_name="svc"))
        print(type(trace.get_tracer_provider()).__name__)
        print(sorted(m for m in sys.modules if m.startswith("opentelemetry.sdk")))
    """
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for name in (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "STREAMJOBS_OTLP_ENDPOINT",
    ):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stdout.splitlines() == ["None", "ProxyTracerProvider", "[]"]


def test_the_service_is_named_by_the_argument_then_streamjobs_then_otel_then_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def named(service_name: str | None = None, **settings: str) -> object:
        resource = telemetry._resource(Settings(**settings), service_name)  # type: ignore[arg-type]
        return resource.attributes["service.name"]

    monkeypatch.delenv("STREAMJOBS_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    assert named() == "streamjobs"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-otel")
    assert named() == "from-otel"
    monkeypatch.setenv("STREAMJOBS_SERVICE_NAME", "from-streamjobs")
    assert named() == "from-streamjobs"
    assert named("from-code") == "from-code"
