"""``streamjobs cancel ID...``: cancel tasks by id.

Owns the command's arguments, its lines and JSON, and its exit codes (errors follow the one idiom
of :mod:`streamjobs.cli.options`). Deciding whether a task can be cancelled and writing the
request is :mod:`streamjobs.cancels`'s. ``register`` adds the command to the app of
:mod:`streamjobs.cli.app`.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from streamjobs.cli.options import EXIT_FAILED, Bootstrap, Prefix, build_settings

CANCEL_EXIT_CODES = (
    "Exit codes: 0 a cancel was requested for every id (or it was cancelled already); "
    "1 some id is unknown or already finished (nothing changed for it), or Kafka could not be "
    "reached; 2 bad options."
)


def cancel_command(
    task_ids: Annotated[list[str], typer.Argument(help="Ids of the tasks to cancel.")],
    bootstrap_servers: Bootstrap = None,
    topic_prefix: Prefix = None,
    timeout: Annotated[float, typer.Option(help="Seconds for each status read and write.")] = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Cancel tasks. One that has not started never runs and ends cancelled; a running async
    handler is cancelled; a running sync handler is told and left to finish (see the README).
    An unknown or finished task is left as it is, and said so."""
    from streamjobs import cancels

    settings = build_settings(bootstrap_servers=bootstrap_servers, topic_prefix=topic_prefix)
    write = cancels.own_producer_write(settings, timeout)
    results = [cancels.request(settings, task_id, write, timeout=timeout) for task_id in task_ids]
    for result in results:
        typer.echo(json.dumps(result.as_dict()) if as_json else result.describe())
    refused = (cancels.CancelOutcome.UNKNOWN, cancels.CancelOutcome.FINISHED)
    if any(result.outcome in refused for result in results):
        raise typer.Exit(EXIT_FAILED)


def register(app: typer.Typer) -> None:
    """Add ``cancel`` to ``app``."""
    app.command("cancel", epilog=CANCEL_EXIT_CODES)(cancel_command)
