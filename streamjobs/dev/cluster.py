"""A local replicated Kafka cluster (KRaft, N combined nodes) for fault tests and development.

Owns running N nodes of the same Maven-resolved Kafka on 127.0.0.1, each a combined broker and
controller (``process.roles=broker,controller``) with every node a voter of one static controller
quorum. Combined nodes are the smallest shape that still has a real quorum: three JVMs instead of
six, so it fits next to the test suite on a small machine, and killing one node takes away a
broker *and* a voter, which is the harsher fault (the remaining two still elect a leader). Topics
default to replication factor 3 (at most the node count) with ``min.insync.replicas`` 2, and
every internal topic (offsets, transactions) is replicated the same way, so losing one node loses
nothing that was acknowledged with ``acks=all``.

Two ways to run one, like :mod:`streamjobs.dev.kafka`:

* :class:`LocalCluster`: the nodes are children of the caller (the ``kafka_cluster`` fixture),
  which can SIGKILL, SIGSTOP and restart one (:meth:`LocalCluster.node`);
* :func:`up` / :func:`down`: detached nodes that outlive ``streamjobs dev-broker up --nodes 3``.

Deliberately does not: create topics (:mod:`streamjobs.topics`), find which node leads a
partition (the tests ask Kafka), or signal a process it did not start (PIDs only).
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Self

from streamjobs.dev.kafka import LocalBroker, _cluster_id, _run_dir, _serving
from streamjobs.dev.kafka_jars import default_cache_dir
from streamjobs.dev.processes import HOST, free_port, port_free
from streamjobs.errors import ConfigError, KafkaUnavailable

logger = logging.getLogger(__name__)

__all__ = ["ClusterNode", "LocalCluster", "Quorum", "cluster_properties", "down", "up"]

_NODE_HEAP_MB = 384
_UP_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class Quorum:
    """Who is in the cluster: each node's id, client port and controller port, and its shape."""

    ports: tuple[int, ...]
    controller_ports: tuple[int, ...]
    cluster_id: str

    @property
    def size(self) -> int:
        return len(self.ports)

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{HOST}:{port}" for port in self.ports)

    @property
    def voters(self) -> str:
        return ",".join(
            f"{n}@{HOST}:{port}" for n, port in enumerate(self.controller_ports, start=1)
        )


def cluster_properties(quorum: Quorum, node_id: int) -> str:
    """The lines a node of ``quorum`` adds after the single-node ``server.properties``.

    Java's ``Properties`` keeps the last value of a repeated key, so these win. Pure: unit-tested.
    """
    replicas = min(3, quorum.size)
    min_isr = max(1, replicas - 1)
    return (
        f"\n# Written by streamjobs.dev.cluster: node {node_id} of {quorum.size}\n"
        f"node.id={node_id}\n"
        f"controller.quorum.voters={quorum.voters}\n"
        f"default.replication.factor={replicas}\n"
        f"min.insync.replicas={min_isr}\n"
        f"offsets.topic.replication.factor={replicas}\n"
        f"transaction.state.log.replication.factor={replicas}\n"
        f"transaction.state.log.min.isr={min_isr}\n"
        # a partition per node for the groups' and the transactions' coordinators (a single
        # node has one each): they spread over the nodes, as on a production cluster
        f"offsets.topic.num.partitions={quorum.size}\n"
        f"transaction.state.log.num.partitions={quorum.size}\n"
        f"share.coordinator.state.topic.replication.factor={replicas}\n"
        f"share.coordinator.state.topic.min.isr={min_isr}\n"
        # A frozen or dead node leaves the ISR (and acks=all stops waiting for it) after 10 s,
        # not 30 s; the controller fences a silent broker after 6 s and moves its leaderships.
        "replica.lag.time.max.ms=10000\n"
        "broker.session.timeout.ms=6000\n"
        "broker.heartbeat.interval.ms=1000\n"
        "unclean.leader.election.enable=false\n"
    )


class ClusterNode(LocalBroker):
    """One node of a :class:`Quorum`: a :class:`LocalBroker` with the cluster's lines added."""

    def __init__(self, workdir: Path, quorum: Quorum, node_id: int, cache_dir: Path | None) -> None:
        super().__init__(
            workdir,
            port=quorum.ports[node_id - 1],
            controller_port=quorum.controller_ports[node_id - 1],
            cache_dir=cache_dir,
            heap_mb=_NODE_HEAP_MB,
        )
        self.quorum = quorum
        self.node_id = node_id

    def _properties(self) -> str:
        return super()._properties() + cluster_properties(self.quorum, self.node_id)

    def _storage_id(self) -> str:
        return self.quorum.cluster_id

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the node (a crash: no clean shutdown) and reap it. :meth:`start` brings it
        back on the same ports with the data it had."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()


def _new_quorum(nodes: int) -> Quorum:
    ports: list[int] = []
    while len(ports) < 2 * nodes:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return Quorum(tuple(ports[:nodes]), tuple(ports[nodes:]), _cluster_id(Path("/nonexistent")))


def _together(actions: Sequence[Callable[[], object]]) -> None:
    """Run ``actions`` in threads and wait for all: no node is ready until a quorum of them runs,
    so the nodes must start side by side. Raises the first failure."""
    failures: list[BaseException] = []

    def run(action: Callable[[], object]) -> None:
        try:
            action()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(a,), daemon=True) for a in actions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


class LocalCluster:
    """``nodes`` combined KRaft nodes as children of the caller, under ``workdir/node-<id>``.

    Use as a context manager, or :meth:`start` and :meth:`stop`. :meth:`node` gives one node
    (1-based id) to kill, freeze or restart.
    """

    def __init__(self, workdir: Path, nodes: int = 3, cache_dir: Path | None = None) -> None:
        if nodes < 1:
            raise ConfigError("a cluster needs at least one node")
        self.workdir = workdir.resolve()
        self.quorum = _new_quorum(nodes)
        self._nodes = [
            ClusterNode(self.workdir / f"node-{n}", self.quorum, n, cache_dir)
            for n in range(1, nodes + 1)
        ]

    @property
    def bootstrap(self) -> str:
        return self.quorum.bootstrap

    @property
    def nodes(self) -> list[ClusterNode]:
        return list(self._nodes)

    def node(self, node_id: int) -> ClusterNode:
        return self._nodes[node_id - 1]

    def start(self, timeout: float = _UP_TIMEOUT_S) -> None:
        """Start every node side by side and return once each serves metadata."""
        began = time.monotonic()
        try:
            _together([partial(n.start, timeout) for n in self._nodes])
        except BaseException:
            self.stop()
            raise
        logger.info(
            "Kafka cluster of %d ready at %s in %.1fs",
            self.quorum.size,
            self.bootstrap,
            time.monotonic() - began,
        )

    def stop(self) -> None:
        """Stop every node by PID (SIGTERM, then SIGKILL). Idempotent."""
        _together([node.stop for node in self._nodes])

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# -- detached: `streamjobs dev-broker up --nodes N` ------------------------------------------


def _state_dir(port: int, cache_dir: Path | None) -> Path:
    base = cache_dir if cache_dir is not None else default_cache_dir()
    return (base / f"cluster-{port}").resolve()


def _quorum_record(state: Path, port: int, nodes: int) -> Quorum:
    """The quorum used last time (same ports and cluster id, so the data is kept), else a new
    one on ``port, port+1, ...`` (remembered in ``quorum.txt``)."""
    record = state / "quorum.txt"
    try:
        cluster_id, clients, controllers = record.read_text(encoding="ascii").split()
        quorum = Quorum(
            tuple(int(p) for p in clients.split(",")),
            tuple(int(p) for p in controllers.split(",")),
            cluster_id,
        )
        if quorum.ports == tuple(range(port, port + nodes)):
            return quorum
    except (OSError, ValueError):
        pass
    fresh = _new_quorum(nodes)
    quorum = Quorum(tuple(range(port, port + nodes)), fresh.controller_ports, fresh.cluster_id)
    state.mkdir(parents=True, exist_ok=True)
    record.write_text(
        f"{quorum.cluster_id} {','.join(map(str, quorum.ports))}"
        f" {','.join(map(str, quorum.controller_ports))}\n",
        encoding="ascii",
    )
    return quorum


def running_pids(port: int = 9092, nodes: int = 3, cache_dir: Path | None = None) -> list[int]:
    """PIDs of the :func:`up` cluster's nodes that are running."""
    state = _state_dir(port, cache_dir)
    found = (_run_dir(state / f"node-{n}").recorded_pid() for n in range(1, nodes + 1))
    return [pid for pid in found if pid is not None]


def up(port: int = 9092, nodes: int = 3, cache_dir: Path | None = None) -> str:
    """Ensure a detached cluster of ``nodes`` serves ``127.0.0.1:<port>..`` and return its
    bootstrap list. Running nodes are reused; the others are started side by side."""
    state = _state_dir(port, cache_dir)
    quorum = _quorum_record(state, port, nodes)
    starting: list[ClusterNode] = []
    for n in range(1, nodes + 1):
        node = ClusterNode(state / f"node-{n}", quorum, n, cache_dir)
        run = _run_dir(node.workdir)
        node.workdir.mkdir(parents=True, exist_ok=True)
        if run.recorded_pid() is not None:
            continue
        for busy in (node.port, node.controller_port):
            if not port_free(busy):
                raise ConfigError(f"{HOST}:{busy} is in use by a process streamjobs did not start")
        starting.append(node)

    def start(node: ClusterNode) -> None:
        with _run_dir(node.workdir).lock():
            node._start_detached(_UP_TIMEOUT_S)

    _together([partial(start, n) for n in starting])
    if not all(_serving(p)() for p in quorum.ports):
        raise KafkaUnavailable(f"the cluster at {quorum.bootstrap} does not serve metadata")
    return quorum.bootstrap


def down(port: int = 9092, nodes: int = 3, cache_dir: Path | None = None) -> int:
    """Stop the :func:`up` cluster's nodes by their recorded PIDs; returns how many were stopped."""
    state = _state_dir(port, cache_dir)
    runs = [_run_dir(state / f"node-{n}") for n in range(1, nodes + 1)]
    running = [run for run in runs if run.recorded_pid() is not None]
    _together([run.stop for run in running])
    return len(running)


@contextmanager
def temporary(nodes: int = 3) -> Iterator[LocalCluster]:
    """A cluster in a temporary directory for the block, stopped by PID afterwards."""
    with LocalCluster(Path(tempfile.mkdtemp(prefix="streamjobs-cluster-")), nodes) as cluster:
        yield cluster
