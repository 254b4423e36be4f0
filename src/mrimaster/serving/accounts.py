"""Accounts: the first admin, log-in and log-out, sessions and API tokens, password changes
and resets, deactivation, user management. Every change lands in the audit log (ASVS 4.0.3
V7.1.3 / V7.2.1)."""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from mrimaster.errors import MRIMasterError
from mrimaster.serving import security
from mrimaster.serving.context import AppContext
from mrimaster.storage import repository as repo
from mrimaster.storage.tables import ROLES, User, utcnow

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
log = logging.getLogger(__name__)


def one_time_password() -> str:
    """A random one-time password (16 URL-safe characters, 96 bits; ASVS V2.3.1)."""
    return secrets.token_urlsafe(12)


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
        password = ctx.config.admin_password or one_time_password()
        if not generated and (problem := security.password_problem(password)):
            log.warning("MRIMASTER_ADMIN_PASSWORD is weak: %s (%s)", *problem)
        # a generated password is one-time: it must be changed at the first log-in (V2.3.1)
        repo.add_user(db, ctx.config.admin_user, security.hash_password(password), "admin",
                      must_change=generated, own_password=not generated)
        repo.audit(db, "system", "create-user", ctx.config.admin_user,
                   "first admin" + (", one-time password" if generated else ""))
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
    """Check the credentials and start a session. Rate-limited (ASVS V2.2.1) per user and
    address, per address whatever the names, and per account whatever the addresses.

    Raises:
        AuthError: wrong credentials, inactive account, or too many failed attempts.
    """
    name = username.strip().lower()[:64]
    keys = (f"{name}|{address}", f"*|{address}", f"{name}|*")
    wait = max(ctx.limiter.blocked_for(db, key) for key in keys)
    if wait:
        raise AuthError("too many failed log-ins", f"try again in {wait:.0f} s",
                        retry_after=wait)
    user = repo.get_user(db, name)
    if user is None or not user.active:
        security.burn_verify(password)  # the same time whether the account exists or not
    if user is None or not user.active or not security.verify_password(user.password_hash,
                                                                         password):
        for key in keys:
            ctx.limiter.failed(db, key)
        repo.audit(db, name, "login-failed", detail=f"from {address}")
        db.commit()
        raise AuthError("wrong user name or password")
    ctx.limiter.succeeded(db, keys[0])
    if (ctx.config.new_users_change_password and user.password_changed_at is None
            and not user.must_change_password):
        user.must_change_password = True  # an admin chose this password: it is one-time
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
    # the owner replaces it at the first log-in (MRIMASTER_NEW_USERS_CHANGE_PASSWORD), where
    # the user-name rule applies too
    if problem := security.password_problem(password):
        raise MRIMasterError(*problem)
    if repo.get_user(db, name) is not None:
        raise MRIMasterError(f"the user name {name!r} is taken", "choose another")
    user = repo.add_user(db, name, security.hash_password(password), role)
    repo.audit(db, actor.username, "create-user", name, f"role {role}")
    db.commit()
    return user


def _check_new_password(user: User, password: str) -> None:
    if problem := security.password_problem(password, user.username):
        raise MRIMasterError(*problem)


def change_password(ctx: AppContext, db: Session, user: User, current: str, new: str,
                    keep_token: str) -> int:
    """The owner sets their own password (ASVS V2.1.5): the current one is checked (V2.1.6; wrong
    guesses count towards the account's log-in limit), the new one must pass the policy and
    differ; every other session ends (V3.3.3). Returns how many sessions ended.

    Raises:
        AuthError: too many wrong current passwords (429).
        MRIMasterError: wrong current password, or the new one is refused (400).
    """
    key = f"{user.username}|*"
    wait = ctx.limiter.blocked_for(db, key)
    if wait:
        raise AuthError("too many wrong passwords", f"try again in {wait:.0f} s",
                        retry_after=wait)
    if not security.verify_password(user.password_hash, current):
        ctx.limiter.failed(db, key)
        repo.audit(db, user.username, "change-password-failed", user.username,
                   "wrong current password")
        db.commit()
        raise MRIMasterError("the current password is wrong",
                             "type the password you logged in with")
    _check_new_password(user, new)
    if security.same(current, new):
        raise MRIMasterError("the new password is the current one", "choose a new password")
    user.password_hash = security.hash_password(new)
    user.must_change_password = False
    user.password_changed_at = utcnow()
    ended = repo.drop_sessions(db, user.id, keep=security.token_hash(keep_token))
    repo.audit(db, user.username, "change-password", user.username,
               f"{ended} other sessions ended")
    db.commit()
    return ended


def _target(db: Session, actor: User, username: str, what: str) -> User:
    user = repo.get_user(db, username.strip().lower())
    if user is None:
        raise MRIMasterError(f"no account {username!r}", "check the name on the accounts page")
    if user.id == actor.id:
        raise MRIMasterError(f"you cannot {what} your own account",
                             "ask another admin" if what != "reset the password of"
                             else "change your password on the My account page")
    return user


def reset_password(db: Session, actor: User, username: str) -> str:
    """An admin gives ``username`` a new one-time password (returned, to show once; the owner
    must change it at the next log-in: ASVS V2.3.1) and ends all that account's sessions.

    Raises:
        MRIMasterError: unknown account, or the admin's own.
    """
    user = _target(db, actor, username, "reset the password of")
    password = one_time_password()
    user.password_hash = security.hash_password(password)
    user.must_change_password = True
    ended = repo.drop_sessions(db, user.id)
    repo.audit(db, actor.username, "reset-password", user.username, f"{ended} sessions ended")
    db.commit()
    return password


def set_active(db: Session, actor: User, username: str, active: bool) -> User:
    """Deactivate (no log-in; every session ends) or reactivate an account (admins).

    Raises:
        MRIMasterError: unknown account, the admin's own, or the last active admin.
    """
    user = _target(db, actor, username, "deactivate" if not active else "reactivate")
    if not active and user.active and user.role == "admin" and repo.count_active_admins(db) <= 1:
        raise MRIMasterError("this is the last active admin", "make another admin first")
    ended = 0
    user.active = active
    if not active:
        ended = repo.drop_sessions(db, user.id)
    repo.audit(db, actor.username, "reactivate" if active else "deactivate", user.username,
               f"{ended} sessions ended" if not active else "")
    db.commit()
    return user


@dataclass(frozen=True)
class SessionView:
    """One of a user's sessions, without its secret (ASVS V3.3.4: see and end them)."""

    kind: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    current: bool


def my_sessions(db: Session, user: User, token: str, idle: timedelta) -> list[SessionView]:
    """The user's live sessions (past neither their absolute end nor ``idle``), newest
    first; the one of ``token`` is marked ``current``."""
    mine, now = security.token_hash(token), utcnow()
    views = [SessionView(s.kind, repo.aware(s.created_at),
                         repo.aware(s.last_seen_at or s.created_at), repo.aware(s.expires_at),
                         s.token_hash == mine) for s in repo.sessions_of(db, user.id)]
    return [v for v in views if v.expires_at > now and now - v.last_seen_at <= idle]


def log_out_everywhere(db: Session, user: User, token: str, others_only: bool) -> int:
    """End all the user's sessions and API tokens, or all but the current one; returns how
    many ended."""
    ended = repo.drop_sessions(db, user.id,
                               keep=security.token_hash(token) if others_only else None)
    repo.audit(db, user.username, "logout-all", user.username,
               f"{ended} sessions ended" + (", this one kept" if others_only else ""))
    db.commit()
    return ended
