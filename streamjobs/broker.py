"""A local single-node Apache Kafka broker (KRaft) for development and tests, from Maven Central.

Owns everything needed to run one without Docker or a Kafka tarball: resolving the broker's
runtime classpath into a cache directory with Maven (:func:`ensure_classpath`), writing its
configuration, formatting its storage, starting ``kafka.Kafka`` bound to 127.0.0.1, waiting
until it serves metadata, and stopping it by PID. Two ways to run one:

* :class:`LocalBroker` is a child process owned by the caller (the test fixture), gone when the
  caller stops it;
* :func:`up` / :func:`down` manage a detached broker per port that outlives the command that
  started it and keeps its data across restarts (``make kafka-up``, ``python -m
  streamjobs.broker up``).

Deliberately does not: create topics (:mod:`streamjobs.topics` does), import the Kafka client
(readiness is asked through :mod:`streamjobs.client`), read the environment (everything is passed
in), or signal a process it cannot prove it started: processes are found by PID and checked
against their command line, never by name. This is a development broker: one node, plaintext,
replication factor 1, Linux only (it reads ``/proc`` and uses ``flock``).

The Kafka version, its configuration files and the classpath live in :mod:`streamjobs.kafkadist`.
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import NoReturn

from streamjobs.client import cluster_ready
from streamjobs.errors import ConfigError, KafkaUnavailable, StreamJobsError
from streamjobs.kafkadist import (
    KAFKA_VERSION,
    LOG4J2_PROPERTIES,
    SERVER_PROPERTIES,
    default_cache_dir,
    deploy_text,
    ensure_classpath,
    locked,
    require_tool,
    tail,
)

logger = logging.getLogger(__name__)

__all__ = [
    "KAFKA_VERSION",
    "LocalBroker",
    "default_cache_dir",
    "down",
    "ensure_classpath",
    "running_pid",
    "up",
]

_HOST = "127.0.0.1"
_FORMAT_TIMEOUT_S = 120.0
_UP_TIMEOUT_S = 90.0
_STOP_TIMEOUT_S = 30.0
_POLL_S = 0.1
_TAIL_LINES = 40
# A short-lived tool: skip the optimising compiler and the concurrent collector.
_FORMAT_JVM = ("-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")
# Like bin/kafka-server-start.sh, but exit on OOM rather than limp on (a waiting test sees it).
_BROKER_JVM = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)

# The broker must outlive the command that starts it, and must not stay our child: a child we
# never wait for becomes a zombie once stopped, and dropping its Popen raises ResourceWarning.
# So a throwaway interpreter starts it in a new session, prints its PID and exits, and the broker
# is re-parented to init.
_DETACH = """\
import subprocess, sys
with open(sys.argv[1], "ab") as log:
    child = subprocess.Popen(sys.argv[3:], cwd=sys.argv[2], stdin=subprocess.DEVNULL,
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
print(child.pid)
"""


def _log_excerpt(path: Path) -> str:
    """The first ERROR/FATAL lines of a broker log, then its last lines (shutdown hides errors)."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log written)"
    errors = [line for line in lines if " ERROR " in line or " FATAL " in line][:10]
    return "\n".join([*errors, "[...]", *lines[-20:]] if errors else lines[-_TAIL_LINES:])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_free(port: int) -> bool:
    """True when ``port`` can be bound on 127.0.0.1 (as the broker binds it: SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((_HOST, port))
        except OSError:
            return False
        return True


def _accepting(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((_HOST, port)) == 0


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


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a stopped child nobody reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _is_broker_for(pid: int, props: Path) -> bool:
    """True when ``pid`` is a live ``kafka.Kafka`` started with exactly ``props``."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    args = raw.rstrip(b"\0").split(b"\0")
    return _alive(pid) and args[-2:] == [b"kafka.Kafka", os.fsencode(props)]


def _await(condition: Callable[[], bool], alive: Callable[[], bool], timeout: float) -> bool:
    """Poll ``condition`` until it holds (True), or ``alive`` fails or time runs out (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if not alive():
            return False
        time.sleep(_POLL_S)
    return False


def _serving(port: int) -> Callable[[], bool]:
    # A refused TCP connect is instant; a metadata request to a closed port waits its timeout.
    return lambda: _accepting(port) and cluster_ready(f"{_HOST}:{port}", timeout=2.0)


def _terminate(pid: int, timeout: float) -> None:
    """SIGTERM ``pid`` (a controlled shutdown), then SIGKILL if it is still alive after timeout."""
    for sig, wait_s in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if _await(lambda: not _alive(pid), lambda: True, wait_s):
            return
        logger.warning("broker pid %d still alive %.0fs after %s", pid, wait_s, sig.name)


class LocalBroker:
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
        self.workdir = workdir.resolve()  # absolute: it is also the broker's cwd and PID check
        self.port = port or _free_port()
        self.controller_port = controller_port or _free_port()
        while self.controller_port == self.port:
            self.controller_port = _free_port()
        self.cache_dir = (cache_dir if cache_dir is not None else default_cache_dir()).resolve()
        self.heap_mb = heap_mb
        self.bootstrap = f"{_HOST}:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The broker's PID while started by :meth:`start`, else None."""
        return self._proc.pid if self._proc is not None else None

    @property
    def props_path(self) -> Path:
        return self.workdir / "server.properties"

    @property
    def log_path(self) -> Path:
        return self.workdir / "broker.log"

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout: float = 90.0) -> None:
        """Resolve the classpath, write the config, format storage, start, wait until ready.

        Raises :class:`KafkaUnavailable` with the tail of ``broker.log`` when the broker exits
        or does not serve metadata within ``timeout`` seconds (it is stopped first).
        """
        if self._proc is not None:
            raise ConfigError(f"broker at {self.bootstrap} is already started (pid {self.pid})")
        command = self._prepare()
        began = time.monotonic()
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(
                command,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._proc = proc
        if not _await(_serving(self.port), lambda: proc.poll() is None, timeout):
            code = proc.poll()
            self.stop()
            self._fail(timeout, None if code is None else f"it exited with code {code}")
        logger.info(
            "Kafka %s ready at %s in %.1fs (pid %d)",
            KAFKA_VERSION,
            self.bootstrap,
            time.monotonic() - began,
            proc.pid,
        )

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the broker by PID, wait up to ``timeout`` seconds, then SIGKILL. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "broker pid %d ignored SIGTERM for %.0fs; killing", proc.pid, timeout
                )
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()

    def _start_detached(self, timeout: float) -> int:
        """Start the broker outside our process tree, record its PID, wait until ready."""
        command = self._prepare()
        began = time.monotonic()
        python = [sys.executable, "-I", "-W", "ignore::ResourceWarning", "-c", _DETACH]
        done = subprocess.run(
            [*python, str(self.log_path), str(self.workdir), *command],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise ConfigError(f"could not launch the broker: {tail(done.stderr)}")
        pid = int(done.stdout)
        (self.workdir / "broker.pid").write_text(f"{pid}\n", encoding="ascii")
        if not _await(_serving(self.port), lambda: _alive(pid), timeout):
            exited = not _alive(pid)
            _terminate(pid, _STOP_TIMEOUT_S)
            self._fail(timeout, "it exited" if exited else None)
        logger.info(
            "Kafka %s ready at %s in %.1fs (pid %d, detached)",
            KAFKA_VERSION,
            self.bootstrap,
            time.monotonic() - began,
            pid,
        )
        return pid

    def _fail(self, timeout: float, exited: str | None) -> NoReturn:
        reason = exited or f"no metadata after {timeout:.0f}s; stopped it"
        raise KafkaUnavailable(
            f"local Kafka broker at {self.bootstrap} did not start ({reason}); from"
            f" {self.log_path}:\n{_log_excerpt(self.log_path)}"
        )

    def _prepare(self) -> list[str]:
        """Classpath, config files and formatted storage; returns the broker's command line."""
        libs = ensure_classpath(self.cache_dir)
        java = require_tool("java", "a Java 17+ runtime")
        self.workdir.mkdir(parents=True, exist_ok=True)
        log4j = self.workdir / "log4j2.properties"
        log4j.write_text(deploy_text("log4j2.properties", LOG4J2_PROPERTIES), encoding="utf-8")
        self.props_path.write_text(self._properties(), encoding="utf-8")
        if self.log_path.exists():
            self.log_path.replace(self.workdir / "broker.log.1")

        def java_command(jvm: Sequence[str], main: str, *args: str) -> list[str]:
            classpath = ["-cp", f"{libs}/*", main, *args]
            return [java, *jvm, f"-Dlog4j2.configurationFile={log4j}", *classpath]

        props = str(self.props_path)
        cluster_id = _cluster_id(self.workdir / "data")
        # --ignore-formatted keeps existing data: a restart never wipes the broker.
        format_args = ["format", "-t", cluster_id, "-c", props, "--ignore-formatted"]
        self._format(java_command(_FORMAT_JVM, "kafka.tools.StorageTool", *format_args))
        heap = [f"-Xms{min(self.heap_mb, 128)}m", f"-Xmx{self.heap_mb}m"]
        return java_command([*heap, *_BROKER_JVM], "kafka.Kafka", props)

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
        listeners = f"PLAINTEXT://{_HOST}:{self.port},CONTROLLER://{_HOST}:{self.controller_port}"
        data = str(self.workdir / "data").replace("\\", "\\\\")
        return (
            deploy_text("server.properties", SERVER_PROPERTIES)
            + "\n# Written by streamjobs.broker for this instance\n"
            + f"listeners={listeners}\n"
            + f"advertised.listeners={listeners}\n"
            + f"controller.quorum.voters=1@{_HOST}:{self.controller_port}\n"
            + f"log.dirs={data}\n"
        )


def _state_dir(port: int, cache_dir: Path | None) -> Path:
    base = cache_dir if cache_dir is not None else default_cache_dir()
    return (base / f"broker-{port}").resolve()


def _recorded_broker(state: Path) -> int | None:
    """The PID in ``state``'s pid file if it is still our broker for that directory."""
    try:
        pid = int((state / "broker.pid").read_text(encoding="ascii"))
    except (OSError, ValueError):
        return None
    return pid if _is_broker_for(pid, state / "server.properties") else None


def _controller_port(state: Path) -> int:
    """The controller port used last time if it is still free, else a new one (remembered)."""
    record = state / "controller.port"
    try:
        port = int(record.read_text(encoding="ascii"))
    except (OSError, ValueError):
        port = 0
    if not port or not _port_free(port):
        port = _free_port()
        record.write_text(f"{port}\n", encoding="ascii")
    return port


def running_pid(port: int = 9092, cache_dir: Path | None = None) -> int | None:
    """The PID of the :func:`up` broker for ``port`` if it is running, else None."""
    return _recorded_broker(_state_dir(port, cache_dir))


def up(port: int = 9092, cache_dir: Path | None = None) -> str:
    """Ensure a detached broker serves ``127.0.0.1:<port>`` and return that bootstrap address.

    Reuses the broker recorded in ``<cache_dir>/broker-<port>/broker.pid`` when that PID is still
    our ``kafka.Kafka`` for that directory and it answers; otherwise starts a new one that keeps
    the previous data. Raises :class:`ConfigError` if another process holds the port.
    """
    state = _state_dir(port, cache_dir)
    bootstrap = f"{_HOST}:{port}"
    with locked(state / "broker.lock"):
        pid = _recorded_broker(state)
        if pid is not None:
            if _await(_serving(port), lambda: _alive(pid), _UP_TIMEOUT_S / 3):
                logger.info("reusing Kafka at %s (pid %d)", bootstrap, pid)
                return bootstrap
            logger.warning("Kafka pid %d does not answer at %s; restarting it", pid, bootstrap)
            _terminate(pid, _STOP_TIMEOUT_S)
        if not _port_free(port):
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
    state = _state_dir(port, cache_dir)
    if not state.is_dir():
        return False
    with locked(state / "broker.lock"):
        pid = _recorded_broker(state)
        if pid is not None:
            _terminate(pid, _STOP_TIMEOUT_S)
        (state / "broker.pid").unlink(missing_ok=True)
    return pid is not None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m streamjobs.broker up|down|status [--port N] [--cache-dir DIR]``."""
    parser = argparse.ArgumentParser(
        prog="python -m streamjobs.broker",
        description=f"Run a local single-node Apache Kafka {KAFKA_VERSION} broker (KRaft).",
    )
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument("--port", type=int, default=9092)
    parser.add_argument("--cache-dir", type=Path, default=None, help="default ~/.cache/streamjobs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.action == "up":
            print(up(args.port, args.cache_dir))
        elif args.action == "down":
            stopped = down(args.port, args.cache_dir)
            print(f"stopped {_HOST}:{args.port}" if stopped else "not running", file=sys.stderr)
        else:
            pid = running_pid(args.port, args.cache_dir)
            if pid is None:
                print(f"not running on {_HOST}:{args.port}", file=sys.stderr)
                return 1
            print(f"{_HOST}:{args.port}")
            print(f"pid {pid}", file=sys.stderr)
    except StreamJobsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
