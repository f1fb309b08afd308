"""Running the dashboard: checks at start-up, the index follower and backlog threads, uvicorn.

Owns :class:`DashboardServer`: refuses to start on a non-loopback address without a password
(:func:`streamjobs.dashboard.auth.startup_password`; on loopback without one, the password made
for the run goes to a file beside the index readable by this user only, never to the terminal),
signs session cookies with :func:`~streamjobs.dashboard.auth.session_key` (sessions survive a
restart), catches the index up once before serving (so the first page is complete), keeps
following it and re-reading the backlog in daemon threads, serves the app with uvicorn on the
configured host and port, and stops all of it on SIGINT/SIGTERM (uvicorn's handlers). Does not
define the app or pages.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

import uvicorn
from pydantic import SecretStr

from streamjobs.dashboard.app import create_app
from streamjobs.dashboard.auth import session_key, startup_password
from streamjobs.dashboard.live import Backlog
from streamjobs.dashboard.rendering import Dashboard
from streamjobs.index.follower import Follower
from streamjobs.settings import Settings

_log = logging.getLogger(__name__)


def default_index_path(settings: Settings) -> Path:
    """Where the dashboard keeps its index when ``STREAMJOBS_INDEX_PATH`` is not set (named
    for the first queue: a queue added later only adds its dead-letter topics to follow)."""
    name = f"{settings.topic_prefix}.{settings.queue}.sqlite3"
    return Path.home() / ".cache" / "streamjobs" / "index" / name


class DashboardServer:
    """One dashboard process: index follower, backlog reader and the web server."""

    def __init__(self, settings: Settings, say: Callable[[str], None] = print) -> None:
        self.password, generated = startup_password(
            settings.dashboard_host, settings.dashboard_password
        )
        index = settings.index_path or default_index_path(settings)
        self.settings = settings = settings.model_copy(update={"index_path": index})
        self.say = say
        if generated:
            kept = _keep_password(index, self.password)
            say(f"no STREAMJOBS_DASHBOARD_PASSWORD set: this run's password is in {kept}")
        self.follower = Follower(settings)
        self.backlog = Backlog(settings)
        board = Dashboard(settings, index, self.backlog, self.password)
        config = uvicorn.Config(
            create_app(board, secret_key=session_key(index, self.password)),
            host=settings.dashboard_host,
            port=settings.dashboard_port,
            log_level="warning",
            access_log=False,
        )
        self.server = uvicorn.Server(config)

    def run(self) -> None:
        """Catch up, start the threads, serve until a signal; then stop the threads."""
        caught = self.follower.catch_up()
        self.say(f"index {self.settings.index_path}: {caught.total} records applied")
        threads = [
            threading.Thread(target=self.follower.run, name="index-follower", daemon=True),
            threading.Thread(target=self.backlog.run, name="backlog", daemon=True),
        ]
        for thread in threads:
            thread.start()
        host, port = self.settings.dashboard_host, self.settings.dashboard_port
        shown = ", ".join(name for name, _ in self.settings.served_queues)
        self.say(f"dashboard on http://{host}:{port}/ (queues {shown})")
        try:
            self.server.run()
        finally:
            self.follower.stop()
            self.backlog.stop()
            for thread in threads:
                thread.join(10.0)
            self.follower.close()


def _keep_password(index: Path, password: SecretStr) -> Path:
    """Write a generated password beside the index, readable by this user only: it is never
    printed (terminals and their logs are read by others)."""
    path = index.with_name(index.name + ".password")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(password.get_secret_value() + "\n")
    return path
