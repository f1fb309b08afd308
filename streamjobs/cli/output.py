"""How the command line shows things to people: consoles that never wrap or cut piped output,
times as ISO-8601 UTC with an age, and a task's status as labelled lines.

Owns the human presentation shared by the commands: :func:`console` (a terminal keeps its
width; with no terminal, e.g. piped into ``grep`` or a file, the width is unbounded so a line
is never wrapped and a table never cuts a topic name), :func:`moment` (``2026-12-05T03:49:48Z
(2 min ago)``) and :func:`status_lines`. Machine fields (epoch milliseconds, the status
``version``) stay in each command's ``--json`` output, which this module does not touch. Does not
define commands or exit codes (:mod:`streamjobs.cli.options` owns those).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.console import Console

from streamjobs.status import StatusView

#: The width of a console with no terminal: wide enough that no line or table cell is cut.
UNBOUNDED = 10_000


def console(*, stderr: bool = False) -> Console:
    """A rich console: the terminal's width on a terminal, else :data:`UNBOUNDED` (no wrapping)."""
    probe = Console(stderr=stderr)
    if probe.is_terminal:
        return probe
    return Console(stderr=stderr, width=UNBOUNDED, soft_wrap=True)


def age(seconds: float) -> str:
    """``"12 s ago"``, ``"2 min ago"``, ``"in 3 h"``: the rounded distance from now."""
    size = abs(seconds)
    for unit, span in (("d", 86_400), ("h", 3600), ("min", 60)):
        if size >= span:
            text = f"{size // span:.0f} {unit}"
            break
    else:
        text = f"{size:.0f} s"
    return f"{text} ago" if seconds >= 0 else f"in {text}"


def moment(ms: int | None, now_ms: int) -> str:
    """Epoch milliseconds as ISO-8601 UTC with its age: ``2026-12-05T03:49:48Z (2 min ago)``."""
    if ms is None:
        return "-"
    iso = datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{iso} ({age((now_ms - ms) / 1000)})"


# the order and labels of `streamjobs status`; `version` (an ordering counter) is --json only
_TIMES = {"updated_at_ms": "updated", "submitted_at_ms": "submitted", "not_before_ms": "due"}
_SHOWN = (
    "task_id", "task", "queue", "state", "attempt", "generation", "key", "result", "reason",
    "error_type", "error", "note", "submitted_at_ms", "not_before_ms", "updated_at_ms",
    "worker_id", "record", "trace_id",
)  # fmt: skip


def field_lines(fields: dict[str, Any], now_ms: int, width: int = 18) -> list[str]:
    """``name: value`` lines of a record's fields, empty ones left out; a time field (``*_ms``
    epoch milliseconds) is shown under its name without ``_ms``, in UTC with its age."""
    lines = []
    for name, value in fields.items():
        if value is None or value == {}:
            continue
        if name.endswith("_ms") and isinstance(value, int):
            name, value = name.removesuffix("_ms"), moment(value, now_ms)
        lines.append(f"{name:>{width}}: {value}")
    return lines


def status_lines(view: StatusView, now_ms: int) -> list[str]:
    """A task's status as ``label: value`` lines, times in UTC with ages, empty fields left out."""
    fields: dict[str, Any] = view.as_dict()
    fields["result"] = view.result_json  # the handler's value as JSON, as --json has it
    if view.topic is not None:  # where the task's record is (a tier's topic while scheduled)
        where = f"[{view.partition}]@{view.offset}" if view.partition is not None else ""
        fields["record"] = f"{view.topic}{where}"
    lines = []
    for name in _SHOWN:
        value = fields.get(name)
        if value is None:
            continue
        if name in _TIMES:
            lines.append(f"{_TIMES[name]:>12}: {moment(value, now_ms)}")
        else:
            lines.append(f"{name:>12}: {value}")
    return lines
