"""Everything that makes a running worker observable, wired together for ``streamjobs consume``
(and for an application or a test that runs a Worker itself).

Owns the middleware list a monitored worker runs (tracing, the task log, metrics)
and, around ``worker.run()``, the heartbeat thread and the HTTP endpoint (metrics and probes).
Does not configure logging (:func:`streamjobs.metrics.logs.configure` is the CLI's call) or
create topics.

::

    monitor = Monitor(settings, metrics_port=9464)
    worker = Worker(settings, registry, middleware=monitor.middleware)
    with monitor.watching(worker):
        worker.run()
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from streamjobs.errors import ConfigError
from streamjobs.metrics import health
from streamjobs.metrics.endpoint import Endpoint
from streamjobs.metrics.heartbeat import Heartbeat
from streamjobs.metrics.prometheus import CONTENT_TYPE as METRICS_CONTENT_TYPE
from streamjobs.metrics.prometheus import REGISTRY, CollectorRegistry, WorkerMetrics, exposition
from streamjobs.metrics.tasklog import TaskLog
from streamjobs.middleware import Middleware
from streamjobs.settings import Settings
from streamjobs.tracing import TracingMiddleware
from streamjobs.worker.loop import Worker


class Monitor:
    """Metrics, outcome logs, heartbeats and probes for one worker.

    ``metrics_port`` None serves no endpoint (0: any free port, see :attr:`endpoint`);
    ``heartbeats`` False publishes no reports.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        metrics_host: str = "127.0.0.1",
        metrics_port: int | None = None,
        heartbeats: bool = True,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self._settings = settings
        self._address = None if metrics_port is None else (metrics_host, metrics_port)
        self._heartbeats = heartbeats
        self._registry = registry
        self.metrics = WorkerMetrics(registry)
        # tracing first: the task log puts the trace id the attempt's span has on its records
        self.middleware: list[Middleware] = [TracingMiddleware(), TaskLog(), self.metrics]
        self.endpoint: Endpoint | None = None

    @contextmanager
    def watching(self, worker: Worker) -> Iterator[Monitor]:
        """Export ``worker``'s gauges, serve the endpoint and publish heartbeats in the block."""
        self.metrics.watch(worker)
        with ExitStack() as stack:
            if self._address is not None:
                self.endpoint = _serve(
                    self._address,
                    exposition=lambda: (exposition(self._registry), METRICS_CONTENT_TYPE),
                    live=lambda: health.of_worker(worker.stats)[0],
                    ready=lambda: health.of_worker(worker.stats)[1],
                ).start()
                stack.callback(self.endpoint.close)
            if self._heartbeats:
                stack.enter_context(Heartbeat(self._settings, worker))
            yield self


def _serve(address: tuple[str, int], **routes: Any) -> Endpoint:
    """The endpoint on ``address``; a port that cannot be bound is a ConfigError (exit 2)."""
    try:
        return Endpoint(*address, **routes)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {address[0]}:{address[1]}: {exc}") from exc
