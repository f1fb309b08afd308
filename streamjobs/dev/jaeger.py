"""A local Jaeger v2 (in-memory, all on 127.0.0.1) for development and tests.

Owns running one: writing its configuration into a working directory, starting it with its
ports, waiting until its query API answers, and stopping it by PID. Two ways to run one:

* :class:`LocalJaeger` is a child process owned by the caller (a test fixture), on free ports;
* :func:`up` / :func:`down` manage a detached one per query port that outlives the command that
  started it (``streamjobs dev-jaeger up``, ``make jaeger-up``).

Deliberately does not: import the Kafka client or OpenTelemetry; pass our environment to Jaeger
(it runs with its four port variables only); or signal a process it cannot prove it started:
processes are found by PID and checked against their command line, never by name. Linux only
(``/proc``, ``flock``).

The Jaeger version, its configuration and building the binary with Go live in
:mod:`streamjobs.dev.jaeger_build`; starting, proving and stopping processes by PID in
:mod:`streamjobs.dev.processes`; the commands in :mod:`streamjobs.cli.dev`.
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from streamjobs.dev.jaeger_build import (
    CONFIG_YAML,
    JAEGER_MODULE,
    JAEGER_MODULE_VERSION,
    JAEGER_VERSION,
    binary_path,
    config_text,
    default_cache_dir,
    ensure_binary,
)
from streamjobs.dev.processes import (
    HOST,
    ChildProcess,
    NotReady,
    RunDir,
    accepting,
    free_port,
    rotate_log,
    tail,
)
from streamjobs.errors import ConfigError, StreamJobsError

__all__ = [
    "CONFIG_YAML",
    "JAEGER_MODULE",
    "JAEGER_MODULE_VERSION",
    "JAEGER_VERSION",
    "JaegerPorts",
    "LocalJaeger",
    "binary_path",
    "default_cache_dir",
    "down",
    "ensure_binary",
    "running_pid",
    "up",
]

logger = logging.getLogger(__name__)

_LABEL = "Jaeger"
_START_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 15.0
_TAIL_LINES = 30


@dataclass(frozen=True, slots=True)
class JaegerPorts:
    """The four ports a Jaeger listens on, all on 127.0.0.1. Defaults are Jaeger's own."""

    otlp_grpc: int = 4317
    otlp_http: int = 4318
    query_http: int = 16686
    query_grpc: int = 16685

    @classmethod
    def free(cls) -> JaegerPorts:
        """Four distinct ports that are free right now (for tests and parallel instances)."""
        ports: set[int] = set()
        while len(ports) < 4:
            ports.add(free_port())
        otlp_grpc, otlp_http, query_http, query_grpc = sorted(ports)
        return cls(otlp_grpc, otlp_http, query_http, query_grpc)

    def env(self) -> dict[str, str]:
        """The variables ``deploy/jaeger/config.yaml`` reads its ports from."""
        return {
            "STREAMJOBS_JAEGER_OTLP_GRPC_PORT": str(self.otlp_grpc),
            "STREAMJOBS_JAEGER_OTLP_HTTP_PORT": str(self.otlp_http),
            "STREAMJOBS_JAEGER_QUERY_HTTP_PORT": str(self.query_http),
            "STREAMJOBS_JAEGER_QUERY_GRPC_PORT": str(self.query_grpc),
        }

    @property
    def query_url(self) -> str:
        """Base URL of the HTTP query API (``/api/services``, ``/api/traces``)."""
        return f"http://{HOST}:{self.query_http}"

    @property
    def otlp_http_endpoint(self) -> str:
        """Base URL for OTLP/HTTP exporters (``--otlp-endpoint``, OTEL_EXPORTER_OTLP_ENDPOINT)."""
        return f"http://{HOST}:{self.otlp_http}"


class LocalJaeger(ChildProcess):
    """One Jaeger as a child process, with its config and log under ``workdir``.

    Ports default to four free ones. Use as a context manager, or call :meth:`start` and
    :meth:`stop`. Builds the binary first if the cache has none (minutes, once).
    """

    def __init__(
        self, workdir: Path, *, ports: JaegerPorts | None = None, cache_dir: Path | None = None
    ) -> None:
        super().__init__(workdir, "jaeger.log", _LABEL, _STOP_TIMEOUT_S)
        self.ports = ports if ports is not None else JaegerPorts.free()
        self.cache_dir = cache_dir
        self.startup_s: float | None = None

    @property
    def query_url(self) -> str:
        return self.ports.query_url

    @property
    def otlp_http_endpoint(self) -> str:
        return self.ports.otlp_http_endpoint

    def start(self, timeout: float = _START_TIMEOUT_S) -> None:
        """Build if needed, start, and return once the query API and OTLP/HTTP answer.

        Raises :class:`StreamJobsError` with the tail of ``jaeger.log`` when Jaeger exits or does
        not answer within ``timeout`` seconds (it is stopped first).
        """
        if self.pid is not None:
            raise ConfigError(f"Jaeger at {self.query_url} is already started (pid {self.pid})")
        command = _prepare(self.workdir, ensure_binary(self.cache_dir))
        began = time.monotonic()
        not_ready = _not_ready(self.log_path, self.query_url, timeout)
        pid = self._spawn(command, _serving(self.ports), timeout, not_ready, self.ports.env())
        self.startup_s = time.monotonic() - began
        logger.info("Jaeger ready at %s in %.2fs (pid %d)", self.query_url, self.startup_s, pid)


def _prepare(workdir: Path, binary: Path) -> list[str]:
    """Write the config into ``workdir``; returns Jaeger's command line."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "config.yaml"
    config.write_text(config_text(), encoding="utf-8")
    rotate_log(workdir / "jaeger.log")
    return [str(binary), "--config", str(config)]


def _not_ready(log: Path, query_url: str, timeout: float) -> NotReady:
    def fail(exited: str | None) -> NoReturn:
        try:
            text = log.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            text = "(no log written)"
        reason = exited or f"no answer in {timeout:.0f}s"
        raise StreamJobsError(
            f"local Jaeger at {query_url} did not start ({reason}); from {log}:\n"
            + tail(text, _TAIL_LINES)
        )

    return fail


def _serving(ports: JaegerPorts) -> Callable[[], bool]:
    # The query API starts after the receivers, so an answering API means OTLP is up too.
    return lambda: accepting(ports.otlp_http) and _answers(ports.query_url + "/api/services")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


# -- a detached Jaeger for `make jaeger-up` ----------------------------------------------------


def _state_dir(query_port: int, cache_dir: Path | None) -> Path:
    base = cache_dir if cache_dir is not None else default_cache_dir()
    return (base / "jaeger" / f"run-{query_port}").resolve()


def _run_dir(workdir: Path) -> RunDir:
    """A detached Jaeger's files in ``workdir``; its PID is ours while it runs their config."""
    config = ("--config", str(workdir / "config.yaml"))
    return RunDir(workdir, "jaeger", config, _LABEL, _STOP_TIMEOUT_S)


def running_pid(query_port: int = 16686, cache_dir: Path | None = None) -> int | None:
    """The PID of the :func:`up` Jaeger whose query API is on ``query_port``, if running."""
    return _run_dir(_state_dir(query_port, cache_dir)).recorded_pid()


def up(ports: JaegerPorts | None = None, cache_dir: Path | None = None) -> JaegerPorts:
    """Ensure a detached Jaeger serves ``ports`` (default: Jaeger's own) and return them.

    Reuses the Jaeger recorded in ``<cache_dir>/jaeger/run-<query port>/jaeger.pid`` when that
    PID is still ours and answers; otherwise starts a new one (traces are in memory, so a restart
    starts empty). Raises :class:`ConfigError` if another process holds one of the ports.
    """
    ports = ports if ports is not None else JaegerPorts()
    run = _run_dir(_state_dir(ports.query_http, cache_dir))
    binary = ensure_binary(cache_dir)  # before the lock: a first build takes minutes
    with run.lock():
        pid = run.reuse(_serving(ports), 5.0)
        if pid is not None:
            logger.info("reusing Jaeger at %s (pid %d)", ports.query_url, pid)
            return ports
        busy = [p for p in sorted(ports.env().values(), key=int) if accepting(int(p))]
        if busy:
            raise ConfigError(
                f"port(s) {busy} on {HOST} are in use by a process streamjobs did not start;"
                " stop it or pick other ports"
            )
        _start_detached(run, binary, ports)
    return ports


def _start_detached(run: RunDir, binary: Path, ports: JaegerPorts) -> int:
    command = _prepare(run.path, binary)
    began = time.monotonic()
    not_ready = _not_ready(run.log, ports.query_url, _START_TIMEOUT_S)
    pid = run.start(command, _serving(ports), _START_TIMEOUT_S, not_ready, ports.env())
    logger.info(
        "Jaeger ready at %s in %.2fs (pid %d, detached)",
        ports.query_url,
        time.monotonic() - began,
        pid,
    )
    return pid


def down(query_port: int = 16686, cache_dir: Path | None = None) -> bool:
    """Stop the :func:`up` Jaeger on ``query_port`` by its recorded PID. True if one was stopped.

    The PID's command line is checked first; a stale pid file is removed and nothing signalled.
    """
    return _run_dir(_state_dir(query_port, cache_dir)).stop()
