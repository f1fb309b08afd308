"""The ``streamjobs schemas`` commands: export and check the Avro schemas of a registry.

Owns ``schemas export APP:REGISTRY [--out DIR]`` (one deterministic ``<task>.avsc`` per
registered task type) and ``schemas check APP:REGISTRY`` (every registered task type against the
writer schemas already on the queue's schemas topic: ``ok`` or ``breaking`` with the reasons;
exit 1 on a breaking change, so a deploy pipeline can stop before new producers or workers
strand queued tasks). Parses and delegates: deriving and writing schemas is
:mod:`streamjobs.tasktypes`, reading the schemas topic and comparing is
:mod:`streamjobs.schemastore` with the rule of :mod:`streamjobs.evolution`. ``register`` adds
the group to the app of :mod:`streamjobs.cli.app`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streamjobs import schemastore, tasktypes
from streamjobs.cli.options import EXIT_FAILED, Bootstrap, Prefix, Queue, build_settings
from streamjobs.cli.options import load_registry as load

schemas_app = typer.Typer(
    help="Export and check the Avro schemas of your task types.", no_args_is_help=True
)

RegistrySpec = Annotated[str, typer.Argument(help="MODULE:REGISTRY holding your handlers.")]


@schemas_app.command("export")
def schemas_export(
    registry: RegistrySpec,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Directory for the .avsc files.")
    ] = Path(),
) -> None:
    """Write each registered task type's Avro schema to DIR/<task>.avsc (sorted-key JSON)."""
    for path in tasktypes.export_schemas((h.task_type for h in load(registry)), out):
        typer.echo(str(path))


@schemas_app.command("check")
def schemas_check(
    registry: RegistrySpec,
    bootstrap_servers: Bootstrap = None,
    topic_prefix: Prefix = None,
    queue: Queue = None,
) -> None:
    """Check each registered task type against the writer schemas on the schemas topic.

    Both ways: new workers must read queued old tasks, old workers new ones. Exit 1 if any breaks.
    """
    handlers = load(registry)
    settings = build_settings(
        bootstrap_servers=bootstrap_servers, topic_prefix=topic_prefix, queue=queue
    )
    checks = schemastore.check(settings, [h.task_type for h in handlers])
    for check in checks:
        seen = f"{check.writers} published schema{'' if check.writers == 1 else 's'}"
        typer.echo(f"{'ok' if check.ok else 'breaking':<9}{check.task} ({seen})")
        for problem in check.problems:
            typer.echo(f"         - {problem}")
    if not all(check.ok for check in checks):
        raise typer.Exit(EXIT_FAILED)


def register(app: typer.Typer) -> None:
    """Add ``schemas`` to ``app``."""
    app.add_typer(schemas_app, name="schemas")
