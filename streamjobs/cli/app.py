"""The ``streamjobs`` command line: parses arguments, builds Settings, delegates. typer's home,
with :mod:`streamjobs.cli.options` (the shared options) and :mod:`streamjobs.cli.ops`.

Owns the ``app`` (the console entry point), the core commands (``consume``, ``topics``,
``status``, ``demo``, ``settings``), the signal handlers of ``consume`` (SIGTERM/SIGINT →
graceful stop) and human-readable output. Registered on this app: the operator commands on a
queue's records (``replay``, ``dlq``, ``inspect``, ``purge``, ``trace``) from
:mod:`streamjobs.cli.ops`, ``schemas export|check`` from :mod:`streamjobs.cli.schemas`,
``schedules ...`` from :mod:`streamjobs.cli.schedules`, ``cancel`` from
:mod:`streamjobs.cli.cancel`, ``dashboard`` from
:mod:`streamjobs.cli.dashboard`, and the local development services
(``dev-broker``, ``dev-jaeger``) from :mod:`streamjobs.cli.dev`.
Errors and exit codes follow the one idiom of :mod:`streamjobs.cli.options`. Does not implement
behaviour: every command calls into the library module that owns it.
"""

from __future__ import annotations

import faulthandler
import json
import logging
import os
import signal
import sys
import threading
from typing import Annotated, Any

import typer

from streamjobs import status, statusreads, topics
from streamjobs.cli import cancel as cli_cancel
from streamjobs.cli import dashboard as cli_dashboard
from streamjobs.cli import dev as cli_dev
from streamjobs.cli import ops as cli_ops
from streamjobs.cli import schedules as cli_schedules
from streamjobs.cli import schemas as cli_schemas
from streamjobs.cli import workers as cli_workers
from streamjobs.cli.options import (
    EXIT_FAILED,
    Bootstrap,
    Prefix,
    Queue,
    Queues,
    ReportingGroup,
    build_settings,
    load_registry,
    queue_options,
    setting_default,
)
from streamjobs.errors import ConfigError
from streamjobs.models import TaskState
from streamjobs.settings import Settings

STATUS_EXIT_CODES = (
    "Exit codes: 0 succeeded, or not final yet (queued, scheduled, running, retry_scheduled); "
    "1 dead-lettered, cancelled, an unknown id, or --wait timed out; 2 bad settings or arguments."
)

app = typer.Typer(
    help="Background jobs on an Apache Kafka event log.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=ReportingGroup,  # one error idiom: a StreamJobsError is `error: ...` and an exit code
)
topics_app = typer.Typer(help="Create and check the topics of a queue.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")


@app.command()
def consume(
    registry: Annotated[str, typer.Argument(help="MODULE:REGISTRY holding your handlers.")],
    bootstrap_servers: Bootstrap = None,
    topic_prefix: Prefix = None,
    queue: Queues = None,
    queue_order: Annotated[
        str | None,
        typer.Option(
            help="With several queues: strict (a lower queue waits while a higher one has work) "
            "or weighted (in proportion to the weights).",
            show_default="weighted if a weight is given, else strict",
        ),
    ] = None,
    group: Annotated[
        str | None,
        typer.Option(
            "--group",
            "-g",
            help="Consumer group (every worker of any of its queues must share it).",
            show_default="$STREAMJOBS_GROUP_ID or <prefix>.<queue>.workers",
        ),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(help="Tasks run in parallel.", show_default=setting_default("concurrency")),
    ] = None,
    exactly_once: Annotated[
        bool,
        typer.Option("--exactly-once", help="Statuses, retries and offsets in one transaction."),
    ] = False,
    rate_limit: Annotated[
        str | None,
        typer.Option(
            help="Task starts per period over the whole group, all task types: 50/s, 100/m, 500/h.",
            show_default="$STREAMJOBS_QUEUE_RATE_LIMIT or none",
        ),
    ] = None,
    instance_id: Annotated[
        str | None, typer.Option(help="Static group membership id (group.instance.id).")
    ] = None,
    otlp_endpoint: Annotated[
        str | None,
        typer.Option(
            help="OTLP/HTTP endpoint; none: no spans exported.",
            show_default="$STREAMJOBS_OTLP_ENDPOINT or $OTEL_EXPORTER_OTLP_ENDPOINT",
        ),
    ] = None,
    service_name: Annotated[
        str | None,
        typer.Option(help="Service name in traces.", show_default=setting_default("service_name")),
    ] = None,
    log_level: Annotated[str, typer.Option(help="Python log level.")] = "INFO",
    log_format: Annotated[str, typer.Option(help="text, or json: one object per line.")] = "text",
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve /metrics, /livez and /readyz on this port.")
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Address of the metrics port.")] = "127.0.0.1",
    processes: Annotated[
        int,
        typer.Option(
            min=1,
            help="Worker processes to run and supervise, all in the group (about one per core).",
        ),
    ] = 1,
) -> None:
    """Run a worker in the queue's consumer group until SIGTERM/SIGINT."""
    if processes > 1:
        from streamjobs.cli.processes import supervise

        raise typer.Exit(supervise(processes, instance_id, log_level))
    from streamjobs import telemetry
    from streamjobs.metrics import logs
    from streamjobs.metrics.monitor import Monitor
    from streamjobs.scheduler import Scheduler
    from streamjobs.worker.gctuning import tune_collector
    from streamjobs.worker.loop import Worker

    if log_format not in logs.LOG_FORMATS:
        raise ConfigError(f"--log-format must be one of {', '.join(logs.LOG_FORMATS)}")
    logs.configure(log_level, log_format, _own_stderr())
    settings = build_settings(
        bootstrap_servers=bootstrap_servers,
        topic_prefix=topic_prefix,
        **queue_options(queue, queue_order),
        group_id=group,
        concurrency=concurrency,
        exactly_once=exactly_once or None,  # absent flag: STREAMJOBS_EXACTLY_ONCE decides
        queue_rate_limit=rate_limit,
        group_instance_id=instance_id,
        otlp_endpoint=otlp_endpoint,
        service_name=service_name,
    )
    handlers = load_registry(registry)
    provider = telemetry.configure(settings)  # no endpoint configured: no SDK, no cost
    monitor = Monitor(settings, metrics_host=metrics_host, metrics_port=metrics_port)
    worker = Worker(settings, handlers, middleware=monitor.middleware)
    # every worker runs the scheduler; the one owning the schedules partition fires
    scheduler = Scheduler(settings, handlers, owner=worker.worker_id, on_failure=worker.fail)

    def on_signal(signum: int, _frame: Any) -> None:
        logging.getLogger("streamjobs").info("signal %d: stopping after current tasks", signum)
        worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # `kill -USR1 <pid>`: every thread's stack to stderr, for a worker that seems stuck
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    typer.echo(
        f"worker {worker.worker_id}: {_served(settings)}, group {settings.group}, "
        f"{len(handlers)} task types, concurrency {settings.concurrency}",
        err=True,
    )
    try:
        # a topic created a moment ago may be unknown yet to the broker that answers
        served = [settings.for_queue(name) for name, _ in settings.served_queues]
        verified = (topics.verify(one, replicas_strict=False, appear_within=15.0) for one in served)
        for problem in (p for problems in verified for p in problems):
            logging.getLogger("streamjobs").warning("under-replicated: %s", problem)
        scheduler.start()
        stranded = {topic: n for one in served for topic, n in _stranded(one).items()}
        for topic, backlog in stranded.items():
            if backlog:
                logging.getLogger("streamjobs").warning(
                    "%s: %d tasks waiting on a tier these settings do not name; no worker "
                    "with them reads it (see `streamjobs topics verify`)",
                    topic,
                    backlog,
                )
        with monitor.watching(worker):  # heartbeats, and the metrics port if given
            tune_collector()  # this process is a worker: see streamjobs.worker.gctuning
            worker.run()
    finally:
        scheduler.stop()
        if provider is not None:
            provider.shutdown()  # flushes the last spans to the exporter
        _leave_without_handler_threads()


def _served(settings: Settings) -> str:
    served = settings.served_queues
    if len(served) == 1:
        return f"queue {settings.queue}"
    order = settings.effective_queue_order
    names = [f"{n}={w}" if order == "weighted" else n for n, w in served]
    return f"queues {', '.join(names)} ({order})"


def _own_stderr() -> Any:
    """A private copy of stderr to log to: a handler that closes ``sys.stderr`` (or fd 2) must
    not make the worker's own log calls raise; a failed log write is dropped, never raised."""
    logging.raiseExceptions = False
    try:
        return os.fdopen(os.dup(2), "w", buffering=1, errors="backslashreplace")
    except OSError:  # no stderr at all (a daemon started with fd 2 closed)
        return sys.stderr


def _leave_without_handler_threads() -> None:
    """Exit now if a handler left non-daemon threads running: Python would wait for them at
    exit, and the stopped worker (its offsets committed, its group left) would never end."""
    lingering = [
        t.name
        for t in threading.enumerate()
        if t is not threading.current_thread() and not t.daemon and t.is_alive()
    ]
    if not lingering:
        return
    error = sys.exc_info()[1]
    code = error.exit_code if isinstance(error, typer.Exit) else int(error is not None)
    logging.getLogger("streamjobs").warning(
        "exiting without waiting for %d thread(s) started by handlers: %s",
        len(lingering),
        ", ".join(lingering[:10]),
    )
    logging.shutdown()
    os._exit(code)


@topics_app.command("ensure")
def topics_ensure(
    bootstrap_servers: Bootstrap = None,
    topic_prefix: Prefix = None,
    queue: Queue = None,
    partitions: Annotated[
        int | None,
        typer.Option(help="Partitions of new topics.", show_default=setting_default("partitions")),
    ] = None,
) -> None:
    """Create the queue's missing topics and verify all of them."""
    settings = build_settings(
        bootstrap_servers=bootstrap_servers,
        topic_prefix=topic_prefix,
        queue=queue,
        partitions=partitions,
    )
    replicas = topics.cluster_replication(settings)
    created = topics.ensure(settings)
    for name in created:
        typer.echo(f"created {name}")
    typer.echo(f"{replicas.describe()}{'' if created else ' (for new topics)'}")
    typer.echo(f"ok: {len(topics.topic_specs(settings))} topics verified")


@topics_app.command("verify")
def topics_verify(
    bootstrap_servers: Bootstrap = None, topic_prefix: Prefix = None, queue: Queue = None
) -> None:
    """Exit 1 if a topic is missing or misconfigured (e.g. a status topic not compacted, or
    replicated less than the settings ask: replication factor, min.insync.replicas), or if tier
    topics the settings do not name still hold tasks (no worker with them reads those)."""
    settings = build_settings(
        bootstrap_servers=bootstrap_servers, topic_prefix=topic_prefix, queue=queue
    )
    topics.verify(settings)
    stranded = _stranded(settings)
    for topic, backlog in stranded.items():
        typer.echo(f"{topic}: not in the settings' tiers; {backlog} tasks waiting there")
    if any(stranded.values()):
        typer.echo(f"error: {topics.TIERS_CHANGED_HINT}", err=True)
        raise typer.Exit(EXIT_FAILED)
    typer.echo("ok")


def _stranded(settings: Settings) -> dict[str, int]:
    """Tier topics of the queue on the cluster that the settings do not name, with the tasks
    the workers' group has not consumed from each."""
    extra = topics.tier_drift(settings).extra
    if not extra:
        return {}
    from streamjobs.ops.inspect import lags

    backlog = dict.fromkeys(extra, 0)
    for lag in lags(settings, extra):
        backlog[lag.topic] += lag.lag
    return backlog


@app.command("status", epilog=STATUS_EXIT_CODES)
def status_command(
    task_id: str,
    bootstrap_servers: Bootstrap = None,
    topic_prefix: Prefix = None,
    wait: Annotated[bool, typer.Option("--wait", help="Block until the task is final.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 60.0,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Print a task's latest state and result (times in UTC, with their age)."""
    from streamjobs.cli import output

    settings = build_settings(bootstrap_servers=bootstrap_servers, topic_prefix=topic_prefix)
    view: status.StatusView | None
    if wait:
        view = statusreads.wait(settings, task_id, timeout)
    elif settings.index_path is not None:  # caught up first: as fresh as reading Kafka
        from streamjobs.index.follower import fresh_reader

        with fresh_reader(settings) as index:
            view = index.task(task_id)
    else:
        view = statusreads.latest(settings, task_id)
    if view is None:
        typer.echo(
            json.dumps({"task_id": task_id, "state": "unknown"})
            if as_json
            else f"{task_id}: unknown (no status record for this id)"
        )
        raise typer.Exit(EXIT_FAILED)
    from streamjobs.scheduler.state import schedule_of

    schedule = schedule_of(task_id)
    if as_json:
        typer.echo(json.dumps({**view.as_dict(), "schedule": schedule}, default=str))
    else:
        lines = output.status_lines(view, status.now_ms())
        lines += [f"{'schedule':>12}: {schedule}"] if schedule is not None else []
        typer.echo("\n".join(lines))
    if view.state in (TaskState.DEAD_LETTERED, TaskState.CANCELLED):
        raise typer.Exit(EXIT_FAILED)


@app.command()
def demo(
    bootstrap_servers: Bootstrap = None,
    tasks: Annotated[int, typer.Option(help="How many tasks to submit.")] = 3000,
    keys: Annotated[int, typer.Option(help="How many distinct ordering keys.")] = 200,
) -> None:
    """Submit a few thousand tasks across many keys to a worker and report the outcome."""
    from streamjobs.dev import demo as demo_module

    settings = build_settings(
        bootstrap_servers=bootstrap_servers,
        topic_prefix="demo",
        retry_tiers="1s,3s",
        concurrency=8,
    )
    ok = demo_module.run(settings, tasks=tasks, keys=keys)
    raise typer.Exit(0 if ok else 1)


@app.command("settings")
def show_settings() -> None:
    """Print the effective settings (secrets masked)."""
    typer.echo(build_settings().model_dump_json(indent=2))


def main() -> None:  # pragma: no cover - console entry point
    app()


cli_ops.register(app)  # replay, dlq, inspect, purge, trace
cli_cancel.register(app)  # cancel
cli_schemas.register(app)  # schemas export, schemas check
cli_dev.register(app)  # dev-broker, dev-jaeger
cli_schedules.register(app)  # schedules list|show|add|remove|pause|resume|trigger
cli_workers.register(app)  # workers
cli_dashboard.register(app)  # dashboard


if __name__ == "__main__":  # pragma: no cover
    app()
