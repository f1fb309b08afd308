"""Installing the OpenTelemetry SDK and its OTLP exporter: one call at a process's start.

Owns :func:`configure`, the one-call setup for the edge of a process: ``streamjobs consume``
calls it, and so does an application that submits tasks and wants their ``send`` spans
exported::

    from streamjobs import telemetry
    telemetry.configure(service_name="signup-service")  # OTEL_EXPORTER_OTLP_ENDPOINT etc.

Imported only at the edge (the CLI, an application's start-up): the library path
(``streamjobs``, its producer and worker) uses the OpenTelemetry *API* alone
(:mod:`streamjobs.tracing`) and never installs a provider by itself. This module imports the
SDK lazily, so importing it costs nothing until :func:`configure` runs.

Deliberately does not: name spans or attributes (:mod:`streamjobs.tracing` does), replace a
provider the application already installed, or read ``STREAMJOBS_*`` settings (the caller
passes what it wants; the SDK reads its standard ``OTEL_*`` variables itself).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry import trace

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

__all__ = ["configure", "otlp_traces_url"]


def otlp_traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL for an endpoint given like ``OTEL_EXPORTER_OTLP_ENDPOINT``.

    ``http://jaeger:4318`` becomes ``http://jaeger:4318/v1/traces``; a URL already ending in
    ``/v1/traces`` is kept.
    """
    base = endpoint.strip().rstrip("/")
    return base if base.endswith("/v1/traces") else f"{base}/v1/traces"


def configure(
    service_name: str | None = None, otlp_endpoint: str | None = None
) -> SdkTracerProvider | None:
    """Install a global SDK provider exporting spans over OTLP/HTTP in batches.

    ``service_name`` names the process in traces (None: the SDK's ``OTEL_SERVICE_NAME``, else
    ``unknown_service``). ``otlp_endpoint`` is a base URL (``http://127.0.0.1:4318``); when
    None the exporter follows the standard ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` /
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` variables (default ``http://localhost:4318``), and the SDK
    also honours ``OTEL_BSP_*``, ``OTEL_RESOURCE_ATTRIBUTES`` and ``OTEL_SDK_DISABLED``.

    Returns the provider; the SDK flushes its last spans at interpreter exit, or call its
    ``shutdown()`` earlier. Returns None and changes nothing if a provider is already
    installed (OpenTelemetry allows one per process, and the application's wins). Needs the
    ``streamjobs[otlp]`` extra.
    """
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return None
    endpoint = otlp_traces_url(otlp_endpoint) if otlp_endpoint else None
    attributes = {SERVICE_NAME: service_name} if service_name else {}
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    return provider
