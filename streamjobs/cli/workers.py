"""``streamjobs workers``: the workers of a topic prefix, live and lost, from their heartbeats.

Owns the command's options, its table and its JSON. Reading and judging the reports is
:mod:`streamjobs.metrics.heartbeat`'s. ``register`` adds the command to the app of
:mod:`streamjobs.cli.app`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Annotated, Any

import typer

from streamjobs.cli.options import Bootstrap, Prefix, build_settings


def workers_command(
    bootstrap_servers: Bootstrap = None,
    topic_prefix: Prefix = None,
    lost_after: Annotated[
        int, typer.Option(min=1, help="Missed heartbeat intervals before a worker is lost.")
    ] = 3,
    tasks: Annotated[
        bool, typer.Option("--tasks", help="Also list the tasks running now.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List the workers reporting on <prefix>.workers: live ones, then lost ones (no heartbeat
    for --lost-after intervals: killed or hung). A worker that stopped gracefully is gone."""
    from streamjobs.metrics import heartbeat

    settings = build_settings(bootstrap_servers=bootstrap_servers, topic_prefix=topic_prefix)
    reports = heartbeat.read_reports(settings)  # a StreamJobsError exits 1 (cli.options)
    views = heartbeat.classify(reports, int(time.time() * 1000), lost_after)
    if as_json:
        typer.echo(json.dumps([_as_dict(v) for v in views], default=str))
        return
    if not views:
        typer.echo("no workers")
        return
    typer.echo(_HEADER)
    for view in views:
        typer.echo(_row(view))
        if tasks:
            for task in view.report.running:
                since = time.time() - task.started_at
                typer.echo(f"    {task.task} {task.task_id} attempt {task.attempt} ({since:.1f}s)")


_HEADER = (
    f"{'STATE':<5} {'WORKER':<32} {'QUEUE':<12} {'PARTS':>5} {'IN FLIGHT':>9} {'RUNNING':>7} "
    f"{'DONE':>8} {'FAILED':>7} {'SEEN':>7} {'UP':>8}  VERSION"
)


def _row(view: Any) -> str:
    report = view.report
    failed = report.retried + report.dead_lettered
    up = _ago((report.reported_at_ms - report.started_at_ms) / 1000)
    return (
        f"{view.state.value:<5} {report.worker_id:<32} {report.queue:<12} {report.partitions:>5}"
        f" {report.in_flight:>9} {len(report.running):>7} {report.succeeded:>8} {failed:>7}"
        f" {_ago(view.age_ms / 1000) + ' ago':>7} {up:>8}  {report.version}"
    )


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _as_dict(view: Any) -> dict[str, Any]:
    report = asdict(view.report)
    return {"state": view.state.value, "age_ms": view.age_ms, **report}


def register(app: typer.Typer) -> None:
    app.command("workers")(workers_command)
