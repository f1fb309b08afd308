"""The dashboard's queue dimension without a broker: a row per queue, refs that name their queue,
the index following each queue's dead letters, and pages of a dashboard showing two queues
(Starlette's TestClient over an index file); a cancel requested and not reached yet."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from streamjobs.cancels import CancelRequest, encode_cancel
from streamjobs.client import Record
from streamjobs.dashboard import charts, letters
from streamjobs.dashboard.app import create_app
from streamjobs.dashboard.live import Backlog, BacklogFigures, QueueFigures
from streamjobs.dashboard.pages import Dashboard
from streamjobs.dashboard.queues import by_queue, queue_rows, split_ref, state_columns
from streamjobs.envelope import Envelope
from streamjobs.errors import ConfigError
from streamjobs.index.follower import _applied, feeds
from streamjobs.index.queries import Bucket, IndexReader
from streamjobs.index.rows import cancel_changes, dead_letter_changes, status_changes
from streamjobs.index.store import IndexStore
from streamjobs.models import TaskState
from streamjobs.ops.inspect import PartitionLag, TierBacklog
from streamjobs.ops.redrive import RedriveItem, RedriveSummary
from streamjobs.settings import Settings
from streamjobs.status import encode_status, now_ms

PASSWORD = "correct horse"


def _figures(queue: str, lag: int, tier: int) -> QueueFigures:
    main = PartitionLag(f"sj.{queue}", 0, 0, 10, 10 - lag, lag)
    retry = PartitionLag(f"sj.{queue}.retry.5s", 0, 0, tier, 0, tier)
    backlog = TierBacklog(f"sj.{queue}.retry.5s", "retry", timedelta(seconds=5), tier, None)
    return QueueFigures(queue, [main, retry], [backlog])


def test_a_queue_row_counts_its_states_dead_letters_lag_and_tier_backlog() -> None:
    live = BacklogFigures(1, [_figures("critical", 3, 2)])
    states = {"critical": {"succeeded": 5, "queued": 1}, "low": {"cancelled": 2}}
    rows = queue_rows(["critical", "low"], states, {"low": (4, 1)}, live)
    assert [(r.queue, r.tasks, r.dead_letters, r.redriven) for r in rows] == [
        ("critical", 6, 0, 0),
        ("low", 2, 4, 1),
    ]
    assert list(rows[0].states) == ["queued", "succeeded"]  # a task's life order
    assert (rows[0].lag, rows[0].tier_backlog) == (3, 2)  # the tier's lag is not main lag
    assert (rows[1].lag, rows[1].tier_backlog) == (None, None)  # not read from Kafka yet
    assert state_columns(rows) == ["queued", "succeeded", "cancelled"]


def test_a_dashboard_ref_names_its_queue_and_a_bare_one_means_the_first_queue() -> None:
    queues = ("critical", "low")
    assert split_ref("low:0:7", queues) == ("low", "0:7")
    assert split_ref("0:7", queues) == ("critical", "0:7")
    for bad in ("elsewhere:0:7", "low:x:7", "7", "a:b:c:d"):
        with pytest.raises(ConfigError):
            split_ref(bad, queues)
    assert by_queue(["low:1:2", "0:3", "low:0:9"], queues) == {
        "critical": ["0:3"],
        "low": ["1:2", "0:9"],
    }


def test_the_index_follows_the_dead_letters_and_redrive_ledger_of_every_queue_shown() -> None:
    one = [f.topic for f in feeds(Settings(topic_prefix="sj"))]
    assert one == [
        "sj.status", "sj.submitted", "sj.default.dlq", "sj.default.dlq.redriven",
        "sj.workers", "sj.schedules", "sj.cancels",
    ]  # fmt: skip
    several = [f.topic for f in feeds(Settings(topic_prefix="sj", queues=["critical", "low"]))]
    assert [t for t in several if ".dlq" in t] == [
        "sj.critical.dlq", "sj.critical.dlq.redriven", "sj.low.dlq", "sj.low.dlq.redriven",
    ]  # fmt: skip


def test_cancelled_outcomes_are_a_bar_of_their_own_and_not_failures() -> None:
    buckets = [Bucket(0, {"succeeded": 30, "cancelled": 30})]
    assert 'class="cancelled"' in charts.outcome_bars(buckets, 60_000)
    line = charts.ratio_line(buckets)
    assert re.search(r'points="[\d.]+,160.0"', line)  # 0 % failed


def _status(task_id: str, queue: str, state: TaskState, at: int, **fields: Any) -> Record:
    envelope = Envelope(
        task_id=task_id, task="Charge", queue=queue, key=None, payload=b"",
        payload_schema=bytes(8), submitted_at_ms=now_ms(),
    )  # fmt: skip
    value = encode_status(envelope, state, **fields)
    return Record("sj.status", 0, at, now_ms(), task_id.encode(), value, [])


def _apply(store: IndexStore, topic: str, mapper: Any, records: list[Record]) -> None:
    parts: dict[int, list[tuple[int, list[Any]]]] = {0: []}
    for record in records:
        parts[0].append((record.offset, mapper(record)))
    store.apply(_applied(topic, parts))


@pytest.fixture
def two_queues(tmp_path: Path) -> Iterator[tuple[TestClient, Dashboard]]:
    """A dashboard of critical and low: a task of each (and one of a queue not shown), a dead
    letter of each."""
    path = tmp_path / "index.db"
    store = IndexStore(path)
    _apply(store, "sj.status", status_changes, [
        _status("crit-1", "critical", TaskState.SUCCEEDED, 0),
        _status("low-1", "low", TaskState.QUEUED, 1),
        _status("low-2", "low", TaskState.CANCELLED, 2, reason="cancelled"),
        _status("else-1", "elsewhere", TaskState.QUEUED, 3),
    ])  # fmt: skip
    for queue in ("critical", "low"):
        dlq = f"sj.{queue}.dlq"
        _apply(
            store, dlq, dead_letter_changes(queue), [Record(dlq, 0, 5, now_ms(), b"x", b"\x00", [])]
        )
    store.close()
    settings = Settings(topic_prefix="sj", index_path=path, queues=["critical", "low"])
    board = Dashboard(settings, path, Backlog(settings), SecretStr(PASSWORD))
    board.backlog.latest = BacklogFigures(
        now_ms(), [_figures("critical", 3, 0), _figures("low", 7, 2)]
    )
    with TestClient(create_app(board, secret_key="test")) as client:
        token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)
        assert token is not None
        client.post("/login", data={"csrf": token.group(1), "password": PASSWORD, "name": "ana"})
        yield client, board


def _cells(html: str, row_id: str) -> list[str]:
    found = re.search(rf'<tr class="queue" id="{row_id}">(.*?)</tr>', html, re.S)
    assert found is not None, html
    return [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td.*?</td>", found[1], re.S)]


def test_the_overview_has_a_row_per_queue_shown_and_charts_of_all_or_one(
    two_queues: tuple[TestClient, Dashboard],
) -> None:
    browser, _ = two_queues
    page = browser.get("/").text
    assert "Queues critical, low" in page
    # queue, queued, succeeded, cancelled, dead letters, lag, tier backlog
    assert _cells(page, "queue-critical") == ["critical", "0", "1", "0", "1", "3", "0"]
    assert _cells(page, "queue-low") == ["low", "1", "0", "1", "1", "7", "2"]
    assert "queue-elsewhere" not in page
    assert "sj.low.retry.5s" in page  # its tier, with the queue's lag rows
    states = re.search(r'<table id="states">(.*?)</table>', page, re.S)
    assert states is not None
    assert "queued" in states[1]
    assert "succeeded" in states[1]
    low = browser.get("/", params={"queue": "low"}).text
    only = re.search(r'<table id="states">(.*?)</table>', low, re.S)
    assert only is not None
    assert "succeeded" not in only[1]
    assert "sj.critical</td>" not in low  # lag rows of the queue chosen
    assert browser.get("/", params={"queue": "elsewhere"}).status_code == 404


def test_tasks_of_every_queue_are_listed_with_their_queue_and_filtered_by_one(
    two_queues: tuple[TestClient, Dashboard],
) -> None:
    browser, _ = two_queues
    every = browser.get("/tasks").text
    assert re.search(r'crit-1</a></td>\s*<td>Charge</td><td class="queue">critical</td>', every)
    assert re.search(r'low-1</a></td>\s*<td>Charge</td><td class="queue">low</td>', every)
    low = browser.get("/tasks", params={"queue": "low"}).text
    assert "/tasks/low-1" in low
    assert "/tasks/crit-1" not in low


def test_dead_letters_of_every_queue_are_listed_and_redriven_through_their_own_queue(
    two_queues: tuple[TestClient, Dashboard], monkeypatch: pytest.MonkeyPatch
) -> None:
    browser, _ = two_queues
    listing = browser.get("/dead-letters").text
    assert 'value="critical:0:5"' in listing
    assert 'value="low:0:5"' in listing
    assert 'value="critical:0:5"' not in browser.get("/dead-letters?queue=low").text
    ran: list[tuple[str, list[str]]] = []

    def redrive(settings: Settings, *, refs: list[str], actor: str) -> RedriveSummary:
        ran.append((settings.queue, refs))
        return RedriveSummary([RedriveItem(ref, "redriven") for ref in refs])

    monkeypatch.setattr(letters, "redrive", redrive)
    token = re.search(r'name="csrf" value="([^"]+)"', listing)
    assert token is not None
    form = {"csrf": token[1], "ref": ["low:0:5", "critical:0:5"], "confirm": "yes"}
    confirm = browser.post("/dead-letters/redrive", data=form).text
    assert "<code>critical:0:5</code>" in confirm
    assert "<code>low:0:5</code>" in confirm
    done = browser.post("/dead-letters/redrive/confirm", data=form)
    assert sorted(ran) == [("critical", ["0:5"]), ("low", ["0:5"])]
    assert "2 redriven" in done.text
    refused = {**form, "ref": ["elsewhere:0:5"]}
    assert browser.post("/dead-letters/redrive", data=refused).status_code == 400


def test_the_index_counts_several_queues_at_once(two_queues: tuple[TestClient, Dashboard]) -> None:
    _, board = two_queues
    with IndexReader(board.index_path) as index:
        assert index.state_counts(("critical", "low")) == {
            "cancelled": 1, "queued": 1, "succeeded": 1,
        }  # fmt: skip
        assert index.state_counts("low") == {"cancelled": 1, "queued": 1}
        assert index.dead_letters_by_queue() == {"critical": (1, 0), "low": (1, 0)}


def _cancel(task_id: str, generation: int, offset: int, *, gone: bool = False) -> Record:
    request = CancelRequest(task_id, "Charge", "low", generation, 1_700_000_000_000, "ana")
    value = None if gone else encode_cancel(request)
    return Record("sj.cancels", 0, offset, now_ms(), task_id.encode(), value, [])


def test_a_cancel_requested_for_a_queued_task_is_pending_until_a_worker_writes_cancelled(
    two_queues: tuple[TestClient, Dashboard],
) -> None:
    browser, board = two_queues
    store = IndexStore(board.index_path)
    _apply(store, "sj.cancels", cancel_changes, [_cancel("low-1", 0, 0)])
    with IndexReader(board.index_path) as index:
        queued = index.task("low-1")
        assert queued is not None
        assert queued.state is TaskState.QUEUED  # the state stays what workers wrote
        pending = index.pending_cancel(queued)
        assert pending is not None
        assert (pending.generation, pending.requested_by) == (0, "ana")
        assert index.pending_cancel(replace(queued, generation=1)) is None  # a later replay
    page = browser.get("/tasks/low-1").text
    assert 'id="cancel-pending"' in page
    assert "by ana" in page
    _apply(store, "sj.status", status_changes, [
        _status("low-1", "low", TaskState.CANCELLED, 10, reason="cancelled"),
    ])  # fmt: skip
    with IndexReader(board.index_path) as index:
        done = index.task("low-1")
        assert done is not None
        assert index.pending_cancel(done) is None  # reached: nothing pending any more
    _apply(store, "sj.cancels", cancel_changes, [_cancel("low-1", 0, 1, gone=True)])
    store.close()
    assert 'id="cancel-pending"' not in browser.get("/tasks/low-1").text
