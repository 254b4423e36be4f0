"""Request dependencies: the database session, the logged-in user (idle timeout, forced
password change), the client's address (trusted proxies only), the CSRF check."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta

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


class PasswordChangeDue(Exception):
    """The account has a one-time password: the API answers 403, pages redirect to the
    account page, until the owner sets their own."""


CHANGE_DUE_ALLOWED = frozenset({"/api/me", "/api/me/password", "/api/auth/logout", "/logout",
                                "/account", "/account/password"})
"""What an account with a one-time password may still do: change it, see who it is, log out."""


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


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _trusted(address: str, proxies: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 from a dual-stack socket
    return any(ip.version == net.version and ip in net for net in proxies)


def forwarded_client(peer: str, forwarded_for: str, proxies: Sequence[Network]) -> str:
    """The client's address: the direct ``peer``, unless it is a trusted proxy; then the
    right-most address of ``X-Forwarded-For`` that is not a trusted proxy (the left part of
    the header is whatever the client wrote, so it is never believed).

    Args:
        peer: The TCP peer's address.
        forwarded_for: The ``X-Forwarded-For`` header(s), comma-joined ("" if none).
        proxies: Trusted proxy networks (``MRIMASTER_TRUSTED_PROXIES``).
    """
    if not _trusted(peer, proxies):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, proxies):
            return hop
    return hops[0] if hops else peer


def client_address(request: Request) -> str:
    """The client's address for the log-in rate limit and the audit log (ASVS 4.0.3 V2.2.1:
    a client cannot choose it by sending ``X-Forwarded-For``)."""
    peer = request.client.host if request.client else "unknown"
    ctx: AppContext = request.app.state.ctx
    return forwarded_client(peer, ",".join(request.headers.getlist("x-forwarded-for")),
                            ctx.config.trusted_proxies)


def session_token(authorization: str, cookie: str) -> tuple[str, str]:
    """``(secret, kind)`` from a request's ``Authorization`` header (``Bearer ...``: an API
    token) or its session cookie's value; ``("", ...)`` when it has neither."""
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip(), "api"
    return cookie, "cookie"


def get_auth(request: Request, db: Session = Depends(get_db),
             ctx: AppContext = Depends(get_ctx)) -> Auth:
    """The caller's session: a bearer token (API) or the session cookie (pages). Its last use
    is recorded (at most once a minute) for the idle timeout (ASVS 4.0.3 V3.3.2).

    Raises:
        NotLoggedIn: neither is valid (missing, unknown, past its absolute or idle timeout,
            inactive account).
        PasswordChangeDue: the account has a one-time password and this route is not one of
            :data:`CHANGE_DUE_ALLOWED`.
    """
    token, kind = session_token(request.headers.get("authorization", ""),
                                request.cookies.get(COOKIE, ""))
    if not token:
        raise NotLoggedIn()
    found = repo.get_session(db, security.token_hash(token), kind,
                             idle=timedelta(minutes=ctx.config.idle_minutes))
    if found is None:
        db.commit()  # an expired session row was removed
        raise NotLoggedIn()
    row, user = found
    if repo.touch_session(db, row):
        db.commit()
    if user.must_change_password and request.url.path not in CHANGE_DUE_ALLOWED:
        raise PasswordChangeDue()
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
