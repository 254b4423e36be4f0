"""Request dependencies: the database session, the logged-in user, the CSRF check."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from mrimaster.serving import security
from mrimaster.serving.context import AppContext
from mrimaster.storage import repository as repo
from mrimaster.storage.tables import User

COOKIE = "mrimaster_session"


class NotLoggedIn(Exception):
    """No valid session or token: pages redirect to the log-in page, the API answers 401."""


class Forbidden(Exception):
    """Logged in, but the role does not allow this (403)."""


class CsrfFailed(Exception):
    """A cookie-authenticated change without the session's CSRF token (403)."""


def get_ctx(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


def get_db(ctx: AppContext = Depends(get_ctx)) -> Iterator[Session]:
    with ctx.sessions() as db:
        yield db


@dataclass(frozen=True)
class Auth:
    """Who is calling, and how: ``via`` is ``cookie`` or ``api``; ``token`` the secret."""

    user: User
    via: str
    token: str
    csrf: str


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def session_token(authorization: str, cookie: str) -> tuple[str, str]:
    """``(secret, kind)`` from a request's ``Authorization`` header (``Bearer ...``: an API
    token) or its session cookie's value; ``("", ...)`` when it has neither."""
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip(), "api"
    return cookie, "cookie"


def get_auth(request: Request, db: Session = Depends(get_db)) -> Auth:
    """The caller's session: a bearer token (API) or the session cookie (pages).

    Raises:
        NotLoggedIn: neither is valid (missing, unknown, expired, inactive account).
    """
    token, kind = session_token(request.headers.get("authorization", ""),
                                request.cookies.get(COOKIE, ""))
    if not token:
        raise NotLoggedIn()
    found = repo.get_session(db, security.token_hash(token), kind)
    if found is None:
        db.commit()  # an expired session row was removed
        raise NotLoggedIn()
    row, user = found
    return Auth(user, kind, token, row.csrf)


def require_admin(auth: Auth = Depends(get_auth)) -> Auth:
    if auth.user.role != "admin":
        raise Forbidden()
    return auth


def check_csrf(auth: Auth, submitted: str | None) -> None:
    """Cookie sessions must send the session's CSRF token with every change (form field
    ``csrf`` or header ``X-CSRF-Token``); bearer tokens need none."""
    if auth.via == "cookie" and not (submitted and security.same(submitted, auth.csrf)):
        raise CsrfFailed()
