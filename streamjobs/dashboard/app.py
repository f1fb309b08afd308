"""The dashboard's ASGI application, assembled: routes, packaged static files, sessions, login.

Owns :func:`create_app`: the middleware order (signed session cookie outside, login required
inside), the cookie's policy (``SameSite=strict``, HTTP-only, 8 hours) and error pages.
Does not serve it (:mod:`streamjobs.dashboard.server`) or define pages
(:mod:`streamjobs.dashboard.pages`).
"""

from __future__ import annotations

import secrets
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from streamjobs.dashboard.auth import RequireLogin
from streamjobs.dashboard.pages import ROUTES
from streamjobs.dashboard.rendering import TEMPLATES, Dashboard

STATIC = Path(__file__).parent / "static"


async def _error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return TEMPLATES.TemplateResponse(
        request,
        "error.html",
        {"status": exc.status_code, "detail": exc.detail, "user": None, "page_name": "error"},
        status_code=exc.status_code,
    )


def create_app(board: Dashboard, secret_key: str | None = None) -> Starlette:
    """The app for ``board``. Without ``secret_key`` a random one signs the cookies: sessions
    then end when the server restarts."""
    app = Starlette(
        routes=[*ROUTES, Mount("/static", StaticFiles(directory=STATIC), name="static")],
        middleware=[
            Middleware(
                SessionMiddleware,
                secret_key=secret_key or secrets.token_urlsafe(32),
                session_cookie="streamjobs_session",
                max_age=8 * 3600,
                same_site="strict",
            ),
            Middleware(RequireLogin),
        ],
        exception_handlers={HTTPException: _error},
    )
    app.state.board = board
    return app
