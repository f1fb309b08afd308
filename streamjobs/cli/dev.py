"""The development commands of ``streamjobs``: ``dev-broker`` and ``dev-jaeger``.

Owns the commands that start, stop and report a local Kafka (``dev-broker up|down|status``:
one node, or a replicated cluster with ``--nodes N``) and a local in-memory Jaeger
(``dev-jaeger build|up|down|status``), their options and output; the Makefile's ``kafka-*``
and ``jaeger-*`` targets call them. :mod:`streamjobs.dev` is imported inside the commands only,
so ``streamjobs consume`` and every other command never load development tooling. ``register``
adds the groups to the app of :mod:`streamjobs.cli.app`. Does not run anything itself:
:mod:`streamjobs.dev.kafka`, :mod:`streamjobs.dev.cluster` and :mod:`streamjobs.dev.jaeger` do.
``status`` of a service that is not running exits 1.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

broker_app = typer.Typer(help="A local single-node Kafka for development.", no_args_is_help=True)
jaeger_app = typer.Typer(
    help="A local in-memory Jaeger (built once with Go) for development.", no_args_is_help=True
)

BrokerPort = Annotated[int, typer.Option("--port", help="Client port on 127.0.0.1.")]
Nodes = Annotated[
    int,
    typer.Option(
        "--nodes",
        min=1,
        max=9,
        help="Nodes of a replicated KRaft cluster (client ports --port, --port+1, ...).",
    ),
]
CacheDir = Annotated[
    Path | None,
    typer.Option("--cache-dir", help="Jar, binary and data cache (default ~/.cache/streamjobs)."),
]
QueryPort = Annotated[int, typer.Option("--query-port", help="Jaeger's HTTP query API port.")]
QueryGrpcPort = Annotated[int, typer.Option("--query-grpc-port", help="gRPC query API port.")]
OtlpHttpPort = Annotated[int, typer.Option("--otlp-http-port", help="OTLP/HTTP receiver port.")]
OtlpGrpcPort = Annotated[int, typer.Option("--otlp-grpc-port", help="OTLP/gRPC receiver port.")]


def _progress_logging() -> None:
    """Downloads, builds and start-ups log their progress; show it plainly."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")


@broker_app.command("up")
def broker_up(port: BrokerPort = 9092, nodes: Nodes = 1, cache_dir: CacheDir = None) -> None:
    """Start (or reuse) a local KRaft broker, or a cluster of --nodes, and print its bootstrap."""
    _progress_logging()
    if nodes > 1:
        from streamjobs.dev import cluster

        typer.echo(cluster.up(port, nodes, cache_dir))
        return
    from streamjobs.dev import kafka

    typer.echo(kafka.up(port, cache_dir))


@broker_app.command("down")
def broker_down(port: BrokerPort = 9092, nodes: Nodes = 1, cache_dir: CacheDir = None) -> None:
    """Stop the local broker (or cluster) started by `dev-broker up` by PID; data is kept."""
    if nodes > 1:
        from streamjobs.dev import cluster

        stopped = cluster.down(port, nodes, cache_dir)
        typer.echo(f"stopped {stopped} of {nodes} nodes" if stopped else "not running")
        return
    from streamjobs.dev import kafka

    typer.echo("stopped" if kafka.down(port, cache_dir) else "not running")


@broker_app.command("status")
def broker_status(port: BrokerPort = 9092, nodes: Nodes = 1, cache_dir: CacheDir = None) -> None:
    """Print the bootstrap address of the `dev-broker up` broker on --port (exit 1 if none)."""
    from streamjobs.dev import kafka
    from streamjobs.dev.processes import HOST

    if nodes > 1:
        from streamjobs.dev import cluster

        pids = cluster.running_pids(port, nodes, cache_dir)
        if not pids:
            typer.echo(f"no node running on {HOST}:{port}..{port + nodes - 1}", err=True)
            raise typer.Exit(1)
        typer.echo(",".join(f"{HOST}:{p}" for p in range(port, port + nodes)))
        typer.echo(f"{len(pids)} of {nodes} nodes running: pids {pids}", err=True)
        return
    pid = kafka.running_pid(port, cache_dir)
    if pid is None:
        typer.echo(f"not running on {HOST}:{port}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{HOST}:{port}")
    typer.echo(f"pid {pid}", err=True)


@jaeger_app.command("build")
def jaeger_build(cache_dir: CacheDir = None) -> None:
    """Build Jaeger into the cache if it is missing (~6 min cold) and print the binary's path."""
    from streamjobs.dev import jaeger_build

    _progress_logging()
    typer.echo(jaeger_build.ensure_binary(cache_dir))


@jaeger_app.command("up")
def jaeger_up(
    query_port: QueryPort = 16686,
    query_grpc_port: QueryGrpcPort = 16685,
    otlp_http_port: OtlpHttpPort = 4318,
    otlp_grpc_port: OtlpGrpcPort = 4317,
    cache_dir: CacheDir = None,
) -> None:
    """Start (or reuse) a detached Jaeger on 127.0.0.1 and print where to send and read traces."""
    from streamjobs.dev import jaeger
    from streamjobs.dev.processes import HOST

    _progress_logging()
    ports = jaeger.JaegerPorts(otlp_grpc_port, otlp_http_port, query_port, query_grpc_port)
    jaeger.up(ports, cache_dir)
    typer.echo(f"query API  {ports.query_url}/api/traces?service=NAME")
    typer.echo(f"OTLP/HTTP  {ports.otlp_http_endpoint}   (--otlp-endpoint)")
    typer.echo(f"OTLP/gRPC  {HOST}:{ports.otlp_grpc}")


@jaeger_app.command("down")
def jaeger_down(query_port: QueryPort = 16686, cache_dir: CacheDir = None) -> None:
    """Stop the Jaeger started by `dev-jaeger up` on --query-port (by its PID)."""
    from streamjobs.dev import jaeger
    from streamjobs.dev.processes import HOST

    stopped = jaeger.down(query_port, cache_dir)
    typer.echo(f"stopped http://{HOST}:{query_port}" if stopped else "not running")


@jaeger_app.command("status")
def jaeger_status(query_port: QueryPort = 16686, cache_dir: CacheDir = None) -> None:
    """Print the query URL of the `dev-jaeger up` Jaeger on --query-port (exit 1 if none)."""
    from streamjobs.dev import jaeger
    from streamjobs.dev.processes import HOST

    pid = jaeger.running_pid(query_port, cache_dir)
    url = f"http://{HOST}:{query_port}"
    if pid is None:
        typer.echo(f"not running on {url}", err=True)
        raise typer.Exit(1)
    typer.echo(url)
    typer.echo(f"pid {pid}", err=True)


def register(app: typer.Typer) -> None:
    """Add ``dev-broker`` and ``dev-jaeger`` to ``app``."""
    app.add_typer(broker_app, name="dev-broker")
    app.add_typer(jaeger_app, name="dev-jaeger")
