"""The task page's trace waterfall against a real Jaeger: a real ``streamjobs consume`` exporting
its spans over OTLP, a task submitted by the test process (its send span routed to the same
Jaeger), and ``streamjobs dashboard`` started as a process with that Jaeger's query URL, read over
HTTP as a browser would (log in, open the task page, load the trace frame it embeds). The task
fails once and succeeds on its retry, then is replayed: the page draws the replay's trace and the
first run's it links to.
"""

from __future__ import annotations

import html
import http.cookiejar
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from streamjobs import Producer, Settings
from streamjobs.dev.jaeger import LocalJaeger
from streamjobs.ops.replay import replay
from streamjobs.ops.traceview import find_trace_by_task
from streamjobs.telemetry import otlp_traces_url
from streamjobs.topics import queue_topics
from tests.integration.conftest import REPO_ROOT, worker_env
from tests.integration.jaeger_tasks import Flaky
from tests.support import wait_for
from tests.tracing_support import TEST_SERVICE_NAME, SpanRelay

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PASSWORD = "trace me"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Session:
    """An HTTP client with a cookie jar: a logged-in browser without the browser."""

    def __init__(self, base: str) -> None:
        self.base = base
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def get(self, path: str) -> tuple[int, str]:
        try:
            with self._opener.open(f"{self.base}{path}", timeout=10) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")
        except (urllib.error.URLError, OSError) as exc:
            return 0, str(exc)

    def log_in(self) -> None:
        _, page = self.get("/login")
        token = re.search(r'name="csrf" value="([^"]+)"', page)
        assert token is not None, page[:500]
        form = {"csrf": token.group(1), "name": "tracer", "password": PASSWORD}
        data = urllib.parse.urlencode(form).encode()
        with self._opener.open(f"{self.base}/login", data=data, timeout=10) as response:
            assert response.url == f"{self.base}/", response.url


@pytest.fixture
def dashboard(settings: Settings, jaeger: LocalJaeger, tmp_path: Path) -> Iterator[Session]:
    """``streamjobs dashboard`` for the test's queue with the Jaeger's query URL configured,
    stopped by PID; a session logged in to it."""
    port = _free_port()
    env = {
        **worker_env(settings),
        "STREAMJOBS_DASHBOARD_PASSWORD": PASSWORD,
        "STREAMJOBS_JAEGER_QUERY_URL": jaeger.query_url,
    }
    command = [
        sys.executable, "-m", "streamjobs.cli", "dashboard",
        "--bootstrap-servers", settings.bootstrap_servers,
        "--topic-prefix", settings.topic_prefix,
        "--port", str(port), "--index", str(tmp_path / "index.sqlite3"),
    ]  # fmt: skip
    log_path = tmp_path / "dashboard.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=log)
    session = Session(f"http://127.0.0.1:{port}")
    try:
        wait_for(
            lambda: proc.poll() is not None or session.get("/login")[0] == 200,
            60,
            message="the dashboard to answer",
        )
        assert proc.poll() is None, log_path.read_text()
        session.log_in()
        yield session
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _bars(svg: str) -> list[tuple[str, str]]:
    """(``service: span``, class) of each span bar of a waterfall, top to bottom."""
    found = re.findall(r'<rect [^>]*class="(span[^"]*)"><title>([^<]*)</title>', svg)
    titles = [html.unescape(title).splitlines()[0] for _, title in found]
    return [
        (re.sub(r" \([^)]*\)$", "", title), kind)  # the duration left out
        for title, (kind, _) in zip(titles, found, strict=True)
    ]


def _waterfalls(page: str) -> list[str]:
    return re.findall(r'<svg [^>]*aria-label="trace waterfall".*?</svg>', page, re.DOTALL)


def test_the_task_page_draws_its_jaeger_trace_from_submit_to_attempts_and_runs_it_links_to(
    jaeger: LocalJaeger,
    settings: Settings,
    traced_worker: Callable[[Settings, LocalJaeger, str], Path],
    span_relay: SpanRelay,
    unique_prefix: str,
    dashboard: Session,
    tmp_path: Path,
) -> None:
    worker_service = f"streamjobs-worker-{unique_prefix}"
    traced_worker(settings, jaeger, worker_service)
    exporter = OTLPSpanExporter(endpoint=otlp_traces_url(jaeger.otlp_http_endpoint))
    with span_relay.routing(BatchSpanProcessor(exporter)), Producer(settings) as producer:
        handle = producer.submit(Flaky(token=unique_prefix, failures=1), key="k")
        assert handle.wait(60.0) == "ok after 2 runs"

    def complete_trace() -> dict[str, Any] | None:
        found = find_trace_by_task(jaeger.query_url, worker_service, handle.task_id)
        return found if found is not None and len(found["spans"]) >= 5 else None

    trace = wait_for(complete_trace, 30.0, interval=0.25, message="the task's trace in Jaeger")
    assert trace is not None

    def task_page() -> str | None:
        status, page = dashboard.get(f"/tasks/{handle.task_id}")
        return page if status == 200 and 'id="task-state">succeeded<' in page else None

    page = wait_for(task_page, 60.0, interval=0.5, message="the task indexed as succeeded")
    assert f"<code>{trace['traceID']}</code>" in page
    frame = re.search(r'<iframe src="([^"]+)" title="trace"', page)
    assert frame is not None
    status, frame_page = dashboard.get(frame.group(1))
    assert status == 200
    (tmp_path / "trace.html").write_text(frame_page)  # for a look by hand
    (svg,) = _waterfalls(frame_page)

    topics = queue_topics(settings)
    retry = topics.retry[settings.retry_tiers[0]]
    assert _bars(svg) == [
        (f"{TEST_SERVICE_NAME}: send {topics.main}", "span"),
        (f"{worker_service}: process {topics.main} #1", "span-failed"),
        (f"{worker_service}: call backend", "span-failed"),
        (f"{worker_service}: process {retry} #2", "span"),
        (f"{worker_service}: call backend", "span"),
    ], svg
    assert "ConnectionError: backend down (run 1)" in svg  # the failure, shown by its bar
    assert f"A {TEST_SERVICE_NAME} · B {worker_service}" in svg  # the legend of the letters

    # replayed, the task runs in a new trace linked to the first: the page shows both
    # (a new exporter: the first one was shut down with its processor)
    exporter = OTLPSpanExporter(endpoint=otlp_traces_url(jaeger.otlp_http_endpoint))
    with span_relay.routing(BatchSpanProcessor(exporter)):
        assert replay(settings, topic=topics.main, from_offset=0, force=True).replayed == 1

    def both_traces() -> list[str] | None:
        _, shown = dashboard.get(frame.group(1))
        drawn = _waterfalls(shown)
        return drawn if len(drawn) == 2 and "#1" in drawn[1] else None

    try:
        earlier, rerun = wait_for(both_traces, 60.0, interval=0.5, message="both traces")
    except AssertionError as exc:
        _, shown = dashboard.get(frame.group(1))
        _, task = dashboard.get(f"/tasks/{handle.task_id}")
        raise AssertionError(f"{exc}\n{shown}\n{task}") from None
    (tmp_path / "traces.html").write_text(dashboard.get(frame.group(1))[1])
    assert _bars(earlier) == _bars(svg)
    assert [name for name, _ in _bars(rerun)][1:] == [
        f"{worker_service}: process {topics.main} #1",
        f"{worker_service}: call backend",
    ]
    assert "linked to " + trace["traceID"] in html.unescape(rerun)
