"""Local helper processes streamjobs starts for development and tests (the Kafka broker, Jaeger).

Owns the process side they share: running one as a child of the caller (:class:`ChildProcess`)
or detached, outliving the command that started it, with its PID recorded in a pid file
(:class:`RunDir`); proving a PID is ours by its command line (:func:`started_with`);
waiting for readiness while the process lives (:func:`wait_until`); stopping by PID, SIGTERM then
SIGKILL (:func:`terminate`); and what goes with them: loopback ports, log tails, ``flock`` locks.

Deliberately does not: know what it runs or how to tell that it is ready
(:mod:`streamjobs.dev.kafka` and :mod:`streamjobs.dev.jaeger` pass the command line and the
readiness check), find or signal a process by name (only a PID it recorded and whose command
line it checked), or read the environment (a child gets the ``env`` it is given, else inherits
ours). Linux only: it reads ``/proc`` and uses ``flock``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import NoReturn, Self

from streamjobs.errors import ConfigError

logger = logging.getLogger(__name__)

#: Every helper binds, and is reached at, the IPv4 loopback address (not ``localhost``, which
#: librdkafka may resolve to ::1 first).
HOST = "127.0.0.1"

_POLL_S = 0.05
_KILL_WAIT_S = 10.0
_LAUNCH_TIMEOUT_S = 60.0
_TAIL_LINES = 40

# A detached helper must outlive the command that starts it and must not stay our child: a child
# we never wait for becomes a zombie once stopped, and dropping its Popen raises ResourceWarning.
# So a throwaway interpreter (given only the environment meant for the helper, which its child
# inherits) starts it in a new session, prints its PID and exits, and the helper is re-parented
# to init.
_DETACH = """\
import subprocess, sys
with open(sys.argv[1], "ab") as log:
    child = subprocess.Popen(sys.argv[3:], cwd=sys.argv[2], stdin=subprocess.DEVNULL,
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
print(child.pid)
"""


def free_port() -> int:
    """A port on :data:`HOST` that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def port_free(port: int) -> bool:
    """True when ``port`` can be bound on :data:`HOST` (with SO_REUSEADDR, as servers bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def accepting(port: int) -> bool:
    """True when something accepts TCP connections on ``port`` of :data:`HOST`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a stopped child nobody reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def started_with(pid: int, cmdline_tail: Sequence[str]) -> bool:
    """True when ``pid`` is alive and its command line ends with exactly ``cmdline_tail``."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    args = raw.rstrip(b"\0").split(b"\0")
    expected = [os.fsencode(arg) for arg in cmdline_tail]
    return alive(pid) and args[-len(expected) :] == expected


def wait_until(condition: Callable[[], bool], running: Callable[[], bool], timeout: float) -> bool:
    """Poll ``condition`` until it holds (True), or ``running`` fails or time runs out (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if not running():
            return False
        time.sleep(_POLL_S)
    return False


def terminate(pid: int, timeout: float, label: str) -> None:
    """SIGTERM ``pid`` (a clean shutdown), then SIGKILL if it is still alive after ``timeout``.

    Only for a PID already proven ours (:func:`started_with`); ``label`` names it in warnings.
    """
    for sig, wait_s in ((signal.SIGTERM, timeout), (signal.SIGKILL, _KILL_WAIT_S)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if wait_until(lambda: not alive(pid), lambda: True, wait_s):
            return
        logger.warning("%s (pid %d) still alive %.0fs after %s", label, pid, wait_s, sig.name)


def rotate_log(log: Path) -> None:
    """Keep the previous run's ``log`` as ``<log>.1`` so a new run starts an empty one."""
    if log.exists():
        log.replace(log.with_name(log.name + ".1"))


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def tail(text: str, lines: int = _TAIL_LINES) -> str:
    """The last ``lines`` lines of a command's or a log's output."""
    return "\n".join(text.rstrip().splitlines()[-lines:])


#: Told why a helper did not become ready, after it was stopped: ``"it exited ..."``, or None
#: when time ran out. It raises the helper's own error (with its log) and never returns.
NotReady = Callable[[str | None], NoReturn]


class ChildProcess(ABC):
    """A helper run as the caller's child (say a test fixture's), gone once the caller stops it.

    Owns the process for :class:`~streamjobs.dev.kafka.LocalBroker` and
    :class:`~streamjobs.dev.jaeger.LocalJaeger`: starting it in :attr:`workdir` with its output in
    :attr:`log_path` and waiting while it lives until it is ready (:meth:`_spawn`), its PID,
    stopping it by PID (:meth:`stop`), and the ``with`` block around :meth:`start` and
    :meth:`stop`. Each helper owns its files, its command line and its readiness check.
    """

    def __init__(self, workdir: Path, log_name: str, label: str, stop_timeout: float) -> None:
        self.workdir = workdir.resolve()  # absolute: it is also the cwd and the PID check
        self._log_name = log_name
        self._label = label
        self._stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The PID while started by :meth:`start`, else None."""
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path:
        return self.workdir / self._log_name

    @abstractmethod
    def start(self) -> None:
        """Prepare the helper's files, start it with :meth:`_spawn` and return once ready."""

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM the helper by PID, wait up to ``timeout`` seconds, then SIGKILL. Idempotent.

        ``timeout`` defaults to the helper's own. The stopped child is reaped.
        """
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        timeout = self._stop_timeout if timeout is None else timeout
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning(
                "%s (pid %d) ignored SIGTERM for %.0fs; killing", self._label, proc.pid, timeout
            )
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()

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

    def _spawn(
        self,
        command: Sequence[str],
        ready: Callable[[], bool],
        timeout: float,
        not_ready: NotReady,
        env: Mapping[str, str] | None = None,
    ) -> int:
        """Start ``command`` as our child and return its PID once ``ready`` holds.

        ``env`` is its whole environment; None inherits ours. If it exits first, or is not ready
        within ``timeout`` seconds, it is stopped and ``not_ready`` raises.
        """
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
            proc = self._proc = subprocess.Popen(
                command,
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if not wait_until(ready, lambda: proc.poll() is None, timeout):
            code = proc.poll()
            self.stop()
            not_ready(None if code is None else f"it exited with code {code}")
        return proc.pid


@dataclass(frozen=True, slots=True)
class RunDir:
    """The directory a detached helper runs in: ``<name>.pid``, ``<name>.log``, ``<name>.lock``.

    ``cmdline_tail`` is how the helper's command line ends (say ``kafka.Kafka <its config>``): the
    PID in the pid file counts as ours only while its command line still ends so, so a stale pid
    file or a reused PID is never signalled. ``label`` names the helper in messages;
    ``stop_timeout`` is how long it gets between SIGTERM and SIGKILL.
    """

    path: Path
    name: str
    cmdline_tail: tuple[str, ...]
    label: str
    stop_timeout: float

    @property
    def log(self) -> Path:
        return self.path / f"{self.name}.log"

    @property
    def pid_file(self) -> Path:
        return self.path / f"{self.name}.pid"

    def lock(self) -> AbstractContextManager[None]:
        """Serialise starting and stopping this helper across processes (``flock``)."""
        return locked(self.path / f"{self.name}.lock")

    def recorded_pid(self) -> int | None:
        """The PID in the pid file if it is still our helper (see ``cmdline_tail``), else None."""
        try:
            pid = int(self.pid_file.read_text(encoding="ascii"))
        except (OSError, ValueError):
            return None
        return pid if started_with(pid, self.cmdline_tail) else None

    def reuse(self, ready: Callable[[], bool], timeout: float) -> int | None:
        """The recorded helper's PID once it is ``ready`` within ``timeout`` seconds, else None.

        A recorded helper that does not become ready is stopped. Call under :meth:`lock`.
        """
        pid = self.recorded_pid()
        if pid is None:
            return None
        if wait_until(ready, lambda: alive(pid), timeout):
            return pid
        logger.warning("%s (pid %d) does not answer; restarting it", self.label, pid)
        terminate(pid, self.stop_timeout, self.label)
        return None

    def start(
        self,
        command: Sequence[str],
        ready: Callable[[], bool],
        timeout: float,
        not_ready: NotReady,
        env: Mapping[str, str] | None = None,
    ) -> int:
        """Start ``command`` detached in :attr:`path`, record its PID, return it once ``ready``.

        The helper is re-parented to init and outlives us; its output is appended to :attr:`log`.
        ``env`` is its whole environment; None inherits ours. If it exits first, or is not ready
        within ``timeout`` seconds, it is stopped and ``not_ready`` raises. Call under :meth:`lock`.
        """
        pid = self._launch(command, env)
        if not wait_until(ready, lambda: alive(pid), timeout):
            exited = not alive(pid)
            terminate(pid, self.stop_timeout, self.label)
            not_ready("it exited" if exited else None)
        return pid

    def _launch(self, command: Sequence[str], env: Mapping[str, str] | None) -> int:
        python = [sys.executable, "-I", "-W", "ignore::ResourceWarning", "-c", _DETACH]
        done = subprocess.run(
            [*python, str(self.log), str(self.path), *command],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_LAUNCH_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            raise ConfigError(f"could not launch {self.label}: {tail(done.stderr)}")
        pid = int(done.stdout)
        self.pid_file.write_text(f"{pid}\n", encoding="ascii")
        return pid

    def stop(self) -> bool:
        """Stop the recorded helper by PID (:func:`terminate`); True if one was stopped.

        A stale pid file is removed and nothing is signalled.
        """
        if not self.path.is_dir():
            return False
        with self.lock():
            pid = self.recorded_pid()
            if pid is not None:
                terminate(pid, self.stop_timeout, self.label)
            self.pid_file.unlink(missing_ok=True)
        return pid is not None
