"""What every dashboard page shares: the :class:`Dashboard` (settings, index, live figures,
password), the templates and their filters, rendering a page with the login and CSRF context,
and reading a time bound from a query.

Owns those few helpers so the page modules (:mod:`streamjobs.dashboard.pages`,
:mod:`streamjobs.dashboard.letters`) stay about their pages. Does not define routes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from streamjobs.dashboard import auth
from streamjobs.dashboard.live import Backlog
from streamjobs.errors import ConfigError
from streamjobs.index.queries import IndexReader
from streamjobs.settings import Settings, format_duration, parse_moment

PAGE = 50
TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


TEMPLATES.env.filters["when"] = when
TEMPLATES.env.filters["duration"] = format_duration


@dataclass(frozen=True, slots=True)
class Dashboard:
    """What every page needs: settings, the index file, the live backlog, the password."""

    settings: Settings
    index_path: Path
    backlog: Backlog
    password: Any  # SecretStr

    def reader(self) -> IndexReader:
        return IndexReader(self.index_path)

    @property
    def queues(self) -> tuple[str, ...]:
        """The queues shown, highest priority first."""
        return tuple(name for name, _ in self.settings.served_queues)

    def chosen(self, request: Request) -> tuple[str, ...]:
        """``?queue=`` (one of :attr:`queues`, else 404), or every queue shown."""
        wanted = request.query_params.get("queue")
        if not wanted:
            return self.queues
        if wanted not in self.queues:
            raise HTTPException(404, f"queue {wanted!r} is not shown here")
        return (wanted,)


def board_of(request: Request) -> Dashboard:
    board: Dashboard = request.app.state.board
    return board


def render(request: Request, name: str, **context: Any) -> Response:
    context.update(user=auth.user_of(request), csrf=auth.csrf_token(request), page_name=name)
    return TEMPLATES.TemplateResponse(request, f"{name}.html", context)


def since(text: str | None) -> int | None:
    """``1h`` (a duration ago) or an ISO time (no zone: UTC), as Unix ms; None when empty."""
    if not text:
        return None
    try:
        return int(parse_moment(text, naive=UTC).timestamp() * 1000)
    except ConfigError:
        raise HTTPException(400, f"not a time or a duration: {text!r}") from None
