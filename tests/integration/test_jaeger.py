"""End to end with a real Jaeger: one trace per task across the submitting and consuming process.

Jaeger v2 is built from the Go module proxy into ``~/.cache/streamjobs/jaeger/`` when missing
(minutes, once; see :mod:`streamjobs.dev.jaeger`) and runs in memory on free 127.0.0.1 ports. The
worker is a real ``streamjobs consume`` process exporting over OTLP/HTTP under its own service
name; the test process submits under ``streamjobs-tests`` through the session's test provider,
routed to the same Jaeger for the test's duration. Everything is read back from Jaeger's HTTP API.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from streamjobs import Producer, Settings, TaskState
from streamjobs.dev.jaeger import JaegerPorts, LocalJaeger, default_cache_dir, down, running_pid, up
from streamjobs.ops.traceview import fetch_trace, find_trace_by_task, render
from streamjobs.telemetry import otlp_traces_url
from streamjobs.topics import queue_topics
from tests.integration.conftest import REPO_ROOT, latest, worker_env
from tests.integration.jaeger_tasks import Flaky
from tests.support import wait_for
from tests.tracing_support import TEST_SERVICE_NAME, SpanRelay

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _log_of(tmp_path: Path) -> str:
    log = tmp_path / "worker.log"
    return log.read_text(errors="replace") if log.exists() else "(no worker log)"


def _jaeger_state(jaeger: LocalJaeger) -> str:
    """What Jaeger holds, for a failure message: services and their traces' span names."""
    with urllib.request.urlopen(f"{jaeger.query_url}/api/services", timeout=5) as response:
        services = json.loads(response.read())["data"] or []
    lines = [f"Jaeger services: {services}"]
    for service in services:
        query = urllib.parse.urlencode({"service": service, "limit": 20})
        with urllib.request.urlopen(f"{jaeger.query_url}/api/traces?{query}", timeout=5) as resp:
            for found in json.loads(resp.read())["data"] or []:
                names = sorted(s["operationName"] for s in found["spans"])
                lines.append(f"  {service}: trace {found['traceID']}: {names}")
    return "\n".join(lines)


def _span_by(trace: dict[str, Any], **tags: Any) -> list[dict[str, Any]]:
    def tag_map(span: dict[str, Any]) -> dict[str, Any]:
        return {t["key"]: t["value"] for t in span["tags"]}

    return [s for s in trace["spans"] if all(tag_map(s).get(k) == v for k, v in tags.items())]


def _service_of(trace: dict[str, Any], span: dict[str, Any]) -> str:
    return str(trace["processes"][span["processID"]]["serviceName"])


def _parent_of(span: dict[str, Any]) -> str | None:
    refs = [r["spanID"] for r in span["references"] if r["refType"] == "CHILD_OF"]
    return refs[0] if refs else None


def test_task_from_one_process_and_its_attempts_in_another_form_one_jaeger_trace(
    jaeger: LocalJaeger,
    settings: Settings,
    traced_worker: Callable[[Settings, LocalJaeger, str], Path],
    span_relay: SpanRelay,
    unique_prefix: str,
    tmp_path: Path,
) -> None:
    worker_service = f"streamjobs-worker-{unique_prefix}"
    traced_worker(settings, jaeger, worker_service)
    exporter = OTLPSpanExporter(endpoint=otlp_traces_url(jaeger.otlp_http_endpoint))
    with span_relay.routing(BatchSpanProcessor(exporter)), Producer(settings) as producer:
        handle = producer.submit(Flaky(token=unique_prefix, failures=1), key="k")
        assert handle.wait(60.0) == "ok after 2 runs", _log_of(tmp_path)

    def complete_trace() -> dict[str, Any] | None:
        found = find_trace_by_task(jaeger.query_url, worker_service, handle.task_id)
        # send + two attempts + a handler span in each
        return found if found is not None and len(found["spans"]) >= 5 else None

    try:
        trace = wait_for(complete_trace, 30.0, interval=0.25, message="the task's trace in Jaeger")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_jaeger_state(jaeger)}\n{_log_of(tmp_path)}") from None
    assert trace is not None
    (tmp_path / "trace.json").write_text(json.dumps(trace, indent=1))  # for a look by hand

    (send,) = _span_by(trace, **{"span.kind": "producer"})
    attempt_1, attempt_2 = sorted(
        _span_by(trace, **{"span.kind": "consumer", "streamjobs.task_id": handle.task_id}),
        key=lambda s: s["startTime"],
    )
    handler_spans = [s for s in trace["spans"] if s["operationName"] == "call backend"]
    topics = queue_topics(settings)
    assert _service_of(trace, send) == TEST_SERVICE_NAME
    assert {_service_of(trace, s) for s in (attempt_1, attempt_2, *handler_spans)} == {
        worker_service
    }
    assert send["operationName"] == f"send {topics.main}"
    assert attempt_1["operationName"] == f"process {topics.main}"
    assert attempt_2["operationName"] == f"process {topics.retry[settings.retry_tiers[0]]}"
    assert _parent_of(send) is None
    assert _parent_of(attempt_1) == send["spanID"]
    assert _parent_of(attempt_2) == attempt_1["spanID"]
    assert sorted(_parent_of(s) or "" for s in handler_spans) == sorted(
        [attempt_1["spanID"], attempt_2["spanID"]]
    )
    assert {s["traceID"] for s in trace["spans"]} == {trace["traceID"]}
    view = latest(settings, handle.task_id)
    assert view is not None
    assert view.state is TaskState.SUCCEEDED
    assert view.trace_id == trace["traceID"]

    fetched = fetch_trace(jaeger.query_url, trace["traceID"])
    assert fetched is not None
    assert {s["spanID"] for s in fetched["spans"]} >= {s["spanID"] for s in trace["spans"]}
    drawn = render(fetched)
    assert f"task {handle.task_id} ({Flaky.task_name})" in drawn.splitlines()[0]
    assert "ConnectionError" in drawn


# what the README's service.py does, with the test's task type
_SERVICE = """
import sys
from streamjobs import Producer, Settings, telemetry
from tests.integration.jaeger_tasks import Flaky

settings = Settings()
telemetry.configure(settings, service_name=sys.argv[1])
with Producer(settings) as producer:
    handle = producer.submit(Flaky(token=sys.argv[1], failures=0), key="k")
    print(handle.task_id, handle.wait(timeout=60))
"""


def test_a_service_with_the_one_call_setup_exports_its_send_span_into_the_tasks_trace(
    jaeger: LocalJaeger,
    settings: Settings,
    traced_worker: Callable[[Settings, LocalJaeger, str], Path],
    unique_prefix: str,
    tmp_path: Path,
) -> None:
    worker_service = f"streamjobs-worker-{unique_prefix}"
    service = f"signup-{unique_prefix}"
    traced_worker(settings, jaeger, worker_service)
    env = worker_env(settings)
    env.pop("OTEL_SDK_DISABLED", None)
    env["STREAMJOBS_BOOTSTRAP_SERVERS"] = settings.bootstrap_servers
    env["STREAMJOBS_TOPIC_PREFIX"] = settings.topic_prefix
    env["STREAMJOBS_OTLP_ENDPOINT"] = jaeger.otlp_http_endpoint
    done = subprocess.run(
        [sys.executable, "-c", _SERVICE, service],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    task_id, result = done.stdout.split(maxsplit=1)
    assert result.strip() == "ok after 1 runs"

    def both_spans() -> dict[str, Any] | None:
        found = find_trace_by_task(jaeger.query_url, worker_service, task_id)
        return found if found is not None and len(found["spans"]) >= 3 else None

    try:
        trace = wait_for(both_spans, 30.0, interval=0.25, message="the task's trace in Jaeger")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_jaeger_state(jaeger)}\n{_log_of(tmp_path)}") from None
    (send,) = _span_by(trace, **{"span.kind": "producer"})
    (attempt,) = _span_by(trace, **{"span.kind": "consumer", "streamjobs.task_id": task_id})
    assert _service_of(trace, send) == service
    assert _service_of(trace, attempt) == worker_service
    assert _parent_of(attempt) == send["spanID"]


def test_unknown_trace_and_unknown_task_are_none(jaeger: LocalJaeger) -> None:
    assert fetch_trace(jaeger.query_url, "0" * 31 + "1") is None
    assert find_trace_by_task(jaeger.query_url, "no-such-service", "no-such-task") is None


def _accepting(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")


def test_local_jaeger_binds_loopback_and_stops_by_pid(tmp_path: Path) -> None:
    instance = LocalJaeger(tmp_path / "jaeger")
    instance.start()
    try:
        pid = instance.pid
        assert pid is not None
        ports = instance.ports
        assert all(_accepting(int(p)) for p in ports.env().values())
        listening = Path("/proc/net/tcp").read_text().splitlines()[1:]
        ours = {f"{int(p):04X}" for p in ports.env().values()}
        local = [line.split()[1] for line in listening if line.split()[3] == "0A"]
        assert {addr.split(":")[1] for addr in local if addr.split(":")[0] == "0100007F"} >= ours
        assert not [a for a in local if a.split(":")[1] in ours and a.split(":")[0] != "0100007F"]
    finally:
        instance.stop()

    assert instance.pid is None
    assert _gone(pid)
    assert not _accepting(ports.query_http)


def test_up_reuses_one_detached_jaeger_and_down_stops_it() -> None:
    ports = JaegerPorts.free()
    try:
        assert up(ports) == ports
        pid = running_pid(ports.query_http)
        assert pid is not None
        assert up(ports) == ports
        assert running_pid(ports.query_http) == pid

        assert down(ports.query_http)
        assert _gone(pid)
        assert running_pid(ports.query_http) is None
        assert not down(ports.query_http)
    finally:
        down(ports.query_http)
        shutil.rmtree(default_cache_dir() / "jaeger" / f"run-{ports.query_http}")


@pytest.mark.parametrize("rerun", ["replay", "redrive"])
def test_trace_of_a_rerun_task_shows_the_earlier_trace_it_links_to(
    rerun: str,
    jaeger: LocalJaeger,
    settings: Settings,
    traced_worker: Callable[[Settings, LocalJaeger, str], Path],
    span_relay: SpanRelay,
    unique_prefix: str,
    tmp_path: Path,
) -> None:
    from typer.testing import CliRunner

    from streamjobs import TaskFailed
    from streamjobs.cli import app
    from streamjobs.ops.redrive import redrive
    from streamjobs.ops.replay import replay

    worker_service = f"streamjobs-worker-{unique_prefix}"
    traced_worker(settings, jaeger, worker_service)
    # replay: a task that succeeded, run again; redrive: one dead-lettered after every attempt
    failures = 0 if rerun == "replay" else settings.max_attempts
    exporter = OTLPSpanExporter(endpoint=otlp_traces_url(jaeger.otlp_http_endpoint))
    with span_relay.routing(BatchSpanProcessor(exporter)):
        with Producer(settings) as producer:
            handle = producer.submit(Flaky(token=unique_prefix, failures=failures), key="k")
            if rerun == "replay":
                assert handle.wait(60.0) == "ok after 1 runs", _log_of(tmp_path)
            else:
                with pytest.raises(TaskFailed):
                    handle.wait(60.0)
        first = latest(settings, handle.task_id)
        assert first is not None
        if rerun == "replay":
            main = queue_topics(settings).main
            assert replay(settings, topic=main, from_offset=0, force=True).replayed == 1
        else:
            assert redrive(settings).redriven == 1

    def rerun_done() -> str | None:
        view = latest(settings, handle.task_id)
        done = view is not None and view.generation > first.generation and view.state.final
        return view.trace_id if done and view.trace_id != first.trace_id else None

    second_trace = wait_for(rerun_done, 60.0, interval=0.25, message=f"the {rerun} run")

    def both_in_jaeger() -> str | None:
        shown = CliRunner().invoke(
            app,
            ["trace", handle.task_id, "--bootstrap-servers", settings.bootstrap_servers,
             "--topic-prefix", settings.topic_prefix, "--jaeger", jaeger.query_url],
            catch_exceptions=False,
        )  # fmt: skip
        # every attempt of the first run (one, or all max_attempts) and the re-run's one
        complete = shown.exit_code == 0 and shown.output.count("process ") >= max(failures, 1) + 1
        return shown.output if complete else None

    try:
        drawn = wait_for(both_in_jaeger, 30.0, interval=0.5, message="both traces drawn")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_jaeger_state(jaeger)}\n{_log_of(tmp_path)}") from None
    headers = [line for line in drawn.splitlines() if line.startswith("trace ")]
    assert [h.split()[1] for h in headers] == [first.trace_id, second_trace]  # earliest first
    assert f"linked to {first.trace_id}" in drawn
    assert f"{rerun} " in drawn  # the re-run's own span, in the second trace


def test_the_readme_service_and_worker_with_an_otlp_endpoint_make_one_trace(
    jaeger: LocalJaeger,
    settings: Settings,
    unique_prefix: str,
    tmp_path: Path,
) -> None:
    from tests.integration.test_readme import readme_example

    (tmp_path / "tasks.py").write_text(readme_example("# tasks.py"))
    (tmp_path / "service.py").write_text(readme_example("# service.py"))
    env = worker_env(settings)
    env.pop("OTEL_SDK_DISABLED", None)
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
    env["STREAMJOBS_BOOTSTRAP_SERVERS"] = settings.bootstrap_servers
    env["STREAMJOBS_TOPIC_PREFIX"] = settings.topic_prefix
    env["STREAMJOBS_OTLP_ENDPOINT"] = jaeger.otlp_http_endpoint
    worker_service = f"streamjobs-worker-{unique_prefix}"
    command = [sys.executable, "-m", "streamjobs.cli", "consume", "tasks:registry"]
    command += ["--service-name", worker_service]
    log = tmp_path / "worker.log"
    with log.open("ab") as out:
        worker = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=out)
    try:
        done = subprocess.run(
            [sys.executable, "service.py"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr + _log_of(tmp_path)
        task_id = done.stdout.splitlines()[0].split()[1]

        def both_spans() -> dict[str, Any] | None:
            found = find_trace_by_task(jaeger.query_url, worker_service, task_id)
            return found if found is not None and len(found["spans"]) >= 2 else None

        try:
            trace = wait_for(both_spans, 30.0, interval=0.25, message="the README task's trace")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{_jaeger_state(jaeger)}\n{_log_of(tmp_path)}") from None
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30.0)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10.0)
    (send,) = _span_by(trace, **{"span.kind": "producer"})
    (attempt,) = _span_by(trace, **{"span.kind": "consumer", "streamjobs.task_id": task_id})
    assert _service_of(trace, send) == "signup"  # the README's service_name
    assert _service_of(trace, attempt) == worker_service
    assert _parent_of(attempt) == send["spanID"]
