"""Accounts: the first admin, log-in and log-out, sessions and API tokens, user management."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session

from mrimaster.errors import MRIMasterError
from mrimaster.serving import security
from mrimaster.serving.context import AppContext
from mrimaster.storage import repository as repo
from mrimaster.storage.tables import ROLES, User, utcnow

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")


class AuthError(MRIMasterError):
    """Wrong credentials, or too many attempts (``retry_after`` seconds)."""

    def __init__(self, message: str, hint: str | None = None, retry_after: float = 0) -> None:
        super().__init__(message, hint)
        self.retry_after = retry_after


def ensure_admin(ctx: AppContext) -> str | None:
    """Create the first admin account when there is no account; returns the one-time password
    when it had to be generated (the caller prints it once), else ``None``."""
    with ctx.sessions() as db:
        if repo.count_users(db):
            return None
        generated = ctx.config.admin_password is None
        password = ctx.config.admin_password or secrets.token_urlsafe(12)
        repo.add_user(db, ctx.config.admin_user, security.hash_password(password), "admin")
        repo.audit(db, "system", "create-user", ctx.config.admin_user, "first admin")
        db.commit()
    return password if generated else None


@dataclass(frozen=True)
class Login:
    """A started session: the secret for the cookie or bearer header, and its CSRF token."""

    token: str
    csrf: str
    user: User


def log_in(ctx: AppContext, db: Session, username: str, password: str, address: str,
           kind: str) -> Login:
    """Check the credentials (rate-limited per user and address) and start a session.

    Raises:
        AuthError: wrong credentials, inactive account, or too many failed attempts.
    """
    name = username.strip().lower()[:64]
    key = f"{name}|{address}"
    wait = max(ctx.limiter.blocked_for(key), ctx.limiter.blocked_for(f"*|{address}"))
    if wait:
        raise AuthError("too many failed log-ins", f"try again in {wait:.0f} s",
                        retry_after=wait)
    user = repo.get_user(db, name)
    if user is None or not user.active:
        security.burn_verify(password)  # the same time whether the account exists or not
    if user is None or not user.active or not security.verify_password(user.password_hash,
                                                                         password):
        ctx.limiter.failed(f"*|{address}")  # many names from one address count too
        ctx.limiter.failed(key)
        repo.audit(db, name, "login-failed", detail=f"from {address}")
        db.commit()
        raise AuthError("wrong user name or password")
    ctx.limiter.succeeded(key)
    token, csrf = security.new_secret(), security.new_secret()
    expires = utcnow() + timedelta(hours=ctx.config.session_hours)
    repo.add_session(db, security.token_hash(token), user, kind, csrf, expires)
    repo.audit(db, user.username, "login", detail=f"{kind} from {address}")
    db.commit()
    return Login(token, csrf, user)


def log_out(db: Session, token: str, user: User) -> None:
    repo.drop_session(db, security.token_hash(token))
    repo.audit(db, user.username, "logout")
    db.commit()


def create_user(db: Session, actor: User, username: str, password: str, role: str) -> User:
    """Create an account (admins only; the route checks the role).

    Raises:
        MRIMasterError: invalid name, taken name, short password or unknown role.
    """
    name = username.strip().lower()
    if not USERNAME.match(name):
        raise MRIMasterError(f"invalid user name {username!r}",
                             "2-64 characters: letters, digits, '.', '_' or '-'")
    if role not in ROLES:
        raise MRIMasterError(f"unknown role {role!r}", f"choose one of: {', '.join(ROLES)}")
    if len(password) < security.MIN_PASSWORD:
        raise MRIMasterError("the password is too short",
                             f"use at least {security.MIN_PASSWORD} characters")
    if repo.get_user(db, name) is not None:
        raise MRIMasterError(f"the user name {name!r} is taken", "choose another")
    user = repo.add_user(db, name, security.hash_password(password), role)
    repo.audit(db, actor.username, "create-user", name, f"role {role}")
    db.commit()
    return user
