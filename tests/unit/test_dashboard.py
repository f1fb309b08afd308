"""The dashboard app without a broker: login and CSRF rules, pages rendered from an index file,
the start-up password rule and the SVG charts (Starlette's TestClient, no server, no Kafka)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from streamjobs.client import Record
from streamjobs.dashboard import charts, pages
from streamjobs.dashboard.app import create_app
from streamjobs.dashboard.auth import startup_password
from streamjobs.dashboard.live import Backlog
from streamjobs.dashboard.pages import Dashboard, attempts_of
from streamjobs.envelope import Envelope
from streamjobs.errors import ConfigError
from streamjobs.index.follower import _applied
from streamjobs.index.queries import Bucket, IndexReader
from streamjobs.index.rows import schedule_changes, status_changes, worker_changes
from streamjobs.index.store import IndexStore
from streamjobs.metrics.heartbeat import WorkerReport, encode_report
from streamjobs.metrics.running import RunningTask
from streamjobs.models import TaskState
from streamjobs.scheduler.state import Definition, definition_key, encode_definition
from streamjobs.settings import Settings
from streamjobs.status import encode_status, now_ms

PASSWORD = "correct horse"


def _status(task_id: str, state: TaskState, at: int, attempt: int = 1, **fields: Any) -> Record:
    envelope = Envelope(
        task_id=task_id,
        task="Charge",
        queue="default",
        key="customer-7",
        payload=b"",
        payload_schema=bytes(8),
        submitted_at_ms=now_ms(),
        attempt=attempt,
    )
    value = encode_status(envelope, state, **fields)
    return Record("sj.status", 0, at, now_ms(), task_id.encode(), value, [])


@pytest.fixture
def index(tmp_path: Path) -> Path:
    path = tmp_path / "index.db"
    store = IndexStore(path)
    records = [
        _status("ok-1", TaskState.QUEUED, 0),
        _status("ok-1", TaskState.SUCCEEDED, 1, result='{"charged": 1}'),
        _status("bad-1", TaskState.RUNNING, 2, topic="sj.default", partition=0, offset=7),
        _status("bad-1", TaskState.RETRY_SCHEDULED, 3, error_type="ConnectionError",
                error="payment <gateway> down", note='Traceback ...\n  File "h.py", in charge'),
        _status("bad-1", TaskState.RUNNING, 4, attempt=2),
        _status("bad-1", TaskState.DEAD_LETTERED, 5, attempt=2, error_type="ConnectionError",
                error="payment <gateway> down", reason="max_attempts", note="Traceback 2"),
    ]  # fmt: skip
    parts: dict[int, list[tuple[int, list[Any]]]] = {0: []}
    for record in records:
        parts[0].append((record.offset, status_changes(record)))
    store.apply(_applied("sj.status", parts))
    store.close()
    return path


@pytest.fixture
def browser(index: Path) -> Iterator[TestClient]:
    settings = Settings(topic_prefix="sj", index_path=index)
    board = Dashboard(settings, index, Backlog(settings), SecretStr(PASSWORD))
    with TestClient(create_app(board, secret_key="test")) as client:
        yield client


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None, html
    return found.group(1)


def _log_in(browser: TestClient, password: str = PASSWORD) -> Any:
    token = _csrf(browser.get("/login").text)
    return browser.post("/login", data={"csrf": token, "password": password, "name": "ana"})


def test_every_page_sends_a_visitor_without_a_session_to_the_login_form(
    browser: TestClient,
) -> None:
    for path in ("/", "/tasks", "/tasks/bad-1", "/dead-letters", "/workers", "/schedules"):
        response = browser.get(path, follow_redirects=False)
        assert (response.status_code, response.headers["location"]) == (303, "/login"), path
    assert browser.post("/dead-letters/redrive", data={"ref": "0:1"}).status_code == 403


def test_a_wrong_password_is_refused_and_the_right_one_opens_the_overview(
    browser: TestClient,
) -> None:
    refused = _log_in(browser, "guess")
    assert refused.status_code == 401
    assert "wrong password" in refused.text
    assert browser.get("/tasks", follow_redirects=False).status_code == 303
    opened = _log_in(browser)
    assert opened.status_code == 200
    assert "Tasks per second by outcome" in opened.text
    assert "dead_lettered" in opened.text


def test_a_post_without_the_sessions_csrf_token_is_refused(browser: TestClient) -> None:
    assert browser.post("/login", data={"password": PASSWORD}).status_code == 403
    _log_in(browser)
    assert browser.post("/dead-letters/redrive", data={"ref": "0:1"}).status_code == 403
    forged = {"ref": "0:1", "csrf": "not-the-token"}
    assert browser.post("/dead-letters/redrive", data=forged).status_code == 403
    token = _csrf(browser.get("/dead-letters").text)
    confirm = browser.post("/dead-letters/redrive", data={"ref": "0:1", "csrf": token})
    assert confirm.status_code == 200
    assert "Yes, redrive" in confirm.text


def test_search_by_error_text_finds_the_failed_task_and_its_page_shows_attempts_and_traceback(
    browser: TestClient,
) -> None:
    _log_in(browser)
    found = browser.get("/tasks", params={"text": "gateway down"}).text
    assert "/tasks/bad-1" in found
    assert "/tasks/ok-1" not in found
    page = browser.get("/tasks/bad-1").text
    assert page.count('class="attempt"') == 2
    assert "payment &lt;gateway&gt; down" in page  # escaped, never markup
    assert "Traceback 2" in page
    assert "sj.default [0] @7" in page
    assert browser.get("/tasks/nope").status_code == 404


def _into_index(index: Path, topic: str, mapper: Any, *kvs: tuple[bytes, bytes | None]) -> None:
    store = IndexStore(index)
    try:
        offset = store.offsets(topic).get(0, 0)
        parts: dict[int, list[tuple[int, list[Any]]]] = {0: []}
        for n, (key, value) in enumerate(kvs):
            record = Record(topic, 0, offset + n, now_ms(), key, value, [])
            parts[0].append((record.offset, mapper(record)))
        store.apply(_applied(topic, parts))
    finally:
        store.close()


def test_the_workers_page_lists_live_then_lost_workers_from_their_heartbeats_in_the_index(
    browser: TestClient, index: Path
) -> None:
    now = now_ms()

    def report(worker_id: str, age_ms: int) -> tuple[bytes, bytes]:
        value = encode_report(WorkerReport(
            worker_id=worker_id, host="h", pid=1, version="0", queue="default", group="g",
            concurrency=1, started_at_ms=now - 60_000, reported_at_ms=now - age_ms,
            interval_ms=1000, partitions=3, in_flight=1, parked=0, started=2, succeeded=1,
            retried=0, dead_lettered=0,
            running=(RunningTask("t-9", "Charge", None, 1, now / 1000 - 12),),
        ))  # fmt: skip
        return worker_id.encode(), value

    _log_in(browser)
    assert "No worker heartbeats" in browser.get("/workers").text
    _into_index(
        index, "sj.workers", worker_changes, report("w-gone", 10_000), report("w-here", 200)
    )
    page = browser.get("/workers").text
    assert page.index("w-here") < page.index("w-gone")
    assert 'class="worker live"' in page
    assert 'class="worker lost"' in page
    assert "/tasks/t-9" in page
    assert "running for 12" in page
    _into_index(index, "sj.workers", worker_changes, (b"w-gone", None), (b"w-here", None))
    assert "No worker heartbeats" in browser.get("/workers").text


def test_the_schedules_page_lists_the_indexed_schedules_and_its_actions_need_the_csrf_token(
    browser: TestClient, index: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[tuple[str, Any]] = []
    monkeypatch.setattr(
        pages.manage, "set_paused", lambda settings, name, paused: asked.append((name, paused))
    )
    _log_in(browser)
    listing = browser.get("/schedules").text
    assert "No schedules on this queue" in listing
    nightly = Definition(
        name="nightly", queue="default", task="Charge", args_json="{}",
        created_at_ms=now_ms(), updated_at_ms=now_ms(), every_s=3600,
    )  # fmt: skip
    other = replace(nightly, name="elsewhere", queue="other")
    _into_index(
        index, "sj.schedules", schedule_changes,
        (definition_key("default", "nightly"), encode_definition(nightly)),
        (definition_key("other", "elsewhere"), encode_definition(other)),
    )  # fmt: skip
    listing = browser.get("/schedules").text
    assert "nightly" in listing
    assert "elsewhere" not in listing  # another queue's
    assert browser.post("/schedules/nightly/pause", data={}).status_code == 403
    done = browser.post("/schedules/nightly/pause", data={"csrf": _csrf(listing)})
    assert asked == [("nightly", True)]
    assert "nightly: paused" in done.text
    _into_index(
        index, "sj.schedules", schedule_changes, (definition_key("default", "nightly"), None)
    )
    assert "No schedules on this queue" in browser.get("/schedules").text


def test_the_packaged_stylesheet_is_served_and_pages_load_nothing_from_elsewhere(
    browser: TestClient,
) -> None:
    assert browser.get("/static/style.css").status_code == 200
    _log_in(browser)
    for path in ("/", "/tasks", "/tasks/bad-1", "/dead-letters"):
        html = browser.get(path).text
        assert not re.search(r'(src|href)="(https?:)?//', html), path


def test_the_dashboard_refuses_to_listen_beyond_loopback_without_a_password() -> None:
    with pytest.raises(ConfigError, match="STREAMJOBS_DASHBOARD_PASSWORD"):
        startup_password("0.0.0.0", None)
    given, generated = startup_password("0.0.0.0", SecretStr("s3cret"))
    assert (given.get_secret_value(), generated) == ("s3cret", False)
    made, generated = startup_password("127.0.0.1", None)
    assert generated
    assert len(made.get_secret_value()) >= 16


def test_attempts_group_the_history_by_generation_and_attempt(index: Path) -> None:
    with IndexReader(index) as reader:
        attempts = attempts_of(reader.history("bad-1"))
    assert [(a.attempt, a.outcome.state.value) for a in attempts] == [
        (1, "retry_scheduled"),
        (2, "dead_lettered"),
    ]


def test_charts_are_svg_with_one_bar_per_outcome_and_escaped_labels() -> None:
    buckets = [Bucket(0, {"succeeded": 60, "dead_lettered": 6}), Bucket(60_000, {})]
    svg = charts.outcome_bars(buckets, 60_000)
    assert svg.startswith("<svg")
    assert svg.count("<rect") == 2
    assert "1.1/s" in svg  # the peak: 66 outcomes in a minute
    assert "polyline" in charts.ratio_line(buckets)
    trace = {
        "spans": [
            {"spanID": "a", "operationName": "<send>", "startTime": 0, "duration": 10,
             "references": [], "processID": "p1", "tags": []},
            {"spanID": "b", "operationName": "process", "startTime": 5, "duration": 5,
             "references": [{"spanID": "a"}], "processID": "p1",
             "tags": [{"key": "error", "value": True}]},
        ],
        "processes": {"p1": {"serviceName": "svc"}},
    }  # fmt: skip
    waterfall = charts.waterfall(trace)
    assert "&lt;send&gt;" in waterfall
    assert "span-failed" in waterfall


def test_a_password_made_for_the_run_is_kept_in_a_file_only_its_user_reads(
    tmp_path: Path,
) -> None:
    from streamjobs.dashboard.server import DashboardServer

    said: list[str] = []
    settings = Settings(index_path=tmp_path / "i.db", dashboard_port=0)
    server = DashboardServer(settings, say=said.append)
    kept = tmp_path / "i.db.password"
    assert kept.read_text().strip() == server.password.get_secret_value()
    assert kept.stat().st_mode & 0o777 == 0o600
    assert server.password.get_secret_value() not in " ".join(said)
    server.follower.close()


def test_a_session_survives_a_dashboard_restart_and_ends_when_the_password_changes(
    tmp_path: Path,
) -> None:
    from streamjobs.dashboard.server import DashboardServer

    def started(password: str) -> Any:
        settings = Settings(
            index_path=tmp_path / "i.db", dashboard_port=0, dashboard_password=SecretStr(password)
        )
        server = DashboardServer(settings, say=lambda _: None)
        server.follower.close()
        return server.server.config.app

    with TestClient(started(PASSWORD)) as first:
        assert _log_in(first).status_code == 200
        cookies = dict(first.cookies)
    with TestClient(started(PASSWORD), cookies=cookies) as restarted:
        assert restarted.get("/tasks", follow_redirects=False).status_code == 200
    with TestClient(started("a new password"), cookies=cookies) as changed:
        assert changed.get("/tasks", follow_redirects=False).headers["location"] == "/login"
    key = tmp_path / "i.db.session-key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert PASSWORD.encode() not in key.read_bytes()
