"""Charts as inline SVG, rendered on the server: no JavaScript, nothing fetched by the browser.

Owns three pure functions from figures to SVG markup: :func:`outcome_bars` (tasks per second
by outcome over time, stacked), :func:`ratio_line` (the failure ratio over the same buckets)
and :func:`waterfall` (a Jaeger trace's spans on a time axis). Every text put in the markup is
escaped. Does not query anything or choose time ranges (:mod:`streamjobs.dashboard.pages`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

from streamjobs.index.queries import Bucket
from streamjobs.ops.traceview import duration_text, span_lines

#: Outcome colours, in stacking order (bottom first); the CSS legend uses the same classes.
OUTCOMES = ("succeeded", "retry_scheduled", "dead_lettered", "cancelled")
#: The outcomes the failure ratio counts as failed (a cancelled task did not fail).
FAILED = ("retry_scheduled", "dead_lettered")
_W, _H, _PAD = 720, 180, 34


def _clock(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M")


def _frame(body: list[str], label: str, top: str) -> str:
    axis = (
        f'<line x1="{_PAD}" y1="{_H - 20}" x2="{_W}" y2="{_H - 20}" class="axis"/>'
        f'<text x="2" y="14" class="tick">{escape(top)}</text>'
    )
    return (
        f'<svg viewBox="0 0 {_W} {_H}" width="100%" role="img" aria-label="{escape(label)}"'
        f' xmlns="http://www.w3.org/2000/svg">{axis}{"".join(body)}</svg>'
    )


def _ticks(buckets: Sequence[Bucket], step: float) -> list[str]:
    every = max(1, len(buckets) // 6)
    return [
        f'<text x="{_PAD + i * step:.1f}" y="{_H - 5}" class="tick">{_clock(b.start_ms)}</text>'
        for i, b in enumerate(buckets)
        if i % every == 0
    ]


def outcome_bars(buckets: Sequence[Bucket], bucket_ms: int) -> str:
    """Stacked bars of outcomes per second in each bucket (UTC times on the axis)."""
    if not buckets:
        return _frame([], "no data", "")
    seconds = bucket_ms / 1000
    totals = [sum(b.counts.get(o, 0) for o in OUTCOMES) / seconds for b in buckets]
    peak = max(totals) or 1.0
    step = (_W - _PAD) / len(buckets)
    height = _H - 40
    body: list[str] = []
    for i, bucket in enumerate(buckets):
        y = float(_H - 20)
        for outcome in OUTCOMES:
            rate = bucket.counts.get(outcome, 0) / seconds
            if not rate:
                continue
            h = rate / peak * height
            y -= h
            tip = f"{_clock(bucket.start_ms)} {outcome}: {rate:.2f}/s"
            body.append(
                f'<rect x="{_PAD + i * step:.1f}" y="{y:.1f}" width="{max(step - 1, 1):.1f}" '
                f'height="{h:.1f}" class="{outcome}"><title>{escape(tip)}</title></rect>'
            )
    return _frame(body + _ticks(buckets, step), "tasks per second by outcome", f"{peak:.1f}/s")


def ratio_line(buckets: Sequence[Bucket]) -> str:
    """The share of outcomes that failed (retry or dead letter) per bucket, 0 to 100 %."""
    if not buckets:
        return _frame([], "no data", "")
    step = (_W - _PAD) / len(buckets)
    height = _H - 40
    points = []
    for i, bucket in enumerate(buckets):
        total = sum(bucket.counts.get(o, 0) for o in OUTCOMES)
        failed = sum(bucket.counts.get(o, 0) for o in FAILED)
        ratio = failed / total if total else 0.0
        points.append(f"{_PAD + i * step + step / 2:.1f},{_H - 20 - ratio * height:.1f}")
    line = f'<polyline points="{" ".join(points)}" class="ratio"/>'
    return _frame([line, *_ticks(buckets, step)], "failure ratio", "100%")


def waterfall(trace: Mapping[str, Any]) -> str:
    """A Jaeger trace (its JSON) as one bar per span on a shared time axis, in the tree order of
    ``streamjobs trace`` (:func:`~streamjobs.ops.traceview.span_lines`): children indented under
    their parent, each service a letter of the legend, a process span with its attempt, failed
    spans marked with their error."""
    lines, total = span_lines(trace)
    if not lines:
        return _frame([], "empty trace", "")
    letters: dict[str, str] = {}
    for line in sorted(lines, key=lambda item: item.start_us):
        letters.setdefault(line.service, chr(ord("A") + len(letters) % 26))
    legend = " · ".join(f"{letter} {service}" for service, letter in letters.items())
    row_h, label_w, right = 22, 300, 150
    scale = (_W - label_w - right) / total
    body = [f'<text x="4" y="14" class="tick">{escape(legend)}</text>']
    for row, line in enumerate(lines, start=1):
        y = 6 + row * row_h
        x = label_w + line.start_us * scale
        w = max(line.duration_us * scale, 2)
        indent = 14 + 10 * min(line.depth, 8)
        name = _cut(line.name, (label_w - indent) // 6)
        title = f"{line.service}: {line.name} ({duration_text(line.duration_us)})"
        if line.error:
            title += f"\n! {line.error}"
        title += "".join(f"\nlinked to {link}" for link in line.links)
        note = duration_text(line.duration_us) + (f"  ! {line.error}" if line.error else "")
        kind = "span-failed" if line.error else "span"
        body.append(
            f'<text x="4" y="{y + 14}" class="span-label">{letters[line.service]}</text>'
            f'<text x="{indent}" y="{y + 14}" class="span-label">{escape(name)}</text>'
            f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="14" '
            f'class="{kind}"><title>{escape(title)}</title></rect>'
            f'<text x="{x + w + 4:.1f}" y="{y + 14}" class="tick">{escape(note[:60])}</text>'
        )
    height = 12 + (len(lines) + 1) * row_h
    return (
        f'<svg viewBox="0 0 {_W} {height}" width="100%" role="img" aria-label="trace waterfall"'
        f' xmlns="http://www.w3.org/2000/svg">{"".join(body)}</svg>'
    )


def _cut(text: str, width: int) -> str:
    """``text`` in ``width`` characters, cut in the middle: a topic's tail and the attempt stay."""
    if len(text) <= width:
        return text
    tail = min(14, width // 2)
    return text[: max(width - tail - 1, 0)] + "…" + text[-tail:]
