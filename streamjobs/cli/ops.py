"""The operator commands of ``streamjobs``: replay, dlq list/show/redrive, inspect, purge, trace.

Owns the commands on the records a queue already holds: their options, progress bars, tables and
exit codes (errors follow the one idiom of :mod:`streamjobs.cli.options`). Each parses, builds
Settings and delegates to :mod:`streamjobs.ops.replay`, :mod:`streamjobs.ops.deadletters`,
:mod:`streamjobs.ops.inspect`, :mod:`streamjobs.ops.purge` or :mod:`streamjobs.ops.traceview`.
``register`` adds them to the app of :mod:`streamjobs.cli.app`. Does not own the app, the shared
options (:mod:`streamjobs.cli.options`) or any behaviour. `status` stays a single command
(`streamjobs status TASK_ID`), so result expiry is `streamjobs purge`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Annotated, Any, NoReturn

import typer

from streamjobs import status, statusreads
from streamjobs.cli.options import (
    Bootstrap,
    Prefix,
    Queue,
    Queues,
    build_settings,
    queue_options,
    setting_default,
)
from streamjobs.errors import StreamJobsError
from streamjobs.settings import Settings

dlq_app = typer.Typer(help="List, show and re-drive dead letters.", no_args_is_help=True)

AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Show what would happen; write nothing.")]
TaskName = Annotated[str | None, typer.Option("--task", help="Only tasks of this type.")]
#: Columns of a trace waterfall printed with no terminal (its bars scale to the width).
PIPED_WIDTH = 120
Since = Annotated[str | None, typer.Option("--since", help="ISO time or a duration ago (2h).")]


def _queue_settings(bootstrap: str | None, prefix: str | None, queue: str | None) -> Settings:
    return build_settings(bootstrap_servers=bootstrap, topic_prefix=prefix, queue=queue)


def parse_time(text: str | None) -> Any:
    """An ISO 8601 time (no zone = this machine's local time) or a duration ago (``90m``);
    None when the option was not given."""
    from streamjobs.settings import parse_moment

    return parse_moment(text, naive=None) if text else None


def _run_with_progress(settings: Settings, label: str, job: Any) -> Any:
    """Run ``job(progress_callback)`` under a progress bar on stderr, its spans exported."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from streamjobs.cli.output import console as new_console

    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn())
    console = new_console(stderr=True)
    bar = Progress(*columns, console=console, transient=True, disable=not console.is_terminal)
    with _traced(settings), bar:
        task = bar.add_task(label, total=None)
        return job(lambda done, total: bar.update(task, completed=done, total=max(total, done)))


@contextlib.contextmanager
def _traced(settings: Settings) -> Iterator[None]:
    """Export the replay/redrive spans (linked to each task's earlier trace, so ``trace ID`` can
    follow them) when an OTLP endpoint is configured; nothing is installed otherwise."""
    from streamjobs import telemetry

    provider = telemetry.configure(settings)
    try:
        yield
    finally:
        if provider is not None:
            provider.shutdown()  # flushes the spans


def _report(summary: Any, as_json: bool, counts: str, *, only_problems: bool) -> NoReturn:
    """Print a replay or redrive summary (JSON, or its items and ``counts``); exit 1 if any
    item failed."""
    if as_json:
        typer.echo(json.dumps(summary.as_dict()))
    else:
        _echo_items(summary.items, only_problems=only_problems)
        typer.echo(counts)
    raise typer.Exit(1 if summary.failed else 0)


def _echo_items(items: list[Any], only_problems: bool) -> None:
    for item in items:
        if only_problems and item.outcome not in ("skipped", "failed"):
            continue
        where = getattr(item, "ref", None) or f"{item.topic}[{item.partition}]@{item.offset}"
        reason = f": {item.reason}" if item.reason else ""
        typer.echo(f"{item.outcome:>13} {where} {item.task or '-'} {item.task_id or '-'}{reason}")


def replay_command(
    topic: Annotated[str, typer.Option("--topic", "-t", help="Task topic to read from.")],
    partition: Annotated[int | None, typer.Option(help="Only this partition.")] = None,
    from_offset: Annotated[int | None, typer.Option(help="First offset (inclusive).")] = None,
    from_time: Annotated[str | None, typer.Option(help="First record time (ISO).")] = None,
    to_offset: Annotated[int | None, typer.Option(help="Last offset (inclusive).")] = None,
    to_time: Annotated[str | None, typer.Option(help="Stop before this time (ISO).")] = None,
    task: TaskName = None,
    dry_run: DryRun = False,
    force: Annotated[bool, typer.Option("--force", help="Re-run succeeded tasks too.")] = False,
    as_json: AsJson = False,
    bootstrap_servers: Bootstrap = None,
    topic_prefix: Prefix = None,
    queue: Queue = None,
) -> None:
    """Re-submit the tasks of a topic range (same task id and key, next generation)."""
    from streamjobs.ops import replay

    settings = _queue_settings(bootstrap_servers, topic_prefix, queue)
    summary = _run_with_progress(
        settings,
        "would replay" if dry_run else "replaying",
        lambda progress: replay.replay(
            settings,
            topic=topic,
            partition=partition,
            from_offset=from_offset,
            from_time=parse_time(from_time),
            to_offset=to_offset,
            to_time=parse_time(to_time),
            task=task,
            dry_run=dry_run,
            force=force,
            progress=progress,
        ),
    )
    verb = "would replay" if dry_run else "replayed"
    counts = f"{verb} {summary.replayed}, skipped {summary.skipped}, failed {summary.failed}"
    _report(summary, as_json, counts, only_problems=not dry_run)


@dlq_app.command("list")
def dlq_list(
    reason: Annotated[str | None, typer.Option(help="Only this reason code.")] = None,
    task: TaskName = None,
    since: Since = None,
    as_json: AsJson = False,
    bootstrap_servers: Bootstrap = None,
    topic_prefix: Prefix = None,
    queue: Queue = None,
) -> None:
    """Dead letters of the queue, with reason, task, attempts and error."""
    from streamjobs.cli.output import console
    from streamjobs.ops import deadletters
    from streamjobs.ops import inspect as inspection

    settings = _queue_settings(bootstrap_servers, topic_prefix, queue)
    letters = deadletters.list_dead_letters(
        settings, reason=reason, task=task, since=parse_time(since)
    )
    if as_json:
        typer.echo(json.dumps([d.as_dict() for d in letters]))
    else:
        console().print(inspection.render_dead_letters(letters))


@dlq_app.command("show")
def dlq_show(
    ref: Annotated[str, typer.Argument(help="PARTITION:OFFSET on the dead-letter topic.")],
    as_json: AsJson = False,
    bootstrap_servers: Bootstrap = None,
    topic_prefix: Prefix = None,
    queue: Queue = None,
) -> None:
    """One dead letter: error, attempts, origin, envelope and task arguments (times in UTC)."""
    from streamjobs.cli.output import field_lines
    from streamjobs.ops import deadletters

    settings = _queue_settings(bootstrap_servers, topic_prefix, queue)
    detail = deadletters.show(settings, ref)
    if as_json:
        typer.echo(json.dumps(detail.as_dict(), default=str))
        return
    typer.echo("\n".join(field_lines(detail.as_dict(), status.now_ms())))


@dlq_app.command("redrive")
def dlq_redrive(
    reason: Annotated[str | None, typer.Option(help="Only this reason code.")] = None,
    task: TaskName = None,
    since: Since = None,
    ref: Annotated[
        list[str] | None, typer.Option("--ref", help="Only PARTITION:OFFSET (repeatable).")
    ] = None,
    dry_run: DryRun = False,
    as_json: AsJson = False,
    bootstrap_servers: Bootstrap = None,
    topic_prefix: Prefix = None,
    queue: Queue = None,
) -> None:
    """Re-submit dead-lettered tasks (same task id and key, attempts reset); never twice."""
    from streamjobs.ops import redrive

    settings = _queue_settings(bootstrap_servers, topic_prefix, queue)
    summary = _run_with_progress(
        settings,
        "would redrive" if dry_run else "redriving",
        lambda progress: redrive.redrive(
            settings,
            reason=reason,
            task=task,
            since=parse_time(since),
            refs=ref or None,
            dry_run=dry_run,
            progress=progress,
        ),
    )
    verb = "would redrive" if dry_run else "redriven"
    counts = f"{verb} {summary.redriven}, skipped {summary.skipped}, failed {summary.failed}"
    _report(summary, as_json, counts, only_problems=False)


def inspect_command(
    as_json: AsJson = False,
    bootstrap_servers: Bootstrap = None,
    topic_prefix: Prefix = None,
    queue: Queues = None,
    group: Annotated[
        str | None,
        typer.Option(
            "--group",
            "-g",
            help="The workers' consumer group.",
            show_default="$STREAMJOBS_GROUP_ID or <prefix>.<first queue>.workers",
        ),
    ] = None,
) -> None:
    """Lag per partition, tasks by state, throughput, tier backlog, dead letters by reason;
    one report per queue given (``--queue`` repeated, or ``$STREAMJOBS_QUEUES``)."""
    from streamjobs.cli.output import console
    from streamjobs.ops import inspect as inspection

    settings = build_settings(
        bootstrap_servers=bootstrap_servers,
        topic_prefix=topic_prefix,
        group_id=group,
        **queue_options(queue),
    )
    reports = [inspection.inspect(settings.for_queue(n)) for n, _ in settings.served_queues]
    if as_json:
        found = [report.as_dict() for report in reports]
        typer.echo(json.dumps(found[0] if len(found) == 1 else found))
    else:
        for report in reports:
            console().print(inspection.render(report))


def purge_command(
    older_than: Annotated[
        str, typer.Option("--older-than", help="Expire finished tasks older than this (7d).")
    ],
    dry_run: DryRun = False,
    all_queues: Annotated[
        bool, typer.Option("--all-queues", help="Every queue sharing the status topic.")
    ] = False,
    bootstrap_servers: Bootstrap = None,
    topic_prefix: Prefix = None,
    queue: Queue = None,
) -> None:
    """Tombstone the statuses (and results) of tasks that finished before the cutoff."""
    from streamjobs.ops import purge as retention
    from streamjobs.settings import parse_duration

    settings = _queue_settings(bootstrap_servers, topic_prefix, queue)
    count = retention.purge(
        settings, parse_duration(older_than), dry_run=dry_run, all_queues=all_queues
    )
    typer.echo(f"{'would purge' if dry_run else 'purged'} {count} finished task statuses")


def trace_command(
    task_id: str,
    bootstrap_servers: Bootstrap = None,
    topic_prefix: Prefix = None,
    jaeger: Annotated[
        str | None,
        typer.Option(help="Jaeger query URL.", show_default=setting_default("jaeger_query_url")),
    ] = None,
    service: Annotated[
        str | None,
        typer.Option(
            help="Service to search in Jaeger.", show_default=setting_default("service_name")
        ),
    ] = None,
    width: Annotated[
        int | None,
        typer.Option(
            help="Columns of the waterfall.",
            show_default=f"the terminal's; {PIPED_WIDTH} with no terminal",
        ),
    ] = None,
) -> None:
    """Draw a task's trace (every attempt) as a waterfall, from Jaeger's query API; a redriven
    or replayed task's earlier trace(s) too, earliest first."""
    from streamjobs.ops import traceview

    settings = build_settings(
        bootstrap_servers=bootstrap_servers,
        topic_prefix=topic_prefix,
        jaeger_query_url=jaeger,
        service_name=service,
    )
    view = statusreads.latest(settings, task_id, timeout=10.0)
    url = settings.jaeger_query_url
    # the latest run's trace, and the earlier runs a redrive or replay links it to
    found = traceview.fetch_with_links(url, view.trace_id) if view and view.trace_id else []
    if not found:
        first = traceview.find_trace_by_task(url, settings.service_name, task_id)
        found = traceview.fetch_with_links(url, first["traceID"]) if first else []
    if not found:
        raise StreamJobsError(f"no trace for task {task_id} in Jaeger at {url}")
    typer.echo(traceview.render({"data": found}, width=width or _terminal_width()))


def _terminal_width() -> int:
    import shutil
    import sys

    return shutil.get_terminal_size().columns if sys.stdout.isatty() else PIPED_WIDTH


def register(app: typer.Typer) -> None:
    """Add these commands to ``app``, where the command line lists them: after the core ones."""
    app.command("replay")(replay_command)
    app.add_typer(dlq_app, name="dlq")
    app.command("inspect")(inspect_command)
    app.command("purge")(purge_command)
    app.command("trace")(trace_command)
