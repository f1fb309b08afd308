"""Who may use the dashboard: the password, the login session, and CSRF tokens.

Owns the start-up rule (a dashboard listening beyond loopback must have a password from
settings; on loopback without one, a random password is made for the run), the password check
(constant time), the key that signs session cookies (:func:`session_key`: sessions survive a
restart and end when the password changes), :class:`RequireLogin` (every page but the login form
and the packaged CSS needs a signed session cookie: a GET is sent to the login form, anything
else is refused with 403) and the per-session CSRF token every POST form carries and every POST
handler checks.

Does not render pages or know what an action does.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from streamjobs.errors import ConfigError

OPEN_PATHS = ("/login", "/static/")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def startup_password(host: str, configured: SecretStr | None) -> tuple[SecretStr, bool]:
    """The password to require, and whether it was generated (so it must be shown once).

    ConfigError when ``host`` is not a loopback address and no password is configured: a
    dashboard can re-drive tasks, and must not be open to a network by accident.
    """
    if configured is not None and configured.get_secret_value():
        return configured, False
    if not is_loopback(host):
        raise ConfigError(
            f"the dashboard would listen on {host} without a password: set "
            "STREAMJOBS_DASHBOARD_PASSWORD, or bind to 127.0.0.1"
        )
    return SecretStr(secrets.token_urlsafe(12)), True


def session_key(index: Path, password: SecretStr) -> str:
    """The key signing this dashboard's session cookies: a random key kept beside the index
    (made once, readable by this user only) mixed with the password by HMAC.

    Not the password itself, nor anything derived from it alone: a signed cookie would then be an
    oracle to guess the password offline. The random part lets sessions survive a restart of
    the dashboard; the password part ends them all when the password changes (a password made
    for the run changes with every run)."""
    path = index.with_name(index.name + ".session-key")
    key = _read_key(path)
    if key is None:
        path.unlink(missing_ok=True)  # damaged (not 32 bytes): replaced
        key = _make_key(path)
    return hmac.new(key, password.get_secret_value().encode(), hashlib.sha256).hexdigest()


def _read_key(path: Path) -> bytes | None:
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        return None
    return key if len(key) == 32 else None


def _make_key(path: Path) -> bytes:
    """A new key, written whole under a temporary name and linked into place: of two dashboards
    starting at once, both end with the one that was linked first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(key)
    try:
        os.link(temporary, path)
    except FileExistsError:
        found = _read_key(path)
        key = found if found is not None else key
    finally:
        temporary.unlink()
    return key


def password_matches(given: str, expected: SecretStr) -> bool:
    return hmac.compare_digest(given.encode(), expected.get_secret_value().encode())


def user_of(request: Request) -> str | None:
    user = request.session.get("user")
    return user if isinstance(user, str) else None


def csrf_token(request: Request) -> str:
    """This session's CSRF token (made on first use); forms put it in a hidden field."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = request.session["csrf"] = secrets.token_urlsafe(24)
    return token


def check_csrf(request: Request, form: FormData) -> None:
    """403 unless the form's ``csrf`` field is this session's token."""
    given = form.get("csrf")
    expected = request.session.get("csrf")
    if not isinstance(given, str) or not isinstance(expected, str):
        raise HTTPException(403, "missing CSRF token: reload the page and try again")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(403, "bad CSRF token: reload the page and try again")


def log_in(request: Request, user: str) -> None:
    request.session.clear()  # a fresh session (and CSRF token) after login: no fixation
    request.session["user"] = user
    csrf_token(request)


class RequireLogin:
    """ASGI middleware (inside the session middleware): no page without a logged-in session."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        session: dict[str, Any] = scope.get("session") or {}
        if isinstance(session.get("user"), str):
            await self.app(scope, receive, send)
            return
        response: Any
        if scope["method"] in ("GET", "HEAD"):
            response = RedirectResponse("/login", status_code=303)
        else:
            response = PlainTextResponse("log in first", status_code=403)
        await response(scope, receive, send)


def _is_open(path: str) -> bool:
    return path == OPEN_PATHS[0] or path.startswith(OPEN_PATHS[1])
