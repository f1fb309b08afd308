"""Reading the execution log written by ``tests.fault.handlers.Logged``: what ran, how often, in
which order, and whether two executions of one key ever overlapped. Pure: no Kafka.

Used by the handover fault tests and by ``bench/handover.py``. Each line is
``S|E key seq pid monotonic_ns``; ``time.monotonic_ns`` is one system-wide clock on Linux, so
the times of different worker processes compare.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Execution:
    key: str
    seq: int
    pid: int
    start_ns: int
    end_ns: int | None = None  # None: its process died while it ran


@dataclass
class Figures:
    """What a run did, per task ``(key, seq)``."""

    executions: list[Execution] = field(default_factory=list)

    @property
    def runs(self) -> dict[tuple[str, int], int]:
        counts: dict[tuple[str, int], int] = defaultdict(int)
        for execution in self.executions:
            counts[(execution.key, execution.seq)] += 1
        return dict(counts)

    def lost(self, expected: set[tuple[str, int]]) -> set[tuple[str, int]]:
        """Tasks that never finished an execution."""
        finished = {(e.key, e.seq) for e in self.executions if e.end_ns is not None}
        return expected - finished

    @property
    def reruns(self) -> int:
        """Executions beyond the first of each task."""
        return sum(n - 1 for n in self.runs.values())

    def unexplained_reruns(self, kills: dict[int, int], window_ns: int) -> list[str]:
        """Re-executions not explained by a SIGKILL: each must follow an execution by a killed
        process that was cut short, or that finished at most ``window_ns`` before the kill
        (``kills``: pid -> kill time), while its outcome was being acknowledged and committed."""
        by_task: dict[tuple[str, int], list[Execution]] = defaultdict(list)
        for e in self.executions:
            by_task[(e.key, e.seq)].append(e)
        found = []
        for (key, seq), runs in by_task.items():
            runs.sort(key=lambda e: e.start_ns)
            for before in runs[:-1]:
                killed_at = kills.get(before.pid)
                if killed_at is None:
                    found.append(f"{key}#{seq}: ran again after pid {before.pid}, not killed")
                elif before.end_ns is not None and killed_at - before.end_ns > window_ns:
                    lag_ms = (killed_at - before.end_ns) / 1e6
                    found.append(f"{key}#{seq}: finished {lag_ms:.0f} ms before its kill")
        return found

    def finish_to_kill_ms(self, kills: dict[int, int]) -> float:
        """The longest time between a task's finish and the kill of its process, among the
        executions that were followed by another: how far behind the commits were at a kill."""
        by_task: dict[tuple[str, int], list[Execution]] = defaultdict(list)
        for e in self.executions:
            by_task[(e.key, e.seq)].append(e)
        lags = [
            (kills[e.pid] - e.end_ns) / 1e6
            for runs in by_task.values()
            for e in sorted(runs, key=lambda e: e.start_ns)[:-1]
            if e.pid in kills and e.end_ns is not None
        ]
        return max(lags, default=0.0)

    def order_violations(self) -> list[str]:
        """Starts of a task before any execution of the key's previous task had finished."""
        first_end: dict[tuple[str, int], int] = {}
        for e in self.executions:
            if e.end_ns is not None:
                first_end[(e.key, e.seq)] = min(first_end.get((e.key, e.seq), e.end_ns), e.end_ns)
        found = []
        for e in self.executions:
            if e.seq == 0:
                continue
            before = first_end.get((e.key, e.seq - 1))
            if before is None or before > e.start_ns:
                found.append(f"{e.key}#{e.seq} started before {e.key}#{e.seq - 1} had finished")
        return found

    def overlaps(self) -> list[str]:
        """Pairs of finished executions of one key that ran at the same time."""
        by_key: dict[str, list[Execution]] = defaultdict(list)
        for e in self.executions:
            if e.end_ns is not None:
                by_key[e.key].append(e)
        found = []
        for key, runs in by_key.items():
            runs.sort(key=lambda e: e.start_ns)
            for earlier, later in itertools.pairwise(runs):
                assert earlier.end_ns is not None
                if later.start_ns < earlier.end_ns:
                    found.append(
                        f"{key}: #{earlier.seq} (pid {earlier.pid}) and #{later.seq} "
                        f"(pid {later.pid}) overlapped"
                    )
        return found


def read_executions(log: Path) -> Figures:
    """Pair each start line with the end line of the same task and process."""
    figures = Figures()
    open_runs: dict[tuple[str, int, int], Execution] = {}
    if not log.exists():
        return figures
    for line in log.read_text().splitlines():
        parts = line.split()
        if len(parts) != 5:
            continue  # a line cut short by a SIGKILL
        kind, key, seq, pid, at = parts[0], parts[1], int(parts[2]), int(parts[3]), int(parts[4])
        if kind == "S":
            execution = Execution(key, seq, pid, at)
            open_runs[(key, seq, pid)] = execution
            figures.executions.append(execution)
        elif kind == "E" and (running := open_runs.pop((key, seq, pid), None)) is not None:
            running.end_ns = at
    return figures
