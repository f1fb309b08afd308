"""The trace waterfall, drawn from JSON recorded from a real Jaeger (tests/unit/data/).

``jaeger_trace_retried.json``: ``/api/traces?service=...&tags=...`` for a task submitted by the
test process (service ``streamjobs-tests``) and run by ``streamjobs consume`` (service
``streamjobs-worker-tc7d8d2b6``) that failed once and succeeded on its retry; each attempt ran a
handler span ``call backend``. ``jaeger_traces_redrive.json``: a whole ``/api/traces`` response
with two traces, a submit and a redrive linked to it.
"""

from __future__ import annotations

import copy
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from streamjobs.errors import StreamJobsError
from streamjobs.ops.traceview import duration_text, fetch_trace, render, span_lines

DATA = Path(__file__).parent / "data"


def _load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DATA / name).read_text(encoding="utf-8"))
    return loaded


@pytest.fixture
def retried() -> dict[str, Any]:
    return _load("jaeger_trace_retried.json")


def test_retried_task_is_drawn_as_one_tree_with_attempts_errors_and_services(
    retried: dict[str, Any],
) -> None:
    assert render(retried).splitlines() == [
        "trace 776891ff5666c4b77eadb8cb8f2ea8e5  task 28faeec7dd2643e4895e94ad9d4a3b65 (Flaky)"
        "  5 spans  2 failed  842 ms",
        "services: A streamjobs-tests  B streamjobs-worker-tc7d8d2b6",
        " " * 49 + "0" + " " * 34 + "842 ms",
        "A send tc7d8d2b6.default                         |█" + " " * 39 + "|   110 µs",
        "B └─ process tc7d8d2b6.default #1                |"
        + " " * 13
        + "█"
        + " " * 26
        + "|    13 ms",
        "     │  ! ConnectionError: backend down (run 1)",
        "B    ├─ call backend                             |"
        + " " * 14
        + "█"
        + " " * 25
        + "|   2.0 ms",
        "     │     ! ConnectionError: backend down (run 1)",
        "B    └─ process tc7d8d2b6.default.retry.300ms #2 |" + " " * 39 + "█|   1.5 ms",
        "B       └─ call backend                          |" + " " * 39 + "█|    22 µs",
    ]


def test_span_lines_give_another_drawing_the_same_tree_attempts_and_errors(
    retried: dict[str, Any],
) -> None:
    lines, total = span_lines(retried)
    worker = "streamjobs-worker-tc7d8d2b6"
    assert [(line.depth, line.name, line.service, line.error) for line in lines] == [
        (0, "send tc7d8d2b6.default", "streamjobs-tests", None),
        (1, "process tc7d8d2b6.default #1", worker, "ConnectionError: backend down (run 1)"),
        (2, "call backend", worker, "ConnectionError: backend down (run 1)"),
        (2, "process tc7d8d2b6.default.retry.300ms #2", worker, None),
        (3, "call backend", worker, None),
    ]
    assert lines[0].start_us == 0
    assert all(0 <= line.start_us + line.duration_us <= total for line in lines)
    assert duration_text(total) == "842 ms"
    assert span_lines({"traceID": "x", "spans": []}) == ([], 0)


@pytest.mark.parametrize("width", [60, 80, 100, 140])
def test_every_span_line_fits_the_width(retried: dict[str, Any], width: int) -> None:
    span_lines = [line for line in render(retried, width=width).splitlines() if "|" in line]
    assert len(span_lines) == 5
    assert {len(line) for line in span_lines} == {width}
    assert all(line.endswith(("µs", "ms")) for line in span_lines)


def test_long_names_are_cut_in_the_middle_keeping_tree_and_attempt(
    retried: dict[str, Any],
) -> None:
    lines = render(retried, width=70).splitlines()
    assert lines[8].startswith("B    └─ process tc7d8d2b6…try.300ms #2 |")


def test_an_api_response_with_several_traces_draws_each_and_shows_links() -> None:
    drawn = render(_load("jaeger_traces_redrive.json")).split("\n\n")

    assert len(drawn) == 2
    redrive, original = (d.splitlines() for d in drawn)
    assert redrive[0].startswith("trace 3632d50ce2669b1c5394ae1a4f48f641  task task-1 (Flaky)")
    assert redrive[3].startswith("A redrive q.default ")
    assert redrive[4] == "  │  ↪ linked to 32d4c0cea746f4565e93ce30d4b0e1d2/9bab1776a24fc63a"
    assert redrive[5].startswith("A └─ process q.default #1 ")
    assert original[0].startswith("trace 32d4c0cea746f4565e93ce30d4b0e1d2")
    assert original[3].startswith("A send q.default ")


def test_a_span_whose_parent_never_reached_jaeger_starts_its_own_marked_tree(
    retried: dict[str, Any],
) -> None:
    without_send = copy.deepcopy(retried)
    without_send["spans"] = [
        s for s in without_send["spans"] if not s["operationName"].startswith("send")
    ]
    lines = render(without_send).splitlines()

    assert "services: A streamjobs-worker-tc7d8d2b6" in lines
    assert lines[3].startswith("A … process tc7d8d2b6.default #1 ")
    assert lines[5].startswith("A ├─ call backend ")


def test_a_trace_without_spans_says_so() -> None:
    assert render({"traceID": "abc", "spans": [], "processes": {}}) == "trace abc: no spans"
    assert render({"data": []}) == ""


def test_fetching_from_an_unreachable_jaeger_raises_our_error() -> None:
    with socket.socket() as sock:  # a port nobody listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with pytest.raises(StreamJobsError, match="cannot reach Jaeger"):
            fetch_trace(f"http://127.0.0.1:{port}", "0" * 32, timeout=2.0)
