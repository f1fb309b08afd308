"""``streamjobs schedules list|show|add|remove|pause|resume|trigger``: recurring tasks at run time.

Owns the commands' options and output; each parses, builds Settings and delegates to
:mod:`streamjobs.scheduler.manage` (errors and exit codes: :mod:`streamjobs.cli.options`).
``register`` adds the group to the app of :mod:`streamjobs.cli.app`. Does not own any behaviour:
the running leader (every ``streamjobs consume`` can be it) acts on what these commands write.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from streamjobs.cli.options import Bootstrap, Prefix, Queue, build_settings
from streamjobs.errors import ConfigError
from streamjobs.settings import Settings, parse_duration

schedules_app = typer.Typer(
    help="Recurring tasks: list, show, add, remove, pause, resume, trigger.",
    no_args_is_help=True,
)
AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
Name = Annotated[str, typer.Argument(help="Schedule name.")]


def register(app: typer.Typer) -> None:
    app.add_typer(schedules_app, name="schedules")


def _settings(bootstrap: str | None, prefix: str | None, queue: str | None) -> Settings:
    return build_settings(bootstrap_servers=bootstrap, topic_prefix=prefix, queue=queue)


@schedules_app.command("list")
def list_schedules(
    bootstrap_servers: Bootstrap = None,
    topic_prefix: Prefix = None,
    queue: Queue = None,
    as_json: AsJson = False,
) -> None:
    """The queue's schedules: cadence, next and last fire, leader, paused."""
    from streamjobs.scheduler import manage

    found = manage.summaries(_settings(bootstrap_servers, topic_prefix, queue))
    if as_json:
        typer.echo(json.dumps([s.as_dict() for s in found]))
        return
    if not found:
        typer.echo("no schedules")
        return
    for summary in found:
        row = summary.as_dict()
        last = row["last_fire"]
        last_text = "never" if not isinstance(last, dict) else f"{last['due']}"
        state = "PAUSED" if summary.paused else f"next {row['next_due']}"
        typer.echo(
            f"{summary.name}: {summary.task} {summary.cadence} ({summary.catch_up}); {state}; "
            f"last {last_text}; fires {summary.fires}, skipped {summary.skipped}; "
            f"leader {summary.owner or '-'}"
            + (f"; error: {summary.error}" if summary.error else "")
        )


@schedules_app.command("show")
def show_schedule(
    name: Name,
    bootstrap_servers: Bootstrap = None,
    topic_prefix: Prefix = None,
    queue: Queue = None,
    as_json: AsJson = False,
) -> None:
    """One schedule, with its recent fires, their task ids and the tasks' states."""
    from streamjobs.scheduler import manage
    from streamjobs.scheduler.timing import from_ms

    settings = _settings(bootstrap_servers, topic_prefix, queue)
    entry = manage.entry(settings, name)
    assert entry.definition is not None  # manage.entry raises for a removed schedule
    summary = manage.summarize(entry)
    fires = list(entry.state.recent) if entry.state else []
    states = manage.recent_states(settings, fires)
    recent = [
        {
            "due": from_ms(f.due_ms).isoformat(),
            "fired_at": from_ms(f.fired_at_ms).isoformat(),
            "lateness_ms": f.lateness_ms,
            "task_id": f.task_id,
            "triggered": f.triggered,
            "state": states[f.task_id],
        }
        for f in fires
    ]
    out = {**(summary.as_dict() if summary else {}), "args": entry.definition.args_json}
    out["recent"] = recent
    if as_json:
        typer.echo(json.dumps(out))
        return
    for key, value in out.items():
        if key not in ("recent", "last_fire"):
            typer.echo(f"{key:>16}: {value}")
    for fire in recent:
        mark = " (trigger)" if fire["triggered"] else ""
        typer.echo(
            f"  {fire['due']}  {fire['lateness_ms']:>6} ms late  {fire['task_id']}  "
            f"{fire['state']}{mark}"
        )


@schedules_app.command("add")
def add_schedule(
    name: Name,
    task: Annotated[str, typer.Option("--task", help="Task type name (its handler's model).")],
    args: Annotated[str, typer.Option("--args", help="The task's fields as JSON.")] = "{}",
    cron: Annotated[str | None, typer.Option(help="5-field cron expression.")] = None,
    every: Annotated[str | None, typer.Option(help="Interval, e.g. 30s, 5m, 1h.")] = None,
    timezone: Annotated[str, typer.Option(help="IANA zone of the cron expression.")] = "UTC",
    catch_up: Annotated[str, typer.Option(help="skip | latest | all")] = "latest",
    limit: Annotated[int, typer.Option(help="At most this many missed fires (all).")] = 100,
    key: Annotated[str | None, typer.Option(help="Ordering key of the fired tasks.")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Change an existing one.")] = False,
    bootstrap_servers: Bootstrap = None,
    topic_prefix: Prefix = None,
    queue: Queue = None,
) -> None:
    """Add a schedule: a task type and its JSON fields, on a cron expression or an interval."""
    from streamjobs.scheduler import manage
    from streamjobs.scheduler.state import Definition
    from streamjobs.scheduler.timing import Cadence
    from streamjobs.status import now_ms

    settings = _settings(bootstrap_servers, topic_prefix, queue)
    try:
        json.loads(args)
    except ValueError as exc:
        raise ConfigError(f"--args is not JSON: {exc}") from exc
    interval = None if every is None else Cadence(every=parse_duration(every)).every
    every_s = None if interval is None else int(interval.total_seconds())
    now = now_ms()
    definition = Definition(
        name=name,
        queue=settings.queue,
        task=task,
        args_json=args,
        created_at_ms=now,
        updated_at_ms=now,
        key=key,
        cron=cron,
        every_s=every_s,
        timezone=timezone,
        catch_up=catch_up,
        catch_up_limit=limit,
    )
    manage.add(settings, definition, replace=replace)
    typer.echo(f"added {name}: {task} {definition.cadence.describe()}")


@schedules_app.command("remove")
def remove_schedule(
    name: Name,
    bootstrap_servers: Bootstrap = None,
    topic_prefix: Prefix = None,
    queue: Queue = None,
) -> None:
    """Remove a schedule (one declared in code returns when its code next leads)."""
    from streamjobs.scheduler import manage

    manage.remove(_settings(bootstrap_servers, topic_prefix, queue), name)
    typer.echo(f"removed {name}")


@schedules_app.command("pause")
def pause_schedule(
    name: Name,
    bootstrap_servers: Bootstrap = None,
    topic_prefix: Prefix = None,
    queue: Queue = None,
) -> None:
    """Stop firing; due times that pass while paused are never fired."""
    from streamjobs.scheduler import manage

    manage.set_paused(_settings(bootstrap_servers, topic_prefix, queue), name, True)
    typer.echo(f"paused {name}")


@schedules_app.command("resume")
def resume_schedule(
    name: Name,
    bootstrap_servers: Bootstrap = None,
    topic_prefix: Prefix = None,
    queue: Queue = None,
) -> None:
    """Fire again from the next due time."""
    from streamjobs.scheduler import manage

    manage.set_paused(_settings(bootstrap_servers, topic_prefix, queue), name, False)
    typer.echo(f"resumed {name}")


@schedules_app.command("trigger")
def trigger_schedule(
    name: Name,
    bootstrap_servers: Bootstrap = None,
    topic_prefix: Prefix = None,
    queue: Queue = None,
) -> None:
    """Fire once now (also when paused); prints the task id the fire will have."""
    from streamjobs.scheduler import manage

    typer.echo(manage.trigger(_settings(bootstrap_servers, topic_prefix, queue), name))
