"""A task's trace as text: fetch it from Jaeger's HTTP query API and draw it as a waterfall.

Owns reading Jaeger's query API (``/api/traces/<trace id>`` and the tag search
``/api/traces?service=...&tags=...``) with the standard library, :func:`span_lines` (a trace's
spans as a tree in drawing order, for any drawing: the dashboard's SVG waterfall) and
:func:`render`, a pure function from that JSON to an indented span tree with time bars::

    trace 7768...  task 28fa... (Flaky)  5 spans  2 failed  842 ms
    services: A streamjobs-tests  B streamjobs-worker
                                           0 ms                        842 ms
    A send t.default                      |█                          |   101 µs
    B └─ process t.default #1             |     █                     |    13 ms
         │  ! ConnectionError: backend down (run 1)
    B    ├─ call backend                  |      █                    |   2.0 ms
         │     ! ConnectionError: backend down (run 1)
    B    └─ process t.default.retry.300ms #2 ...

Deliberately does not print, pick a terminal width, know about Kafka, or speak OTLP: the CLI
(``streamjobs trace TASK_ID``) fetches, renders and prints; spans reach Jaeger through
:mod:`streamjobs.tracing` and whatever exporter the application configured.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from streamjobs.errors import StreamJobsError
from streamjobs.tracing import ATTR_ATTEMPT, ATTR_TASK, ATTR_TASK_ID

__all__ = [
    "SpanLine",
    "duration_text",
    "fetch_trace",
    "fetch_with_links",
    "find_trace_by_task",
    "linked_trace_ids",
    "render",
    "span_lines",
]

_LABEL_MAX = 60
_BAR_MIN = 20
_DURATION_WIDTH = 9
_LEGEND = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass
class _Span:
    span_id: str
    parent_id: str | None
    name: str
    service: str
    start_us: int
    duration_us: int
    tags: dict[str, Any]
    links: list[str] = field(default_factory=list)
    children: list[_Span] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.tags.get("error") is True or self.tags.get("otel.status_code") == "ERROR"

    @property
    def error_text(self) -> str:
        text = self.tags.get("otel.status_description") or self.tags.get("error.type") or "error"
        return str(text)


@dataclass
class _Row:
    label: str
    span: _Span
    notes: list[str]
    depth: int
    name: str


@dataclass(frozen=True, slots=True)
class SpanLine:
    """One span of a trace as a waterfall shows it, in drawing order (depth-first, siblings in
    start order): for a drawing other than :func:`render`'s text (the dashboard's SVG)."""

    depth: int  # 0 for a root (or a span whose parent never reached Jaeger)
    name: str  # the operation; a process span with its attempt (``#2``), an orphan with ``…``
    service: str
    start_us: int  # from the start of the trace's first span
    duration_us: int
    error: str | None  # the failure's description if the span failed
    links: tuple[str, ...]  # ``trace id/span id`` of each linked span (a redrive's original)


def span_lines(trace: Mapping[str, Any]) -> tuple[list[SpanLine], int]:
    """The spans of one trace (Jaeger's trace object) in drawing order, and the trace's length
    in microseconds (pure)."""
    spans = _parse(trace)
    if not spans:
        return [], 0
    rows, t0, total = _laid_out(spans)
    return [
        SpanLine(
            depth=row.depth,
            name=row.name,
            service=row.span.service,
            start_us=row.span.start_us - t0,
            duration_us=row.span.duration_us,
            error=row.span.error_text if row.span.failed else None,
            links=tuple(row.span.links),
        )
        for row in rows
    ], total


def render(trace_json: Mapping[str, Any], *, width: int = 100) -> str:
    """Draw one trace (Jaeger's trace object) or every trace of an API response as text.

    Spans form a tree by their CHILD_OF references, siblings in start order; a span whose parent
    never reached Jaeger starts its own tree, marked ``…``. Each line shows the span (a process
    span with its attempt number), its service as a letter from the legend, a bar on the trace's
    timeline and its duration; failures and links (a redrive's original trace) follow as notes.
    """
    traces = trace_json.get("data")
    if isinstance(traces, list):
        return "\n\n".join(_render_one(t, width) for t in traces if isinstance(t, Mapping))
    return _render_one(trace_json, width)


def _render_one(trace: Mapping[str, Any], width: int) -> str:
    spans = _parse(trace)
    if not spans:
        return f"trace {trace.get('traceID', '?')}: no spans"
    rows, t0, total = _laid_out(spans)
    letters = _letters(spans)
    # a line is: letter, space, label, space, |bar|, duration
    fixed = _DURATION_WIDTH + 5
    label_w = min(max(len(r.label) for r in rows), _LABEL_MAX, max(width - fixed - _BAR_MIN, 12))
    bar_w = max(width - fixed - label_w, _BAR_MIN)
    lines = [_header(trace, spans, total), _legend(letters)]
    length = duration_text(total)
    lines.append(" " * (label_w + 3) + "0".ljust(bar_w - len(length) + 1) + length)
    for row in rows:
        bar = _bar(row.span.start_us - t0, row.span.duration_us, total, bar_w)
        lines.append(
            f"{letters[row.span.service]} {_fit(row.label, label_w)} |{bar}|"
            + duration_text(row.span.duration_us).rjust(_DURATION_WIDTH)
        )
        lines.extend(f"  {note}" for note in row.notes)
    return "\n".join(lines)


def _laid_out(spans: list[_Span]) -> tuple[list[_Row], int, int]:
    """The rows of ``spans`` (not empty) in drawing order, the first start and the length."""
    t0 = min(s.start_us for s in spans)
    total = max(max(s.start_us + s.duration_us for s in spans) - t0, 1)
    rows: list[_Row] = []
    for root in _tree(spans):
        _rows(root, "", "", rows)
    return rows, t0, total


def _parse(trace: Mapping[str, Any]) -> list[_Span]:
    processes = trace.get("processes") or {}
    spans: list[_Span] = []
    for raw in trace.get("spans") or ():
        tags = {t.get("key"): t.get("value") for t in raw.get("tags") or ()}
        parent: str | None = None
        links: list[str] = []
        for ref in raw.get("references") or ():
            same_trace = ref.get("traceID") == raw.get("traceID")
            if ref.get("refType") == "CHILD_OF" and same_trace and parent is None:
                parent = ref.get("spanID")
            else:  # an OpenTelemetry link arrives as FOLLOWS_FROM
                links.append(f"{ref.get('traceID')}/{ref.get('spanID')}")
        process = processes.get(raw.get("processID")) or {}
        spans.append(
            _Span(
                span_id=str(raw.get("spanID")),
                parent_id=parent,
                name=str(raw.get("operationName", "?")),
                service=str(process.get("serviceName", "?")),
                start_us=int(raw.get("startTime", 0)),
                duration_us=int(raw.get("duration", 0)),
                tags=tags,
                links=links,
            )
        )
    return spans


def _tree(spans: list[_Span]) -> list[_Span]:
    """Link children to parents; returns the roots, spans whose parent is absent included."""
    by_id = {s.span_id: s for s in spans}
    roots: list[_Span] = []
    for span in sorted(spans, key=lambda s: (s.start_us, s.span_id)):
        parent = by_id.get(span.parent_id) if span.parent_id else None
        (parent.children if parent is not None else roots).append(span)
    # true roots first, then spans whose parent Jaeger never received
    return sorted(roots, key=lambda s: (s.parent_id is not None, s.start_us))


def _rows(span: _Span, prefix: str, branch: str, rows: list[_Row], depth: int = 0) -> None:
    """Append ``span`` and its subtree; ``prefix`` + ``branch`` draw the tree lines."""
    name = span.name
    attempt = span.tags.get(ATTR_ATTEMPT)
    if attempt is not None and span.tags.get("span.kind") == "consumer":
        name += f" #{attempt}"
    if not branch and span.parent_id is not None:
        name = "… " + name  # its parent is not in this trace (not exported, or lost)
    child_prefix = prefix + {"": "", "└─ ": "   "}.get(branch, "│  ")
    note_prefix = child_prefix + ("│  " if span.children else "   ")
    notes = [f"{note_prefix}! {span.error_text}"] if span.failed else []
    notes += [f"{note_prefix}↪ linked to {link}" for link in span.links]
    rows.append(_Row(prefix + branch + name, span, notes, depth, name))
    for i, child in enumerate(span.children):
        last = i == len(span.children) - 1
        _rows(child, child_prefix, "└─ " if last else "├─ ", rows, depth + 1)


def _letters(spans: list[_Span]) -> dict[str, str]:
    """A letter per service, in order of first appearance on the timeline."""
    order: list[str] = []
    for span in sorted(spans, key=lambda s: s.start_us):
        if span.service not in order:
            order.append(span.service)
    return {svc: _LEGEND[i] if i < len(_LEGEND) else "?" for i, svc in enumerate(order)}


def _legend(letters: dict[str, str]) -> str:
    return "services: " + "  ".join(f"{letter} {svc}" for svc, letter in letters.items())


def _header(trace: Mapping[str, Any], spans: list[_Span], total_us: int) -> str:
    parts = [f"trace {trace.get('traceID', '?')}"]
    tagged = next((s for s in spans if ATTR_TASK_ID in s.tags), None)
    if tagged is not None:
        parts.append(f"task {tagged.tags[ATTR_TASK_ID]} ({tagged.tags.get(ATTR_TASK, '?')})")
    parts.append(f"{len(spans)} span{'s' if len(spans) != 1 else ''}")
    failed = sum(1 for s in spans if s.failed)
    if failed:
        parts.append(f"{failed} failed")
    parts.append(duration_text(total_us))
    return "  ".join(parts)


def _bar(offset_us: int, duration_us: int, total_us: int, width: int) -> str:
    start = min(int(offset_us * width / total_us), width - 1)
    end = max(start + 1, min(round((offset_us + duration_us) * width / total_us), width))
    return " " * start + "█" * (end - start) + " " * (width - end)


def _fit(text: str, width: int) -> str:
    """``text`` padded to ``width``, or cut in the middle (the tree and the attempt survive)."""
    if len(text) <= width:
        return text.ljust(width)
    tail = min(12, width // 3)
    return text[: width - tail - 1] + "…" + text[-tail:]


def duration_text(us: int) -> str:
    """A span's duration as people read it: ``110 µs``, ``2.0 ms``, ``13 ms``, ``1.20 s``."""
    if us >= 1_000_000:
        return f"{us / 1_000_000:.2f} s"
    if us >= 10_000:
        return f"{us / 1000:.0f} ms"
    if us >= 1000:
        return f"{us / 1000:.1f} ms"
    return f"{us} µs"


# -- Jaeger's HTTP query API ------------------------------------------------------------------


def fetch_trace(query_url: str, trace_id: str, *, timeout: float = 10.0) -> dict[str, Any] | None:
    """The trace ``trace_id`` (32 hex digits) from Jaeger at ``query_url``, or None if unknown.

    Raises :class:`StreamJobsError` if Jaeger cannot be reached or answers with an error.
    """
    url = f"{query_url.rstrip('/')}/api/traces/{urllib.parse.quote(trace_id)}"
    found = _get(url, timeout)
    traces = found.get("data") if found is not None else None
    return traces[0] if isinstance(traces, list) and traces else None


def linked_trace_ids(trace: Mapping[str, Any]) -> list[str]:
    """The other traces ``trace`` links to (a redrive's or replay's span links the run it
    re-submits), in first-seen order (pure)."""
    own = trace.get("traceID")
    found: dict[str, None] = {}
    for raw in trace.get("spans") or ():
        for ref in raw.get("references") or ():
            other = ref.get("traceID")
            if other and other != own and other != raw.get("traceID"):
                found[str(other)] = None
    return list(found)


def fetch_with_links(
    query_url: str, trace_id: str, *, limit: int = 10, timeout: float = 10.0
) -> list[dict[str, Any]]:
    """The trace ``trace_id`` and every trace it links to, transitively (a task redriven twice:
    three traces), at most ``limit``, earliest first; empty if ``trace_id`` is unknown. A linked
    trace Jaeger no longer has is left out."""
    traces: dict[str, dict[str, Any]] = {}
    asked: set[str] = set()
    todo = [trace_id]
    while todo and len(traces) < limit:
        wanted = todo.pop(0)
        if wanted in asked:
            continue
        asked.add(wanted)
        found = fetch_trace(query_url, wanted, timeout=timeout)
        if found is not None:
            traces[str(found.get("traceID", wanted))] = found
            todo += linked_trace_ids(found)
    return sorted(traces.values(), key=_started_us)


def _started_us(trace: Mapping[str, Any]) -> int:
    return min((int(s.get("startTime", 0)) for s in trace.get("spans") or ()), default=0)


def find_trace_by_task(
    query_url: str,
    service: str,
    task_id: str,
    *,
    lookback: timedelta = timedelta(days=2),
    timeout: float = 10.0,
) -> dict[str, Any] | None:
    """The trace in which ``service`` recorded a span for ``task_id``, or None.

    Searches by the ``streamjobs.task_id`` tag. A task redriven or replayed has several traces
    (each re-run starts one linked to the original); the one that started first is returned.
    """
    end_us = int(time.time() * 1_000_000)
    query = urllib.parse.urlencode(
        {
            "service": service,
            "tags": json.dumps({ATTR_TASK_ID: task_id}),
            "start": end_us - int(lookback.total_seconds() * 1_000_000),
            "end": end_us,
            "limit": 20,
        }
    )
    found = _get(f"{query_url.rstrip('/')}/api/traces?{query}", timeout)
    traces = [t for t in (found or {}).get("data") or () if t.get("spans")]
    if not traces:
        return None
    first: dict[str, Any] = min(traces, key=lambda t: min(s["startTime"] for s in t["spans"]))
    return first


def _get(url: str, timeout: float) -> dict[str, Any] | None:
    """GET ``url`` as JSON; None on 404 (Jaeger's "trace not found")."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        detail = exc.read().decode("utf-8", "replace")[:500]
        raise StreamJobsError(f"Jaeger answered {exc.code} for {url}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise StreamJobsError(f"cannot reach Jaeger at {url}: {exc}") from None
    try:
        found = json.loads(body)
    except ValueError:
        raise StreamJobsError(f"Jaeger sent something other than JSON for {url}") from None
    if not isinstance(found, dict):
        raise StreamJobsError(f"unexpected answer from Jaeger for {url}: {body[:200]!r}")
    return found
