"""Installing the OpenTelemetry SDK and its OTLP exporter: one call at a process's start.

Owns :func:`configure`, the one-call setup for the edge of a process: ``streamjobs consume``
calls it, and so does an application that submits tasks and wants their ``send`` spans
exported::

    from streamjobs import Settings, telemetry
    settings = Settings()
    telemetry.configure(settings, service_name="signup-service")

It exports only when an endpoint is configured (``STREAMJOBS_OTLP_ENDPOINT`` or the standard
``OTEL_EXPORTER_OTLP_ENDPOINT``), so the same line is harmless where no collector runs.

Imported only at the edge (the CLI, an application's start-up): the library path
(``streamjobs``, its producer and worker) uses the OpenTelemetry *API* alone
(:mod:`streamjobs.tracing`) and never installs a provider by itself. This module imports the
SDK lazily, so importing it costs nothing until :func:`configure` runs.

Deliberately does not: name spans or attributes (:mod:`streamjobs.tracing` does), replace a
provider the application already installed, or read the environment itself (``Settings``,
built by the caller, and the SDK read the variables).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry import trace

from streamjobs.errors import ConfigError
from streamjobs.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

__all__ = ["configure", "otlp_traces_url"]


def otlp_traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL for an endpoint given like ``OTEL_EXPORTER_OTLP_ENDPOINT``.

    ``http://jaeger:4318`` becomes ``http://jaeger:4318/v1/traces``; a URL already ending in
    ``/v1/traces`` is kept.
    """
    base = endpoint.strip().rstrip("/")
    return base if base.endswith("/v1/traces") else f"{base}/v1/traces"


def configure(settings: Settings, *, service_name: str | None = None) -> SdkTracerProvider | None:
    """Export this process's spans over OTLP/HTTP when the settings name an endpoint.

    Installs a global SDK provider with a batching OTLP/HTTP exporter if an endpoint is
    configured (``STREAMJOBS_OTLP_ENDPOINT``, a base URL such as ``http://127.0.0.1:4318``, or
    the standard ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT``),
    and does nothing otherwise: a process without a collector pays nothing and never stalls
    at exit on an unreachable exporter. The SDK also honours ``OTEL_BSP_*``,
    ``OTEL_RESOURCE_ATTRIBUTES`` and ``OTEL_SDK_DISABLED``.

    The service is named by ``service_name``, else ``STREAMJOBS_SERVICE_NAME``, else
    ``OTEL_SERVICE_NAME``, else ``settings.service_name``'s default (``streamjobs``).

    Returns the provider; the SDK flushes its last spans at interpreter exit, or call its
    ``shutdown()`` earlier. Returns None and changes nothing when no endpoint is configured or
    a provider is already installed (OpenTelemetry allows one per process, and the
    application's wins). Exporting needs the ``streamjobs[otlp]`` extra (ConfigError without).
    """
    if not settings.tracing_enabled:
        return None
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise ConfigError(
            f"exporting traces needs the streamjobs[otlp] extra (the OpenTelemetry SDK): {exc}"
        ) from exc

    endpoint = otlp_traces_url(settings.otlp_endpoint) if settings.otlp_endpoint else None
    provider = TracerProvider(resource=_resource(settings, service_name))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    return provider


def _resource(settings: Settings, service_name: str | None) -> Resource:
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    if service_name is None and "service_name" in settings.model_fields_set:
        service_name = settings.service_name  # STREAMJOBS_SERVICE_NAME, or given in code
    resource = Resource.create({SERVICE_NAME: service_name} if service_name else {})
    detected = resource.attributes.get(SERVICE_NAME)
    if not isinstance(detected, str) or detected.startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: settings.service_name}))
    return resource
