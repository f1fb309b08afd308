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

"Done" means good news: a command that answers a question exits 0 only when the answer is good
(``status`` of a dead-lettered or cancelled task exits 1, ``topics verify`` exits 1 when tier
topics on the cluster hold tasks the settings no longer consume). A command with its own codes
lists them in its ``--help``.

The group also keeps ``--help`` honest: flags (``--json``, ``--help``, ``--dry-run``) are shown
without a value placeholder (typer's rich help would print ``--json <bool>``), and an option
whose default comes from Settings says so with ``show_default`` (see :func:`setting_default`).

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


def setting_default(field: str) -> str:
    """The ``show_default`` text of an option whose default comes from Settings: its variable,
    else the Settings default, e.g. ``$STREAMJOBS_CONCURRENCY or 1``."""
    default = Settings.model_fields[field].default
    return f"$STREAMJOBS_{field.upper()} or {default}"


Bootstrap = Annotated[
    str | None,
    typer.Option(
        "--bootstrap-servers",
        "-b",
        help="Kafka bootstrap servers.",
        show_default=setting_default("bootstrap_servers"),
    ),
]
Prefix = Annotated[
    str | None,
    typer.Option(
        "--topic-prefix", help="Topic name prefix.", show_default=setting_default("topic_prefix")
    ),
]
Queue = Annotated[
    str | None,
    typer.Option("--queue", "-q", help="Queue name.", show_default=setting_default("queue")),
]


Queues = Annotated[
    list[str] | None,
    typer.Option(
        "--queue",
        "-q",
        help="Queue; repeat it for several, highest priority first (NAME, or NAME=WEIGHT for "
        "weighted order).",
        show_default="$STREAMJOBS_QUEUES or $STREAMJOBS_QUEUE or default",
    ),
]


def queue_options(queues: list[str] | None, order: str | None = None) -> dict[str, Any]:
    """Settings overrides of a repeatable ``--queue``: given once without a weight, it is
    ``queue`` (as ever); otherwise ``queues``."""
    given: dict[str, Any] = {"queue_order": order}
    if queues and len(queues) == 1 and "=" not in queues[0]:
        given["queue"] = queues[0]
    elif queues:
        given["queues"] = queues
    return given


class ReportingGroup(TyperGroup):
    """The root command group: a StreamJobsError escaping any command (or sub-command) becomes
    ``error: ...`` on stderr and its exit code, the same way for every command; every flag of
    the command tree is shown in ``--help`` without a value placeholder."""

    _flags_plain = False

    def get_params(self, ctx: Any) -> list[Any]:
        # the root's params are read before any sub-command parses or prints its help
        if not self._flags_plain:
            self._flags_plain = True
            _plain_flags(self, ctx)
        return super().get_params(ctx)

    def invoke(self, ctx: Any) -> Any:  # ctx: typer's vendored click Context
        try:
            return super().invoke(ctx)
        except StreamJobsError as exc:
            typer.echo(f"error: {one_line(str(exc))}", err=True)
            raise typer.Exit(exit_code(exc)) from exc


def _plain_flags(command: Any, ctx: Any) -> None:
    """Give every flag of ``command`` and its sub-commands (``--help`` included) an empty
    metavar: typer's rich help prints ``metavar`` when set, and a ``<bool>`` placeholder
    otherwise, as if a flag took a value."""
    for param in command.get_params(ctx):
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _plain_flags(sub, ctx)


def exit_code(error: StreamJobsError) -> int:
    """``2`` for a ConfigError (the command cannot run as given), else ``1``."""
    return EXIT_USAGE if isinstance(error, ConfigError) else EXIT_FAILED


def one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def build_settings(**overrides: Any) -> Settings:
    """Settings from STREAMJOBS_* variables, with the command-line values that were given."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if "queue" in given and "queues" not in given:
        given["queues"] = []  # one queue named on the command line: not $STREAMJOBS_QUEUES
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
