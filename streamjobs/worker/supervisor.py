"""Multi-process workers: one supervisor runs N ``streamjobs consume`` processes in one group.

Owns ``streamjobs consume --processes N``, prefork-style (like Celery's prefork pool, but each
child is a whole worker: its own consumer in the same group, so Kafka spreads the partitions over
them and a CPU-bound handler uses every core). The supervisor starts the children, restarts one
that exits (a crash: after a backoff that doubles per crash in a row; an exit 0, say after
someone SIGTERMed one child for a rolling restart: at once), logs a line each time, forwards
SIGTERM/SIGINT to every child for a graceful stop (each finishes and commits what it runs, then
leaves the group) and exits 0 when they all stopped cleanly. It gives up (stops the others and
exits 1) only when children keep crashing: more than ``crash_limit`` crashes within ``window``.

Deliberately does not: run tasks or talk to Kafka (the children do), share anything with the
children but their command line and environment, or decide how many processes to run (the
operator does: about one per core for CPU-bound handlers). :class:`CrashHistory` and
:func:`child_commands` are pure and unit-tested; :class:`Supervisor` runs real processes.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

_log = logging.getLogger("streamjobs.supervisor")

_POLL_S = 0.2
_KILL_WAIT_S = 10.0


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """How the supervisor restarts crashed children and when it gives up."""

    first_backoff: timedelta = timedelta(seconds=1)
    max_backoff: timedelta = timedelta(seconds=30)
    crash_limit: int = 5
    window: timedelta = timedelta(minutes=1)


@dataclass
class CrashHistory:
    """Crashes of one child slot, for its backoff, and of all slots, for giving up. Pure."""

    policy: RestartPolicy
    recent: deque[float] = field(default_factory=deque)  # crash times, all slots
    in_a_row: dict[int, int] = field(default_factory=dict)  # slot -> crashes since a clean run

    def crashed(self, slot: int, at: float) -> timedelta:
        """Record a crash of ``slot`` at ``at`` (seconds) and return the backoff before its
        restart: ``first_backoff`` doubled per crash in a row, at most ``max_backoff``."""
        self.recent.append(at)
        count = self.in_a_row.get(slot, 0)
        self.in_a_row[slot] = count + 1
        backoff: timedelta = self.policy.first_backoff * (2**count)
        return min(backoff, self.policy.max_backoff)

    def ran_well(self, slot: int) -> None:
        """``slot``'s child ran long enough (a window) or exited cleanly: its backoff resets."""
        self.in_a_row.pop(slot, None)

    def give_up(self, now: float) -> bool:
        """More than ``crash_limit`` crashes within the last ``window``."""
        horizon = now - self.policy.window.total_seconds()
        while self.recent and self.recent[0] < horizon:
            self.recent.popleft()
        return len(self.recent) > self.policy.crash_limit


def option_value(args: Sequence[str], name: str) -> str | None:
    """The value of option ``name`` in ``args`` (``--name V`` or ``--name=V``), else None."""
    for n, arg in enumerate(args):
        if arg == name and n + 1 < len(args):
            return args[n + 1]
        if arg.startswith(f"{name}="):
            return arg.partition("=")[2]
    return None


def without_options(args: Sequence[str], names: Sequence[str]) -> list[str]:
    """``args`` without the options ``names`` and their values (``--name V`` or ``--name=V``)."""
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in names:
            skip = True
        elif not any(arg.startswith(f"{name}=") for name in names):
            kept.append(arg)
    return kept


def child_commands(
    base: Sequence[str], processes: int, instance_id: str | None, metrics_port: int | None = None
) -> list[list[str]]:
    """The command line of each child: ``base`` (a ``streamjobs consume`` without
    ``--processes``, ``--instance-id`` or ``--metrics-port``), with static membership a distinct
    ``--instance-id <id>-<n>`` each (two members may not share a ``group.instance.id``), and with
    a metrics port ``<port>+<n>`` each (child 0 keeps the port a probe targets)."""
    commands = []
    for n in range(processes):
        extra = ["--instance-id", f"{instance_id}-{n}"] if instance_id else []
        if metrics_port is not None:
            extra += ["--metrics-port", str(metrics_port + n)]
        commands.append([*base, *extra])
    return commands


@dataclass
class _Child:
    slot: int
    command: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float | None = None


class Supervisor:
    """Runs one process per command and keeps them running until :meth:`stop`."""

    def __init__(
        self,
        commands: Sequence[Sequence[str]],
        stop_timeout: timedelta,
        policy: RestartPolicy | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._children = [_Child(n, list(c)) for n, c in enumerate(commands)]
        self._stop_timeout_s = stop_timeout.total_seconds()
        self._history = CrashHistory(policy or RestartPolicy())
        self._env = dict(env) if env is not None else None
        self._stopping = threading.Event()

    @property
    def pids(self) -> list[int]:
        """PIDs of the children running now."""
        return [c.proc.pid for c in self._children if c.proc is not None and c.proc.poll() is None]

    def stop(self) -> None:
        """Ask every child to stop gracefully (SIGTERM); :meth:`run` returns once they have.
        Safe from a signal handler."""
        self._stopping.set()

    def run(self) -> int:
        """Start the children and supervise them; 0 after a clean stop, 1 after giving up."""
        for child in self._children:
            self._start(child)
        gave_up = False
        while not self._stopping.wait(_POLL_S):
            now = time.monotonic()
            for child in self._children:
                self._tend(child, now)
            if self._history.give_up(now):
                _log.error("worker processes keep crashing; stopping them all")
                gave_up = True
                break
        clean = self._stop_all()
        return 1 if gave_up or not clean else 0

    def _start(self, child: _Child) -> None:
        child.proc = subprocess.Popen(child.command, env=self._env)
        child.started_at = time.monotonic()
        child.restart_at = None
        _log.info("worker process %d started (pid %d)", child.slot, child.proc.pid)

    def _tend(self, child: _Child, now: float) -> None:
        """Restart ``child`` when its backoff is over; notice when it exited."""
        if child.restart_at is not None:
            if now >= child.restart_at:
                self._start(child)
            return
        if child.proc is None or (code := child.proc.poll()) is None:
            if now - child.started_at > self._history.policy.window.total_seconds():
                self._history.ran_well(child.slot)
            return
        pid = child.proc.pid
        if code == 0:
            # stopped on purpose (a rolling restart SIGTERMs one child): back at once
            self._history.ran_well(child.slot)
            _log.info("worker process %d (pid %d) stopped; starting it again", child.slot, pid)
            self._start(child)
            return
        backoff = self._history.crashed(child.slot, now).total_seconds()
        _log.warning(
            "worker process %d (pid %d) exited with %s; restarting it in %.1fs",
            child.slot,
            pid,
            _describe(code),
            backoff,
        )
        child.restart_at = now + backoff

    def _stop_all(self) -> bool:
        """SIGTERM every child, wait for them (SIGKILL after the timeout); True if all exit 0."""
        running = [c.proc for c in self._children if c.proc is not None and c.proc.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        clean = True
        deadline = time.monotonic() + self._stop_timeout_s
        for proc in running:
            try:
                code = proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _log.warning("worker process pid %d ignored SIGTERM; killing it", proc.pid)
                proc.kill()
                code = proc.wait(_KILL_WAIT_S)
            # a child stopped before it installed its handlers dies of the SIGTERM itself:
            # it had nothing running, so that is a clean stop too
            clean = clean and code in (0, -signal.SIGTERM)
        return clean


def _describe(code: int) -> str:
    if code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"
