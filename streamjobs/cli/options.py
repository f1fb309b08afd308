"""What every ``streamjobs`` command shares: the connection options, Settings from the
command line, and how errors reach the user.

Owns the ``--bootstrap-servers``, ``--topic-prefix`` and ``--queue`` options, turning the given
values (over STREAMJOBS_* variables) into Settings, and the one error idiom of the command line:
a command lets a :class:`~streamjobs.errors.StreamJobsError` propagate, and the app's command
group (:class:`ReportingGroup`) prints it as one line ``error: ...`` on stderr and exits with:

* ``0`` done;
* ``1`` the command ran and the answer is a failure: a StreamJobsError (broker unreachable,
  topic misconfigured, ...), an unknown task id, a breaking schema change, items that failed;
* ``2`` the command cannot run as given: a ``ConfigError`` (bad settings, a bad argument value,
  a ``MODULE:REGISTRY`` that does not load) and typer's own usage errors.

Defines no command: :mod:`streamjobs.cli.app`, :mod:`streamjobs.cli.ops`,
:mod:`streamjobs.cli.schemas` and :mod:`streamjobs.cli.dev` do.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from typer.core import TyperGroup

from streamjobs.errors import ConfigError, StreamJobsError
from streamjobs.registry import TaskRegistry
from streamjobs.settings import Settings

EXIT_FAILED = 1
EXIT_USAGE = 2

Bootstrap = Annotated[
    str | None, typer.Option("--bootstrap-servers", "-b", help="Kafka bootstrap servers.")
]
Prefix = Annotated[str | None, typer.Option("--topic-prefix", help="Topic name prefix.")]
Queue = Annotated[str | None, typer.Option("--queue", "-q", help="Queue name.")]


class ReportingGroup(TyperGroup):
    """The root command group: a StreamJobsError escaping any command (or sub-command) becomes
    ``error: ...`` on stderr and its exit code, the same way for every command."""

    def invoke(self, ctx: Any) -> Any:  # ctx: typer's vendored click Context
        try:
            return super().invoke(ctx)
        except StreamJobsError as exc:
            typer.echo(f"error: {one_line(str(exc))}", err=True)
            raise typer.Exit(exit_code(exc)) from exc


def exit_code(error: StreamJobsError) -> int:
    """``2`` for a ConfigError (the command cannot run as given), else ``1``."""
    return EXIT_USAGE if isinstance(error, ConfigError) else EXIT_FAILED


def one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def build_settings(**overrides: Any) -> Settings:
    """Settings from STREAMJOBS_* variables, with the command-line values that were given."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        # each problem by field, without pydantic's echo of the input value (it may be a secret)
        problems = [
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
        ]
        raise ConfigError(f"bad settings: {'; '.join(problems)}") from exc
    except (ValueError, ConfigError) as exc:
        raise ConfigError(f"bad settings: {exc}") from exc


def load_registry(spec: str) -> TaskRegistry:
    """Import ``module:attribute`` named on the command line (never from record data)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"expected MODULE:REGISTRY, got {spec!r}")
    sys.path.insert(0, str(Path.cwd()))
    try:
        registry = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load {spec}: {exc}") from exc
    if not isinstance(registry, TaskRegistry):
        raise ConfigError(f"{spec} is a {type(registry).__name__}, not a TaskRegistry")
    return registry
