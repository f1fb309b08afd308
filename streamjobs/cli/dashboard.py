"""``streamjobs dashboard``: parse the options and run :mod:`streamjobs.dashboard`.

Owns the command's options and the friendly error when the ``dashboard`` extra is missing.
``register`` adds the command to the app of :mod:`streamjobs.cli.app`. Does not import the web
stack until the command runs, so every other command works without it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from streamjobs.cli.options import Bootstrap, Prefix, Queues, build_settings, queue_options
from streamjobs.errors import ConfigError


def dashboard(
    bootstrap_servers: Bootstrap = None,
    topic_prefix: Prefix = None,
    queue: Queues = None,
    host: Annotated[
        str | None, typer.Option(help="Interface to listen on (default 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8765).")] = None,
    index: Annotated[
        Path | None,
        typer.Option(
            help="Index file (default ~/.cache/streamjobs/index/PREFIX.FIRST_QUEUE.sqlite3)."
        ),
    ] = None,
) -> None:
    """Serve the web dashboard: search every task, see its life, re-drive dead letters. Shows
    every queue given (``--queue`` repeated, or ``$STREAMJOBS_QUEUES``, as ``consume``)."""
    settings = build_settings(
        bootstrap_servers=bootstrap_servers,
        topic_prefix=topic_prefix,
        **queue_options(queue),
        dashboard_host=host,
        dashboard_port=port,
        index_path=index,
    )
    try:
        from streamjobs.dashboard.server import DashboardServer
    except ImportError as exc:
        raise ConfigError(
            f"the dashboard needs its extra: pip install 'streamjobs[dashboard]' ({exc})"
        ) from exc
    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(message)s")
    DashboardServer(settings, say=lambda line: typer.echo(line, err=True)).run()


def register(app: typer.Typer) -> None:
    app.command("dashboard")(dashboard)
