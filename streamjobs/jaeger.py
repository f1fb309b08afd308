"""A local Jaeger v2 (in-memory, all on 127.0.0.1) for development and tests, built with Go.

Owns building the ``jaeger`` binary once into a cache directory outside the repository
(:func:`ensure_binary`), its configuration (OTLP in, traces kept in memory, HTTP query API out),
starting it, waiting until its query API answers, and stopping it by PID. Two ways to run one:

* :class:`LocalJaeger` is a child process owned by the caller (a test fixture), on free ports;
* :func:`up` / :func:`down` manage a detached one per query port that outlives the command that
  started it (``make jaeger-up``, ``python -m streamjobs.jaeger up``).

Why the build is done this way: Jaeger v2 lives in the module ``github.com/jaegertracing/jaeger``
(no ``/v2``), so ``go install .../cmd/jaeger@v2.x.y`` is refused; a proxy that serves only
release tags has no v2 commit to install by hash either; and ``go install`` of a v1 tag refuses
the tag's ``replace`` directive. The v1.76.0 tag carries Jaeger v2.13.0's ``cmd/jaeger``, so
``go mod download`` fetches that module and ``go build`` *inside* it, where the ``replace``
applies, builds the binary: about six minutes on two cores the first time, seconds once Go's build
cache is warm. That binary has no UI assets; its HTTP API (``/api/services``, ``/api/traces``)
is complete, and :mod:`streamjobs.traceview` draws a trace in a terminal.

Deliberately does not: import the Kafka client or OpenTelemetry; pass our environment to Jaeger
(it runs with its four port variables only; the Go build does inherit it, as Go needs ``HOME``,
``PATH`` and ``GOPROXY``); or signal a process it cannot prove it started: processes are found by
PID and checked against their command line, never by name. Linux only (``/proc``, ``flock``).

``deploy/jaeger/config.yaml`` is the readable copy of :data:`CONFIG_YAML`; from a checkout the
file is used, an installed package uses the constant, and a unit test keeps both identical.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import NoReturn

from streamjobs.errors import ConfigError, StreamJobsError

__all__ = [
    "CONFIG_YAML",
    "JAEGER_MODULE",
    "JAEGER_MODULE_VERSION",
    "JAEGER_VERSION",
    "JaegerPorts",
    "LocalJaeger",
    "binary_path",
    "default_cache_dir",
    "down",
    "ensure_binary",
    "running_pid",
    "up",
]

logger = logging.getLogger(__name__)

JAEGER_MODULE = "github.com/jaegertracing/jaeger"
#: The module tag whose ``cmd/jaeger`` is the Jaeger v2 release below (tags pair up v1/v2).
JAEGER_MODULE_VERSION = "v1.76.0"
JAEGER_VERSION = "2.13.0"

#: ``deploy/jaeger/config.yaml``: the Jaeger v2 (OpenTelemetry Collector) configuration.
CONFIG_YAML = """\
# Jaeger v2 for development and tests: OTLP in, traces kept in memory, HTTP query API out.
# Everything binds 127.0.0.1. streamjobs/jaeger.py starts the binary with this file and sets
# the STREAMJOBS_JAEGER_* variables to free ports; by hand the defaults below apply:
#   jaeger --config deploy/jaeger/config.yaml
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    resource:
      service.name: jaeger
    # no internal metrics endpoint (it would claim port 8888) and no self-tracing
    metrics:
      level: none
    traces:
      level: none
    logs:
      level: info

extensions:
  jaeger_storage:
    backends:
      memory_store:
        memory:
          max_traces: 100000
  jaeger_query:
    storage:
      traces: memory_store
    # on by default in v2: the query service would trace itself to 127.0.0.1:4317 (another
    # Jaeger's receiver, or nothing, and then every shutdown waits 10 s to flush)
    enable_tracing: false
    http:
      endpoint: "127.0.0.1:${env:STREAMJOBS_JAEGER_QUERY_HTTP_PORT:-16686}"
    grpc:
      endpoint: "127.0.0.1:${env:STREAMJOBS_JAEGER_QUERY_GRPC_PORT:-16685}"

receivers:
  otlp:
    protocols:
      grpc:
        endpoint: "127.0.0.1:${env:STREAMJOBS_JAEGER_OTLP_GRPC_PORT:-4317}"
      http:
        endpoint: "127.0.0.1:${env:STREAMJOBS_JAEGER_OTLP_HTTP_PORT:-4318}"

processors:
  # a short timeout: tests poll the query API right after exporting
  batch:
    timeout: 200ms

exporters:
  jaeger_storage_exporter:
    trace_storage: memory_store
"""

_HOST = "127.0.0.1"
_DEPLOY_CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "jaeger" / "config.yaml"
_DOWNLOAD_TIMEOUT_S = 600.0
_BUILD_TIMEOUT_S = 1800.0
_START_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 15.0
_POLL_S = 0.05
_TAIL_LINES = 30

# A detached Jaeger must outlive the command that starts it and must not stay our child (a child
# never waited for becomes a zombie, and dropping its Popen raises ResourceWarning). So a
# throwaway interpreter (given only Jaeger's port variables, which its child inherits) starts it
# in a new session, prints its PID and exits.
_DETACH = """\
import subprocess, sys
with open(sys.argv[1], "ab") as log:
    child = subprocess.Popen(sys.argv[3:], cwd=sys.argv[2], stdin=subprocess.DEVNULL,
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
print(child.pid)
"""


@dataclass(frozen=True, slots=True)
class JaegerPorts:
    """The four ports a Jaeger listens on, all on 127.0.0.1. Defaults are Jaeger's own."""

    otlp_grpc: int = 4317
    otlp_http: int = 4318
    query_http: int = 16686
    query_grpc: int = 16685

    @classmethod
    def free(cls) -> JaegerPorts:
        """Four distinct ports that are free right now (for tests and parallel instances)."""
        ports: set[int] = set()
        while len(ports) < 4:
            ports.add(_free_port())
        otlp_grpc, otlp_http, query_http, query_grpc = sorted(ports)
        return cls(otlp_grpc, otlp_http, query_http, query_grpc)

    def env(self) -> dict[str, str]:
        """The variables ``deploy/jaeger/config.yaml`` reads its ports from."""
        return {
            "STREAMJOBS_JAEGER_OTLP_GRPC_PORT": str(self.otlp_grpc),
            "STREAMJOBS_JAEGER_OTLP_HTTP_PORT": str(self.otlp_http),
            "STREAMJOBS_JAEGER_QUERY_HTTP_PORT": str(self.query_http),
            "STREAMJOBS_JAEGER_QUERY_GRPC_PORT": str(self.query_grpc),
        }

    @property
    def query_url(self) -> str:
        """Base URL of the HTTP query API (``/api/services``, ``/api/traces``)."""
        return f"http://{_HOST}:{self.query_http}"

    @property
    def otlp_http_endpoint(self) -> str:
        """Base URL for OTLP/HTTP exporters (``--otlp-endpoint``, OTEL_EXPORTER_OTLP_ENDPOINT)."""
        return f"http://{_HOST}:{self.otlp_http}"


def default_cache_dir() -> Path:
    """``~/.cache/streamjobs``; the binary goes to ``jaeger/<module version>/jaeger`` under it."""
    return Path.home() / ".cache" / "streamjobs"


def binary_path(cache_dir: Path | None = None) -> Path:
    """Where :func:`ensure_binary` puts the binary (it may not exist yet)."""
    base = cache_dir if cache_dir is not None else default_cache_dir()
    return base.resolve() / "jaeger" / JAEGER_MODULE_VERSION / "jaeger"


def ensure_binary(cache_dir: Path | None = None) -> Path:
    """Return the cached ``jaeger`` binary, building it with ``go`` the first time.

    Idempotent and safe to call concurrently (a lock file makes one caller build while the others
    wait; the binary appears under its final name only once complete). Raises
    :class:`ConfigError` if ``go`` is missing, the module cannot be downloaded or the build fails.
    """
    target = binary_path(cache_dir)
    if target.is_file():
        return target
    with _locked(target.parent / ".lock"):
        if not target.is_file():
            _build(target)
    return target


def _build(target: Path) -> None:
    go = shutil.which("go")
    if go is None:
        raise ConfigError("`go` is not on PATH; building the local Jaeger needs Go 1.24+")
    began = time.monotonic()
    source = _download_module(go)
    staging = target.with_name("jaeger.partial")
    version_var = f"{JAEGER_MODULE}/internal/version.latestVersion=v{JAEGER_VERSION}"
    command = [go, "build", "-trimpath", "-ldflags", f"-s -w -X {version_var}"]
    command += ["-o", str(staging), "./cmd/jaeger"]
    logger.info("building Jaeger %s from %s (a few minutes the first time)", JAEGER_VERSION, source)
    # static binary: no C toolchain needed, and it runs on any Linux of this architecture
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly -buildvcs=false"}
    done = _run(command, source, env, _BUILD_TIMEOUT_S)
    if done.returncode != 0 or not staging.is_file():
        raise ConfigError(
            f"building Jaeger failed (exit {done.returncode}): {' '.join(command)} in {source}\n"
            + _tail(done.stdout + done.stderr)
        )
    staging.replace(target)
    logger.info("built %s in %.0fs", target, time.monotonic() - began)


def _download_module(go: str) -> Path:
    """``go mod download`` the Jaeger module into Go's module cache; returns its directory."""
    command = [go, "mod", "download", "-json", f"{JAEGER_MODULE}@{JAEGER_MODULE_VERSION}"]
    done = _run(command, None, None, _DOWNLOAD_TIMEOUT_S)
    try:
        info = json.loads(done.stdout)
    except ValueError:
        info = {}
    directory = info.get("Dir") if isinstance(info, dict) else None
    if done.returncode != 0 or not directory or not Path(directory).is_dir():
        error = info.get("Error") if isinstance(info, dict) else None
        raise ConfigError(
            f"could not download {JAEGER_MODULE}@{JAEGER_MODULE_VERSION} from the Go module"
            f" proxy (exit {done.returncode}): {error or _tail(done.stdout + done.stderr)}"
        )
    return Path(directory)


def _run(
    command: list[str], cwd: Path | None, env: dict[str, str] | None, timeout: float
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ConfigError(f"took over {timeout:.0f}s: {' '.join(command)}") from None


class LocalJaeger:
    """One Jaeger as a child process, with its config and log under ``workdir``.

    Ports default to four free ones. Use as a context manager, or call :meth:`start` and
    :meth:`stop`. Builds the binary first if the cache has none (minutes, once).
    """

    def __init__(
        self, workdir: Path, *, ports: JaegerPorts | None = None, cache_dir: Path | None = None
    ) -> None:
        self.workdir = workdir.resolve()
        self.ports = ports if ports is not None else JaegerPorts.free()
        self.cache_dir = cache_dir
        self.startup_s: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The PID while started by :meth:`start`, else None."""
        return self._proc.pid if self._proc is not None else None

    @property
    def query_url(self) -> str:
        return self.ports.query_url

    @property
    def otlp_http_endpoint(self) -> str:
        return self.ports.otlp_http_endpoint

    @property
    def config_path(self) -> Path:
        return self.workdir / "config.yaml"

    @property
    def log_path(self) -> Path:
        return self.workdir / "jaeger.log"

    def __enter__(self) -> LocalJaeger:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout: float = _START_TIMEOUT_S) -> None:
        """Build if needed, start, and return once the query API and OTLP/HTTP answer.

        Raises :class:`StreamJobsError` with the tail of ``jaeger.log`` when Jaeger exits or does
        not answer within ``timeout`` seconds (it is stopped first).
        """
        if self._proc is not None:
            raise ConfigError(f"Jaeger at {self.query_url} is already started (pid {self.pid})")
        command = _prepare(self.workdir, ensure_binary(self.cache_dir))
        began = time.monotonic()
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(
                command,
                cwd=self.workdir,
                env=self.ports.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._proc = proc
        if not _await(_serving(self.ports), lambda: proc.poll() is None, timeout):
            code = proc.poll()
            self.stop()
            reason = f"it exited with code {code}" if code is not None else None
            _fail(self.log_path, self.query_url, reason or f"no answer in {timeout:.0f}s")
        self.startup_s = time.monotonic() - began
        logger.info(
            "Jaeger ready at %s in %.2fs (pid %d)", self.query_url, self.startup_s, proc.pid
        )

    def stop(self, timeout: float = _STOP_TIMEOUT_S) -> None:
        """SIGTERM Jaeger by PID, wait up to ``timeout`` seconds, then SIGKILL. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "Jaeger pid %d ignored SIGTERM for %.0fs; killing", proc.pid, timeout
                )
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


def _prepare(workdir: Path, binary: Path) -> list[str]:
    """Write the config into ``workdir``; returns Jaeger's command line."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "config.yaml"
    text = _DEPLOY_CONFIG.read_text(encoding="utf-8") if _DEPLOY_CONFIG.is_file() else CONFIG_YAML
    config.write_text(text, encoding="utf-8")
    log = workdir / "jaeger.log"
    if log.exists():
        log.replace(workdir / "jaeger.log.1")
    return [str(binary), "--config", str(config)]


def _fail(log: Path, query_url: str, reason: str) -> NoReturn:
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        text = "(no log written)"
    raise StreamJobsError(
        f"local Jaeger at {query_url} did not start ({reason}); from {log}:\n{_tail(text)}"
    )


def _serving(ports: JaegerPorts) -> Callable[[], bool]:
    # The query API starts after the receivers, so an answering API means OTLP is up too.
    return lambda: _accepting(ports.otlp_http) and _answers(ports.query_url + "/api/services")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _accepting(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((_HOST, port)) == 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


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


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _is_jaeger_for(pid: int, config: Path) -> bool:
    """True when ``pid`` is alive and was started as ``<binary> --config <config>``."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    args = raw.rstrip(b"\0").split(b"\0")
    return _alive(pid) and args[-2:] == [b"--config", os.fsencode(config)]


def _terminate(pid: int, timeout: float) -> None:
    """SIGTERM ``pid``, then SIGKILL if it is still alive after ``timeout`` seconds."""
    for sig, wait_s in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if _await(lambda: not _alive(pid), lambda: True, wait_s):
            return
        logger.warning("Jaeger pid %d still alive %.0fs after %s", pid, wait_s, sig.name)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _tail(text: str, lines: int = _TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


# -- a detached Jaeger for `make jaeger-up` ----------------------------------------------------


def _state_dir(query_port: int, cache_dir: Path | None) -> Path:
    base = cache_dir if cache_dir is not None else default_cache_dir()
    return (base / "jaeger" / f"run-{query_port}").resolve()


def _recorded(state: Path) -> int | None:
    """The PID in ``state``'s pid file if it is still our Jaeger for that directory."""
    try:
        pid = int((state / "jaeger.pid").read_text(encoding="ascii"))
    except (OSError, ValueError):
        return None
    return pid if _is_jaeger_for(pid, state / "config.yaml") else None


def running_pid(query_port: int = 16686, cache_dir: Path | None = None) -> int | None:
    """The PID of the :func:`up` Jaeger whose query API is on ``query_port``, if running."""
    return _recorded(_state_dir(query_port, cache_dir))


def up(ports: JaegerPorts | None = None, cache_dir: Path | None = None) -> JaegerPorts:
    """Ensure a detached Jaeger serves ``ports`` (default: Jaeger's own) and return them.

    Reuses the Jaeger recorded in ``<cache_dir>/jaeger/run-<query port>/jaeger.pid`` when that
    PID is still ours and answers; otherwise starts a new one (traces are in memory, so a restart
    starts empty). Raises :class:`ConfigError` if another process holds one of the ports.
    """
    ports = ports if ports is not None else JaegerPorts()
    state = _state_dir(ports.query_http, cache_dir)
    binary = ensure_binary(cache_dir)  # before the lock: a first build takes minutes
    with _locked(state / "jaeger.lock"):
        pid = _recorded(state)
        if pid is not None:
            if _await(_serving(ports), lambda: _alive(pid), 5.0):
                logger.info("reusing Jaeger at %s (pid %d)", ports.query_url, pid)
                return ports
            logger.warning("Jaeger pid %d does not answer; restarting it", pid)
            _terminate(pid, _STOP_TIMEOUT_S)
        busy = [p for p in sorted(ports.env().values(), key=int) if _accepting(int(p))]
        if busy:
            raise ConfigError(
                f"port(s) {busy} on {_HOST} are in use by a process streamjobs did not start;"
                " stop it or pick other ports"
            )
        _start_detached(state, binary, ports)
    return ports


def _start_detached(state: Path, binary: Path, ports: JaegerPorts) -> int:
    command = _prepare(state, binary)
    began = time.monotonic()
    python = [sys.executable, "-I", "-W", "ignore::ResourceWarning", "-c", _DETACH]
    done = subprocess.run(
        [*python, str(state / "jaeger.log"), str(state), *command],
        env=ports.env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise ConfigError(f"could not launch Jaeger: {_tail(done.stderr)}")
    pid = int(done.stdout)
    (state / "jaeger.pid").write_text(f"{pid}\n", encoding="ascii")
    if not _await(_serving(ports), lambda: _alive(pid), _START_TIMEOUT_S):
        reason = "it exited" if not _alive(pid) else f"no answer in {_START_TIMEOUT_S:.0f}s"
        _terminate(pid, _STOP_TIMEOUT_S)
        _fail(state / "jaeger.log", ports.query_url, reason)
    logger.info(
        "Jaeger ready at %s in %.2fs (pid %d, detached)",
        ports.query_url,
        time.monotonic() - began,
        pid,
    )
    return pid


def down(query_port: int = 16686, cache_dir: Path | None = None) -> bool:
    """Stop the :func:`up` Jaeger on ``query_port`` by its recorded PID. True if one was stopped.

    The PID's command line is checked first; a stale pid file is removed and nothing signalled.
    """
    state = _state_dir(query_port, cache_dir)
    if not state.is_dir():
        return False
    with _locked(state / "jaeger.lock"):
        pid = _recorded(state)
        if pid is not None:
            _terminate(pid, _STOP_TIMEOUT_S)
        (state / "jaeger.pid").unlink(missing_ok=True)
    return pid is not None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m streamjobs.jaeger build|up|down|status [--query-port N] [...]``."""
    defaults = JaegerPorts()
    parser = argparse.ArgumentParser(
        prog="python -m streamjobs.jaeger",
        description=f"Build and run a local in-memory Jaeger {JAEGER_VERSION} on 127.0.0.1.",
    )
    parser.add_argument("action", choices=("build", "up", "down", "status"))
    parser.add_argument("--query-port", type=int, default=defaults.query_http)
    parser.add_argument("--query-grpc-port", type=int, default=defaults.query_grpc)
    parser.add_argument("--otlp-http-port", type=int, default=defaults.otlp_http)
    parser.add_argument("--otlp-grpc-port", type=int, default=defaults.otlp_grpc)
    parser.add_argument("--cache-dir", type=Path, default=None, help="default ~/.cache/streamjobs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ports = JaegerPorts(
        args.otlp_grpc_port, args.otlp_http_port, args.query_port, args.query_grpc_port
    )
    try:
        return _act(args.action, ports, args.cache_dir)
    except StreamJobsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _act(action: str, ports: JaegerPorts, cache_dir: Path | None) -> int:
    if action == "build":
        print(ensure_binary(cache_dir))
    elif action == "up":
        up(ports, cache_dir)
        print(f"query API  {ports.query_url}/api/traces?service=NAME")
        print(f"OTLP/HTTP  {ports.otlp_http_endpoint}   (--otlp-endpoint)")
        print(f"OTLP/gRPC  {_HOST}:{ports.otlp_grpc}")
    elif action == "down":
        stopped = down(ports.query_http, cache_dir)
        print(f"stopped {ports.query_url}" if stopped else "not running", file=sys.stderr)
    else:
        pid = running_pid(ports.query_http, cache_dir)
        if pid is None:
            print(f"not running on {ports.query_url}", file=sys.stderr)
            return 1
        print(ports.query_url)
        print(f"pid {pid}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
