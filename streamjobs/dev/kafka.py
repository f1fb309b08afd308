"""A local single-node Apache Kafka broker (KRaft) for development and tests, from Maven Central.

Owns running one without Docker or a Kafka tarball: on the classpath Maven resolved into a
cache directory (:func:`~streamjobs.dev.kafka_jars.ensure_classpath`), writing its
configuration, formatting its storage, starting ``kafka.Kafka`` bound to 127.0.0.1, waiting
until it serves metadata, and stopping it by PID. Two ways to run one:

* :class:`LocalBroker` is a child process owned by the caller (the test fixture), gone when the
  caller stops it;
* :func:`up` / :func:`down` manage a detached broker per port that outlives the command that
  started it and keeps its data across restarts (``streamjobs dev-broker up``,
  ``make kafka-up``).

Deliberately does not: create topics (:mod:`streamjobs.topics` does), import the Kafka client
(readiness is asked through :mod:`streamjobs.client`), read the environment (everything is passed
in), or signal a process it cannot prove it started: processes are found by PID and checked
against their command line, never by name. This is a development broker: one node, plaintext,
replication factor 1, Linux only (it reads ``/proc`` and uses ``flock``).

The Kafka version, its configuration files and the classpath live in
:mod:`streamjobs.dev.kafka_jars`; starting, proving and stopping processes by PID in
:mod:`streamjobs.dev.processes`; the commands in :mod:`streamjobs.cli.dev`.
"""

from __future__ import annotations

import base64
import logging
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

from streamjobs.client import cluster_ready
from streamjobs.dev.kafka_jars import (
    KAFKA_VERSION,
    LOG4J2_PROPERTIES,
    SERVER_PROPERTIES,
    default_cache_dir,
    deploy_text,
    ensure_classpath,
    require_tool,
)
from streamjobs.dev.processes import (
    HOST,
    ChildProcess,
    NotReady,
    RunDir,
    accepting,
    free_port,
    port_free,
    rotate_log,
    tail,
)
from streamjobs.errors import ConfigError, KafkaUnavailable

logger = logging.getLogger(__name__)

__all__ = [
    "KAFKA_VERSION",
    "LocalBroker",
    "default_cache_dir",
    "down",
    "ensure_classpath",
    "given_or_local",
    "running_pid",
    "up",
]

_LABEL = "the broker"
_FORMAT_TIMEOUT_S = 120.0
_UP_TIMEOUT_S = 90.0
_STOP_TIMEOUT_S = 30.0
_TAIL_LINES = 40
# A short-lived tool: skip the optimising compiler and the concurrent collector.
_FORMAT_JVM = ("-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")
# Like bin/kafka-server-start.sh, but exit on OOM rather than limp on (a waiting test sees it),
# and with ZGC instead of G1: in a small heap G1's young pauses (7-12 ms, every 1-2 s under load
# on 2 cores) stall every request in flight and set the p99 of a submit; ZGC's stay under 1 ms.
# bench/throughput.py, paced 100 tasks/s, 3000 tasks: p99 submit-to-start 5.2-7.0 ms with G1,
# 2.9-3.8 ms with ZGC, same broker settings otherwise.
_BROKER_JVM = (
    "-XX:+UseZGC",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)


def _log_excerpt(path: Path) -> str:
    """The first ERROR/FATAL lines of a broker log, then its last lines (shutdown hides errors)."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log written)"
    errors = [line for line in lines if " ERROR " in line or " FATAL " in line][:10]
    return "\n".join([*errors, "[...]", *lines[-20:]] if errors else lines[-_TAIL_LINES:])


def _cluster_id(data_dir: Path) -> str:
    """The id ``data_dir`` was formatted with, else a new random one as Kafka makes them.

    Kafka 4.3's ``format --ignore-formatted`` fails on formatted storage whose id differs, so a
    restart must pass the id it already has.
    """
    try:
        meta = (data_dir / "meta.properties").read_text(encoding="utf-8")
    except FileNotFoundError:
        meta = ""
    for line in meta.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "cluster.id" and value.strip():
            return value.strip()
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _serving(port: int) -> Callable[[], bool]:
    # A refused TCP connect is instant; a metadata request to a closed port waits its timeout.
    return lambda: accepting(port) and cluster_ready(f"{HOST}:{port}", timeout=2.0)


def _run_dir(workdir: Path) -> RunDir:
    """A detached broker's files in ``workdir``; its PID is ours while it runs their config."""
    props = workdir / "server.properties"
    return RunDir(workdir, "broker", ("kafka.Kafka", str(props)), _LABEL, _STOP_TIMEOUT_S)


class LocalBroker(ChildProcess):
    """One single-node KRaft broker as a child process, with its state under ``workdir``.

    ``port`` / ``controller_port`` 0 pick free ports on 127.0.0.1. Use as a context manager, or
    call :meth:`start` and :meth:`stop`. ``workdir`` keeps ``server.properties``, ``data/`` and
    ``broker.log`` (the previous run's log is kept as ``broker.log.1``).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        port: int = 0,
        controller_port: int = 0,
        cache_dir: Path | None = None,
        heap_mb: int = 640,
    ) -> None:
        super().__init__(workdir, "broker.log", _LABEL, _STOP_TIMEOUT_S)
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        while self.controller_port == self.port:
            self.controller_port = free_port()
        self.cache_dir = (cache_dir if cache_dir is not None else default_cache_dir()).resolve()
        self.heap_mb = heap_mb
        self.bootstrap = f"{HOST}:{self.port}"

    @property
    def props_path(self) -> Path:
        return self.workdir / "server.properties"

    def start(self, timeout: float = 90.0) -> None:
        """Resolve the classpath, write the config, format storage, start, wait until ready.

        Raises :class:`KafkaUnavailable` with the tail of ``broker.log`` when the broker exits
        or does not serve metadata within ``timeout`` seconds (it is stopped first).
        """
        if self.pid is not None:
            raise ConfigError(f"broker at {self.bootstrap} is already started (pid {self.pid})")
        command = self._prepare()
        began = time.monotonic()
        pid = self._spawn(command, _serving(self.port), timeout, self._not_ready(timeout))
        logger.info(
            "Kafka %s ready at %s in %.1fs (pid %d)",
            KAFKA_VERSION,
            self.bootstrap,
            time.monotonic() - began,
            pid,
        )

    def _start_detached(self, timeout: float) -> int:
        """Start the broker outside our process tree, record its PID, wait until ready."""
        command = self._prepare()
        began = time.monotonic()
        run = _run_dir(self.workdir)
        pid = run.start(command, _serving(self.port), timeout, self._not_ready(timeout))
        logger.info(
            "Kafka %s ready at %s in %.1fs (pid %d, detached)",
            KAFKA_VERSION,
            self.bootstrap,
            time.monotonic() - began,
            pid,
        )
        return pid

    def _not_ready(self, timeout: float) -> NotReady:
        def fail(exited: str | None) -> NoReturn:
            reason = exited or f"no metadata after {timeout:.0f}s; stopped it"
            raise KafkaUnavailable(
                f"local Kafka broker at {self.bootstrap} did not start ({reason}); from"
                f" {self.log_path}:\n{_log_excerpt(self.log_path)}"
            )

        return fail

    def _prepare(self) -> list[str]:
        """Classpath, config files and formatted storage; returns the broker's command line."""
        libs = ensure_classpath(self.cache_dir)
        java = require_tool("java", "a Java 17+ runtime")
        self.workdir.mkdir(parents=True, exist_ok=True)
        log4j = self.workdir / "log4j2.properties"
        log4j.write_text(deploy_text("log4j2.properties", LOG4J2_PROPERTIES), encoding="utf-8")
        self.props_path.write_text(self._properties(), encoding="utf-8")
        rotate_log(self.log_path)

        def java_command(jvm: Sequence[str], main: str, *args: str) -> list[str]:
            classpath = ["-cp", f"{libs}/*", main, *args]
            return [java, *jvm, f"-Dlog4j2.configurationFile={log4j}", *classpath]

        props = str(self.props_path)
        cluster_id = self._storage_id()
        # --ignore-formatted keeps existing data: a restart never wipes the broker.
        format_args = ["format", "-t", cluster_id, "-c", props, "--ignore-formatted"]
        format_args += self._format_extra()
        self._format(java_command(_FORMAT_JVM, "kafka.tools.StorageTool", *format_args))
        heap = [f"-Xms{min(self.heap_mb, 128)}m", f"-Xmx{self.heap_mb}m"]
        # pauses and allocation stalls, to check the collector when latency looks wrong
        gc_log = f"-Xlog:gc:file={self.workdir / 'gc.log'}:uptime:filecount=2,filesize=4m"
        return java_command([*heap, *_BROKER_JVM, gc_log], "kafka.Kafka", props)

    def _format_extra(self) -> list[str]:
        """More ``kafka-storage format`` arguments (SCRAM users of a secured broker)."""
        return []

    def _storage_id(self) -> str:
        """The cluster id to format storage with (a cluster's nodes share theirs)."""
        return _cluster_id(self.workdir / "data")

    def _format(self, command: list[str]) -> None:
        began = time.monotonic()
        try:
            done = subprocess.run(
                command,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=_FORMAT_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ConfigError(
                f"formatting Kafka storage took over {_FORMAT_TIMEOUT_S:.0f}s"
            ) from None
        if done.returncode != 0:
            raise ConfigError(
                f"formatting Kafka storage in {self.workdir / 'data'} failed"
                f" (exit {done.returncode}):\n{tail(done.stdout + done.stderr)}"
            )
        logger.debug("formatted storage in %.1fs", time.monotonic() - began)

    def _properties(self) -> str:
        listeners = f"PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}"
        data = str(self.workdir / "data").replace("\\", "\\\\")
        return (
            deploy_text("server.properties", SERVER_PROPERTIES)
            + "\n# Written by streamjobs.dev.kafka for this instance\n"
            + f"listeners={listeners}\n"
            + f"advertised.listeners={listeners}\n"
            + f"controller.quorum.voters=1@{HOST}:{self.controller_port}\n"
            + f"log.dirs={data}\n"
        )


def _state_dir(port: int, cache_dir: Path | None) -> Path:
    base = cache_dir if cache_dir is not None else default_cache_dir()
    return (base / f"broker-{port}").resolve()


def _controller_port(state: Path) -> int:
    """The controller port used last time if it is still free, else a new one (remembered)."""
    record = state / "controller.port"
    try:
        port = int(record.read_text(encoding="ascii"))
    except (OSError, ValueError):
        port = 0
    if not port or not port_free(port):
        port = free_port()
        record.write_text(f"{port}\n", encoding="ascii")
    return port


def running_pid(port: int = 9092, cache_dir: Path | None = None) -> int | None:
    """The PID of the :func:`up` broker for ``port`` if it is running, else None."""
    return _run_dir(_state_dir(port, cache_dir)).recorded_pid()


def up(port: int = 9092, cache_dir: Path | None = None) -> str:
    """Ensure a detached broker serves ``127.0.0.1:<port>`` and return that bootstrap address.

    Reuses the broker recorded in ``<cache_dir>/broker-<port>/broker.pid`` when that PID is still
    our ``kafka.Kafka`` for that directory and it answers; otherwise starts a new one that keeps
    the previous data. Raises :class:`ConfigError` if another process holds the port.
    """
    state = _state_dir(port, cache_dir)
    bootstrap = f"{HOST}:{port}"
    run = _run_dir(state)
    with run.lock():
        pid = run.reuse(_serving(port), _UP_TIMEOUT_S / 3)
        if pid is not None:
            logger.info("reusing Kafka at %s (pid %d)", bootstrap, pid)
            return bootstrap
        if not port_free(port):
            raise ConfigError(
                f"{bootstrap} is in use by a process streamjobs did not start;"
                " stop it or pick another port"
            )
        broker = LocalBroker(
            state, port=port, controller_port=_controller_port(state), cache_dir=cache_dir
        )
        broker._start_detached(_UP_TIMEOUT_S)
    return bootstrap


def down(port: int = 9092, cache_dir: Path | None = None) -> bool:
    """Stop the :func:`up` broker for ``port`` by its recorded PID. True if one was stopped.

    The PID's command line is checked first; a stale pid file is removed and nothing is signalled.
    Data is kept for the next :func:`up`.
    """
    return _run_dir(_state_dir(port, cache_dir)).stop()


@contextmanager
def given_or_local(bootstrap_servers: str | None) -> Iterator[str]:
    """``bootstrap_servers`` when given, else a LocalBroker in a temporary directory for the
    block (stopped by PID afterwards). For scripts such as the benchmarks."""
    if bootstrap_servers:
        yield bootstrap_servers
        return
    with LocalBroker(Path(tempfile.mkdtemp(prefix="streamjobs-kafka-"))) as local:
        yield local.bootstrap
