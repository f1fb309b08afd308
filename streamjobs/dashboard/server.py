"""Running the dashboard: checks at start-up, the index follower and backlog threads, uvicorn.

Owns :class:`DashboardServer`: refuses to start on a non-loopback address without a password
(:func:`streamjobs.dashboard.auth.startup_password`), catches the index up once before serving
(so the first page is complete), keeps following it and re-reading the backlog in daemon
threads, serves the app with uvicorn on the configured host and port, and stops all of it on
SIGINT/SIGTERM (uvicorn's handlers). Does not define the app or pages.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import uvicorn

from streamjobs.dashboard.app import create_app
from streamjobs.dashboard.auth import startup_password
from streamjobs.dashboard.live import Backlog
from streamjobs.dashboard.pages import Dashboard
from streamjobs.index.follower import Follower
from streamjobs.settings import Settings

_log = logging.getLogger(__name__)


def default_index_path(settings: Settings) -> Path:
    """Where the dashboard keeps its index when ``STREAMJOBS_INDEX_PATH`` is not set."""
    name = f"{settings.topic_prefix}.{settings.queue}.sqlite3"
    return Path.home() / ".cache" / "streamjobs" / "index" / name


class DashboardServer:
    """One dashboard process: index follower, backlog reader and the web server."""

    def __init__(self, settings: Settings, say: Callable[[str], None] = print) -> None:
        self.password, generated = startup_password(
            settings.dashboard_host, settings.dashboard_password
        )
        if settings.index_path is None:
            settings = settings.model_copy(update={"index_path": default_index_path(settings)})
        self.settings = settings
        self.say = say
        if generated:
            say(f"no STREAMJOBS_DASHBOARD_PASSWORD set: this run's password is {_shown(self)}")
        self.follower = Follower(settings)
        self.backlog = Backlog(settings)
        assert settings.index_path is not None
        board = Dashboard(settings, Path(settings.index_path), self.backlog, self.password)
        config = uvicorn.Config(
            create_app(board),
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
        self.say(f"dashboard on http://{host}:{port}/ (queue {self.settings.queue})")
        try:
            self.server.run()
        finally:
            self.follower.stop()
            self.backlog.stop()
            for thread in threads:
                thread.join(10.0)
            self.follower.close()


def _shown(server: DashboardServer) -> str:
    # shown once, on the operator's own terminal: it exists only for this run
    return server.password.get_secret_value()
