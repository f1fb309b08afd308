"""The ``streamjobs`` command line: parses arguments, builds Settings, delegates. typer's home.

Owns argument parsing, the signal handlers of ``consume`` (SIGTERM/SIGINT → graceful stop),
exit codes and human-readable output. Does not implement behaviour: every command calls into
the library module that owns it.
"""

from __future__ import annotations

import importlib
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from streamjobs import broker, status, topics
from streamjobs.errors import ConfigError, StreamJobsError
from streamjobs.registry import TaskRegistry
from streamjobs.settings import Settings

app = typer.Typer(
    help="Background jobs on an Apache Kafka event log.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
topics_app = typer.Typer(help="Create and check the topics of a queue.", no_args_is_help=True)
broker_app = typer.Typer(help="A local single-node Kafka for development.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
app.add_typer(broker_app, name="dev-broker")

Bootstrap = Annotated[
    str | None, typer.Option("--bootstrap-servers", "-b", help="Kafka bootstrap servers.")
]
Prefix = Annotated[str | None, typer.Option("--topic-prefix", help="Topic name prefix.")]
Queue = Annotated[str | None, typer.Option("--queue", "-q", help="Queue name.")]


def build_settings(**overrides: Any) -> Settings:
    """Settings from STREAMJOBS_* variables, with the command-line values that were given."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except (ValueError, ConfigError) as exc:
        raise _fail(f"bad settings: {exc}") from exc


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def load_registry(spec: str) -> TaskRegistry:
    """Import ``module:attribute`` named on the command line (never from record data)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise _fail(f"expected MODULE:REGISTRY, got {spec!r}")
    sys.path.insert(0, str(Path.cwd()))
    try:
        registry = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise _fail(f"cannot load {spec}: {exc}") from exc
    if not isinstance(registry, TaskRegistry):
        raise _fail(f"{spec} is a {type(registry).__name__}, not a TaskRegistry")
    return registry


@app.command()
def consume(
    registry: Annotated[str, typer.Argument(help="MODULE:REGISTRY holding your handlers.")],
    bootstrap_servers: Bootstrap = None,
    topic_prefix: Prefix = None,
    queue: Queue = None,
    group: Annotated[str | None, typer.Option("--group", "-g", help="Consumer group.")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Tasks run in parallel.")] = None,
    exactly_once: Annotated[
        bool,
        typer.Option("--exactly-once", help="Statuses, retries and offsets in one transaction."),
    ] = False,
    instance_id: Annotated[
        str | None, typer.Option(help="Static group membership id (group.instance.id).")
    ] = None,
    otlp_endpoint: Annotated[str | None, typer.Option(help="OTLP/HTTP endpoint.")] = None,
    service_name: Annotated[str | None, typer.Option(help="Service name in traces.")] = None,
    log_level: Annotated[str, typer.Option(help="Python log level.")] = "INFO",
) -> None:
    """Run a worker in the queue's consumer group until SIGTERM/SIGINT."""
    from streamjobs import tracing
    from streamjobs.worker import Worker

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    settings = build_settings(
        bootstrap_servers=bootstrap_servers,
        topic_prefix=topic_prefix,
        queue=queue,
        group_id=group,
        concurrency=concurrency,
        exactly_once=exactly_once or None,  # absent flag: STREAMJOBS_EXACTLY_ONCE decides
        group_instance_id=instance_id,
        otlp_endpoint=otlp_endpoint,
        service_name=service_name,
    )
    handlers = load_registry(registry)
    provider = None
    if settings.tracing_enabled:  # no endpoint configured: no SDK, no exporter, no cost
        provider = tracing.configure(settings.service_name, settings.otlp_endpoint)
    worker = Worker(settings, handlers)

    def on_signal(signum: int, _frame: Any) -> None:
        logging.getLogger("streamjobs").info("signal %d: stopping after current tasks", signum)
        worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    typer.echo(
        f"worker {worker.worker_id}: queue {settings.queue}, group {settings.group}, "
        f"{len(handlers)} task types, concurrency {settings.concurrency}",
        err=True,
    )
    try:
        topics.verify(settings)
        worker.run()
    except StreamJobsError as exc:
        raise _fail(str(exc), code=1) from exc
    finally:
        if provider is not None:
            provider.shutdown()  # flushes the last spans to the exporter


@topics_app.command("ensure")
def topics_ensure(
    bootstrap_servers: Bootstrap = None,
    topic_prefix: Prefix = None,
    queue: Queue = None,
    partitions: Annotated[int | None, typer.Option(help="Partitions of new topics.")] = None,
) -> None:
    """Create the queue's missing topics and verify all of them."""
    settings = build_settings(
        bootstrap_servers=bootstrap_servers,
        topic_prefix=topic_prefix,
        queue=queue,
        partitions=partitions,
    )
    try:
        created = topics.ensure(settings)
    except StreamJobsError as exc:
        raise _fail(str(exc), code=1) from exc
    for name in created:
        typer.echo(f"created {name}")
    typer.echo(f"ok: {len(topics.topic_specs(settings))} topics verified")


@topics_app.command("verify")
def topics_verify(
    bootstrap_servers: Bootstrap = None, topic_prefix: Prefix = None, queue: Queue = None
) -> None:
    """Fail (exit 1) if a topic is missing or misconfigured, e.g. a status topic not compacted."""
    settings = build_settings(
        bootstrap_servers=bootstrap_servers, topic_prefix=topic_prefix, queue=queue
    )
    try:
        topics.verify(settings)
    except StreamJobsError as exc:
        raise _fail(str(exc), code=1) from exc
    typer.echo("ok")


@app.command("status")
def status_command(
    task_id: str,
    bootstrap_servers: Bootstrap = None,
    topic_prefix: Prefix = None,
    wait: Annotated[bool, typer.Option("--wait", help="Block until the task is final.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 60.0,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Print a task's latest state and result. Exit 1 (and say so) for an unknown id."""
    settings = build_settings(bootstrap_servers=bootstrap_servers, topic_prefix=topic_prefix)
    try:
        view = status.wait(settings, task_id, timeout) if wait else status.latest(settings, task_id)
    except StreamJobsError as exc:
        raise _fail(str(exc), code=1) from exc
    if view is None:
        typer.echo(
            json.dumps({"task_id": task_id, "state": "unknown"})
            if as_json
            else f"{task_id}: unknown (no status record for this id)"
        )
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps(view.as_dict(), default=str))
        return
    for name, value in view.as_dict().items():
        if value is not None:
            typer.echo(f"{name:>16}: {value}")


@broker_app.command("up")
def broker_up(
    port: Annotated[int, typer.Option(help="Client port on 127.0.0.1.")] = 9092,
    cache_dir: Annotated[Path | None, typer.Option(help="Jar and data cache.")] = None,
) -> None:
    """Start (or reuse) a local KRaft broker and print its bootstrap address."""
    try:
        typer.echo(broker.up(port, cache_dir))
    except StreamJobsError as exc:
        raise _fail(str(exc), code=1) from exc


@broker_app.command("down")
def broker_down(
    port: Annotated[int, typer.Option(help="Client port on 127.0.0.1.")] = 9092,
    cache_dir: Annotated[Path | None, typer.Option(help="Jar and data cache.")] = None,
) -> None:
    """Stop the local broker started by `dev-broker up` (by its PID)."""
    typer.echo("stopped" if broker.down(port, cache_dir) else "not running")


@app.command()
def demo(
    bootstrap_servers: Bootstrap = None,
    tasks: Annotated[int, typer.Option(help="How many tasks to submit.")] = 3000,
    keys: Annotated[int, typer.Option(help="How many distinct ordering keys.")] = 200,
) -> None:
    """Submit a few thousand tasks across many keys to a worker and report the outcome."""
    from streamjobs import demo as demo_module

    settings = build_settings(
        bootstrap_servers=bootstrap_servers,
        topic_prefix="demo",
        retry_tiers="1s,3s",
        concurrency=8,
    )
    try:
        ok = demo_module.run(settings, tasks=tasks, keys=keys)
    except StreamJobsError as exc:
        raise _fail(str(exc), code=1) from exc
    raise typer.Exit(0 if ok else 1)


@app.command("settings")
def show_settings() -> None:
    """Print the effective settings (secrets masked)."""
    typer.echo(build_settings().model_dump_json(indent=2))


def main() -> None:  # pragma: no cover - console entry point
    app()


# -- operating a queue: replay, dead letters, inspect, purge ----------------------------------
# Parse and delegate to streamjobs.replay / redrive / inspection / retention. `status` stays a
# single command (`streamjobs status TASK_ID`), so result expiry is `streamjobs purge`.

dlq_app = typer.Typer(help="List, show and re-drive dead letters.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")

AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Show what would happen; write nothing.")]
TaskName = Annotated[str | None, typer.Option("--task", help="Only tasks of this type.")]
Since = Annotated[str | None, typer.Option("--since", help="ISO time or a duration ago (2h).")]


def _queue_settings(bootstrap: str | None, prefix: str | None, queue: str | None) -> Settings:
    return build_settings(bootstrap_servers=bootstrap, topic_prefix=prefix, queue=queue)


class _Failing:
    """``with _Failing():`` turns a StreamJobsError into an error message and exit code 1."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, StreamJobsError):
            raise _fail(str(exc), code=1) from exc


def parse_time(text: str) -> Any:
    """An ISO 8601 time (no zone = this machine's local time) or a duration ago (``90m``)."""
    from datetime import UTC, datetime

    from streamjobs.settings import parse_duration

    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            return datetime.now(UTC) - parse_duration(text)
        except ConfigError:
            raise _fail(f"not an ISO time or a duration: {text!r}") from None
    return moment if moment.tzinfo is not None else moment.astimezone()


def _run_with_progress(label: str, job: Any) -> Any:
    """Run ``job(progress_callback)`` under a progress bar on stderr."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn())
    console = Console(stderr=True)
    bar = Progress(*columns, console=console, transient=True, disable=not console.is_terminal)
    with bar, _Failing():
        task = bar.add_task(label, total=None)
        return job(lambda done, total: bar.update(task, completed=done, total=max(total, done)))


def _echo_items(items: list[Any], only_problems: bool) -> None:
    for item in items:
        if only_problems and item.outcome not in ("skipped", "failed"):
            continue
        where = getattr(item, "ref", None) or f"{item.topic}[{item.partition}]@{item.offset}"
        reason = f": {item.reason}" if item.reason else ""
        typer.echo(f"{item.outcome:>13} {where} {item.task or '-'} {item.task_id or '-'}{reason}")


@app.command("replay")
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
    from streamjobs import replay

    settings = _queue_settings(bootstrap_servers, topic_prefix, queue)
    summary = _run_with_progress(
        "would replay" if dry_run else "replaying",
        lambda progress: replay.replay(
            settings,
            topic=topic,
            partition=partition,
            from_offset=from_offset,
            from_time=parse_time(from_time) if from_time else None,
            to_offset=to_offset,
            to_time=parse_time(to_time) if to_time else None,
            task=task,
            dry_run=dry_run,
            force=force,
            progress=progress,
        ),
    )
    if as_json:
        typer.echo(json.dumps(summary.as_dict()))
    else:
        _echo_items(summary.items, only_problems=not dry_run)
        verb = "would replay" if dry_run else "replayed"
        typer.echo(f"{verb} {summary.replayed}, skipped {summary.skipped}, failed {summary.failed}")
    raise typer.Exit(1 if summary.failed else 0)


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
    from rich.console import Console

    from streamjobs import inspection, redrive

    settings = _queue_settings(bootstrap_servers, topic_prefix, queue)
    with _Failing():
        letters = redrive.list_dead_letters(
            settings, reason=reason, task=task, since=parse_time(since) if since else None
        )
    if as_json:
        typer.echo(json.dumps([d.as_dict() for d in letters]))
    else:
        Console().print(inspection.render_dead_letters(letters))


@dlq_app.command("show")
def dlq_show(
    ref: Annotated[str, typer.Argument(help="PARTITION:OFFSET on the dead-letter topic.")],
    as_json: AsJson = False,
    bootstrap_servers: Bootstrap = None,
    topic_prefix: Prefix = None,
    queue: Queue = None,
) -> None:
    """One dead letter: error, attempts, origin, envelope and task arguments."""
    from streamjobs import redrive

    settings = _queue_settings(bootstrap_servers, topic_prefix, queue)
    with _Failing():
        detail = redrive.show(settings, ref)
    if as_json:
        typer.echo(json.dumps(detail.as_dict(), default=str))
        return
    for name, value in detail.as_dict().items():
        if value is not None and value != {}:
            typer.echo(f"{name:>18}: {value}")


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
    from streamjobs import redrive

    settings = _queue_settings(bootstrap_servers, topic_prefix, queue)
    summary = _run_with_progress(
        "would redrive" if dry_run else "redriving",
        lambda progress: redrive.redrive(
            settings,
            reason=reason,
            task=task,
            since=parse_time(since) if since else None,
            refs=ref or None,
            dry_run=dry_run,
            progress=progress,
        ),
    )
    if as_json:
        typer.echo(json.dumps(summary.as_dict()))
    else:
        _echo_items(summary.items, only_problems=False)
        verb = "would redrive" if dry_run else "redriven"
        typer.echo(f"{verb} {summary.redriven}, skipped {summary.skipped}, failed {summary.failed}")
    raise typer.Exit(1 if summary.failed else 0)


@app.command("inspect")
def inspect_command(
    as_json: AsJson = False,
    bootstrap_servers: Bootstrap = None,
    topic_prefix: Prefix = None,
    queue: Queue = None,
) -> None:
    """Lag per partition, tasks by state, throughput, tier backlog, dead letters by reason."""
    from rich.console import Console

    from streamjobs import inspection

    settings = _queue_settings(bootstrap_servers, topic_prefix, queue)
    with _Failing():
        report = inspection.inspect(settings)
    if as_json:
        typer.echo(json.dumps(report.as_dict()))
    else:
        Console().print(inspection.render(report))


@app.command("purge")
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
    from streamjobs import retention
    from streamjobs.settings import parse_duration

    settings = _queue_settings(bootstrap_servers, topic_prefix, queue)
    with _Failing():
        count = retention.purge(
            settings, parse_duration(older_than), dry_run=dry_run, all_queues=all_queues
        )
    typer.echo(f"{'would purge' if dry_run else 'purged'} {count} finished task statuses")


@app.command("trace")
def trace_command(
    task_id: str,
    bootstrap_servers: Bootstrap = None,
    topic_prefix: Prefix = None,
    jaeger: Annotated[str | None, typer.Option(help="Jaeger query URL.")] = None,
    service: Annotated[str | None, typer.Option(help="Service to search in Jaeger.")] = None,
    width: Annotated[int | None, typer.Option(help="Columns of the waterfall.")] = None,
) -> None:
    """Draw a task's trace (every attempt) as a waterfall, from Jaeger's query API."""
    import shutil

    from streamjobs import traceview

    settings = build_settings(
        bootstrap_servers=bootstrap_servers,
        topic_prefix=topic_prefix,
        jaeger_query_url=jaeger,
        service_name=service,
    )
    try:
        view = status.latest(settings, task_id, timeout=10.0)
        url = settings.jaeger_query_url
        found = traceview.fetch_trace(url, view.trace_id) if view and view.trace_id else None
        found = found or traceview.find_trace_by_task(url, settings.service_name, task_id)
    except StreamJobsError as exc:
        raise _fail(str(exc), code=1) from exc
    if found is None:
        raise _fail(f"no trace for task {task_id} in Jaeger at {settings.jaeger_query_url}", 1)
    typer.echo(traceview.render(found, width=width or shutil.get_terminal_size().columns))


if __name__ == "__main__":  # pragma: no cover
    app()
