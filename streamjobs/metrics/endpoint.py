"""The HTTP endpoint of a worker: ``/metrics`` for Prometheus, ``/livez`` and ``/readyz`` for
probes, on one port, bound to loopback unless told otherwise.

Owns a small threaded HTTP server from the standard library (no web framework in a worker):
``GET /metrics`` answers the exposition text, ``/livez`` and ``/readyz`` answer 200 or 503 with a
one-line reason (``/healthz`` is ``/livez``). Does not compute metrics
(:mod:`streamjobs.metrics.prometheus`) or the verdicts (:mod:`streamjobs.metrics.health`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from streamjobs.metrics.health import Verdict

_log = logging.getLogger(__name__)

Probe = Callable[[], Verdict]


class Endpoint:
    """Serves ``exposition()`` and the probes from a daemon thread until :meth:`close`."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        exposition: Callable[[], tuple[bytes, str]],
        live: Probe,
        ready: Probe,
    ) -> None:
        routes: dict[str, Callable[[], tuple[int, bytes, str]]] = {
            "/metrics": lambda: (200, *exposition()),
            "/livez": lambda: _probe(live),
            "/healthz": lambda: _probe(live),
            "/readyz": lambda: _probe(ready),
        }
        self._server = ThreadingHTTPServer((host, port), _handler(routes))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="streamjobs-metrics", daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> Endpoint:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)


def _probe(check: Probe) -> tuple[int, bytes, str]:
    verdict = check()
    return (200 if verdict.ok else 503), f"{verdict.detail}\n".encode(), "text/plain"


def _handler(routes: dict[str, Callable[[], tuple[int, bytes, str]]]) -> type:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            route = routes.get(self.path.split("?", 1)[0])
            if route is None:
                code, body, kind = 404, b"not found: try /metrics, /livez, /readyz\n", "text/plain"
            else:
                code, body, kind = route()
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            _log.debug("metrics endpoint: " + format, *args)

    return Handler
