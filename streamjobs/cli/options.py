"""What every ``streamjobs`` command shares: the connection options, Settings from the
command line, and the error exit.

Owns the ``--bootstrap-servers``, ``--topic-prefix`` and ``--queue`` options, turning the given
values (over STREAMJOBS_* variables) into Settings, and the ``error: ...`` message with its exit
code. Defines no command: :mod:`streamjobs.cli.app` and :mod:`streamjobs.cli.ops` do.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from streamjobs.errors import ConfigError
from streamjobs.settings import Settings

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
        raise fail(f"bad settings: {exc}") from exc


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` on stderr; the caller raises the returned exit."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)
