"""``streamjobs consume --processes N``: the command side of the worker supervisor.

Owns turning this command's own arguments into the children's (the same ``consume`` without
``--processes``, each with its own ``--instance-id`` under static membership and its own
``--metrics-port``, counting up from the given one), installing the
supervisor's signal handlers (SIGTERM/SIGINT: a graceful stop of every child) and its exit code.
Does not supervise (:mod:`streamjobs.worker.supervisor` does) nor parse options (typer does, in
:mod:`streamjobs.cli.app`). Children inherit the environment, so ``STREAMJOBS_*`` settings reach
them unchanged.
"""

from __future__ import annotations

import logging
import signal
import sys
from datetime import timedelta
from typing import Any

from streamjobs.cli.options import build_settings
from streamjobs.worker.supervisor import (
    Supervisor,
    child_commands,
    option_value,
    without_options,
)

_OWN_OPTIONS = ("--processes", "--instance-id", "--metrics-port")
# a child gets the shutdown grace to finish its tasks, then a margin to commit and leave
_STOP_MARGIN = timedelta(seconds=15)


def supervise(processes: int, instance_id: str | None, log_level: str) -> int:
    """Run ``processes`` children until SIGTERM/SIGINT; the supervisor's exit code."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    settings = build_settings()
    args = without_options(sys.argv[1:], _OWN_OPTIONS)
    base = [sys.executable, "-m", "streamjobs.cli", *args]
    port = option_value(sys.argv[1:], "--metrics-port")
    supervisor = Supervisor(
        child_commands(base, processes, instance_id, int(port) if port else None),
        stop_timeout=settings.shutdown_grace + _STOP_MARGIN,
    )

    def on_signal(signum: int, _frame: Any) -> None:
        logging.getLogger("streamjobs").info("signal %d: stopping every worker process", signum)
        supervisor.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return supervisor.run()
