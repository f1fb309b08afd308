"""The Jaeger streamjobs runs locally: version, configuration and the Go build of its binary.

Owns the Jaeger version, its configuration (:data:`CONFIG_YAML`: OTLP in, traces kept in memory,
HTTP query API out) and building the ``jaeger`` binary once into a cache directory outside the
repository (:func:`ensure_binary`). Does not start or stop processes (:mod:`streamjobs.dev.jaeger`
does, through :mod:`streamjobs.dev.processes`).

Why the build is done this way: Jaeger v2 lives in the module ``github.com/jaegertracing/jaeger``
(no ``/v2``), so ``go install .../cmd/jaeger@v2.x.y`` is refused; a proxy that serves only
release tags has no v2 commit to install by hash either; and ``go install`` of a v1 tag refuses
the tag's ``replace`` directive. The v1.76.0 tag carries Jaeger v2.13.0's ``cmd/jaeger``, so
``go mod download`` fetches that module and ``go build`` *inside* it, where the ``replace``
applies, builds the binary: about six minutes on two cores the first time, seconds once Go's build
cache is warm. That binary has no UI assets; its HTTP API (``/api/services``, ``/api/traces``)
is complete, and :mod:`streamjobs.ops.traceview` draws a trace in a terminal. The Go build inherits
our environment, as Go needs ``HOME``, ``PATH`` and ``GOPROXY``.

``deploy/jaeger/config.yaml`` is the readable copy of :data:`CONFIG_YAML`; from a checkout the
file is used (:func:`config_text`), an installed package uses the constant, and a unit test keeps
both identical.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

from streamjobs.dev.processes import locked, tail
from streamjobs.errors import ConfigError

logger = logging.getLogger(__name__)

JAEGER_MODULE = "github.com/jaegertracing/jaeger"
#: The module tag whose ``cmd/jaeger`` is the Jaeger v2 release below (tags pair up v1/v2).
JAEGER_MODULE_VERSION = "v1.76.0"
JAEGER_VERSION = "2.13.0"

#: ``deploy/jaeger/config.yaml``: the Jaeger v2 (OpenTelemetry Collector) configuration.
CONFIG_YAML = """\
# Jaeger v2 for development and tests: OTLP in, traces kept in memory, HTTP query API out.
# Everything binds 127.0.0.1. streamjobs/dev/jaeger.py starts the binary with this file and sets
# the STREAMJOBS_JAEGER_* variables to free ports; by hand the defaults below apply:
#   jaeger --config deploy/jaeger/config.yaml
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    resource:
      service.name: jaeger
    # no internal metrics endpoint (it would claim port 8888) and no self-tracing
    metrics:
      level: none
    traces:
      level: none
    logs:
      level: info

extensions:
  jaeger_storage:
    backends:
      memory_store:
        memory:
          max_traces: 100000
  jaeger_query:
    storage:
      traces: memory_store
    # on by default in v2: the query service would trace itself to 127.0.0.1:4317 (another
    # Jaeger's receiver, or nothing, and then every shutdown waits 10 s to flush)
    enable_tracing: false
    http:
      endpoint: "127.0.0.1:${env:STREAMJOBS_JAEGER_QUERY_HTTP_PORT:-16686}"
    grpc:
      endpoint: "127.0.0.1:${env:STREAMJOBS_JAEGER_QUERY_GRPC_PORT:-16685}"

receivers:
  otlp:
    protocols:
      grpc:
        endpoint: "127.0.0.1:${env:STREAMJOBS_JAEGER_OTLP_GRPC_PORT:-4317}"
      http:
        endpoint: "127.0.0.1:${env:STREAMJOBS_JAEGER_OTLP_HTTP_PORT:-4318}"

processors:
  # a short timeout: tests poll the query API right after exporting
  batch:
    timeout: 200ms

exporters:
  jaeger_storage_exporter:
    trace_storage: memory_store
"""

_DEPLOY_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "jaeger" / "config.yaml"
_DOWNLOAD_TIMEOUT_S = 600.0
_BUILD_TIMEOUT_S = 1800.0
_TAIL_LINES = 30


def config_text() -> str:
    """``deploy/jaeger/config.yaml`` from a checkout, else the packaged :data:`CONFIG_YAML`."""
    return _DEPLOY_CONFIG.read_text(encoding="utf-8") if _DEPLOY_CONFIG.is_file() else CONFIG_YAML


def default_cache_dir() -> Path:
    """``~/.cache/streamjobs``; the binary goes to ``jaeger/<module version>/jaeger`` under it."""
    return Path.home() / ".cache" / "streamjobs"


def binary_path(cache_dir: Path | None = None) -> Path:
    """Where :func:`ensure_binary` puts the binary (it may not exist yet)."""
    base = cache_dir if cache_dir is not None else default_cache_dir()
    return base.resolve() / "jaeger" / JAEGER_MODULE_VERSION / "jaeger"


def ensure_binary(cache_dir: Path | None = None) -> Path:
    """Return the cached ``jaeger`` binary, building it with ``go`` the first time.

    Idempotent and safe to call concurrently (a lock file makes one caller build while the others
    wait; the binary appears under its final name only once complete). Raises
    :class:`ConfigError` if ``go`` is missing, the module cannot be downloaded or the build fails.
    """
    target = binary_path(cache_dir)
    if target.is_file():
        return target
    with locked(target.parent / ".lock"):
        if not target.is_file():
            _build(target)
    return target


def _build(target: Path) -> None:
    go = shutil.which("go")
    if go is None:
        raise ConfigError("`go` is not on PATH; building the local Jaeger needs Go 1.24+")
    began = time.monotonic()
    source = _download_module(go)
    staging = target.with_name("jaeger.partial")
    version_var = f"{JAEGER_MODULE}/internal/version.latestVersion=v{JAEGER_VERSION}"
    command = [go, "build", "-trimpath", "-ldflags", f"-s -w -X {version_var}"]
    command += ["-o", str(staging), "./cmd/jaeger"]
    logger.info("building Jaeger %s from %s (a few minutes the first time)", JAEGER_VERSION, source)
    # static binary: no C toolchain needed, and it runs on any Linux of this architecture
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly -buildvcs=false"}
    done = _run(command, source, env, _BUILD_TIMEOUT_S)
    if done.returncode != 0 or not staging.is_file():
        raise ConfigError(
            f"building Jaeger failed (exit {done.returncode}): {' '.join(command)} in {source}\n"
            + tail(done.stdout + done.stderr, _TAIL_LINES)
        )
    staging.replace(target)
    logger.info("built %s in %.0fs", target, time.monotonic() - began)


def _download_module(go: str) -> Path:
    """``go mod download`` the Jaeger module into Go's module cache; returns its directory."""
    command = [go, "mod", "download", "-json", f"{JAEGER_MODULE}@{JAEGER_MODULE_VERSION}"]
    done = _run(command, None, None, _DOWNLOAD_TIMEOUT_S)
    try:
        info = json.loads(done.stdout)
    except ValueError:
        info = {}
    directory = info.get("Dir") if isinstance(info, dict) else None
    if done.returncode != 0 or not directory or not Path(directory).is_dir():
        error = info.get("Error") if isinstance(info, dict) else None
        error = error or tail(done.stdout + done.stderr, _TAIL_LINES)
        raise ConfigError(
            f"could not download {JAEGER_MODULE}@{JAEGER_MODULE_VERSION} from the Go module"
            f" proxy (exit {done.returncode}): {error}"
        )
    return Path(directory)


def _run(
    command: list[str], cwd: Path | None, env: dict[str, str] | None, timeout: float
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ConfigError(f"took over {timeout:.0f}s: {' '.join(command)}") from None
