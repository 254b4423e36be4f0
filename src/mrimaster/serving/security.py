"""Passwords and their policy, session and API tokens, CSRF tokens and the log-in rate limit.

Passwords are hashed with Argon2id (RFC 9106, argon2-cffi's defaults). Session cookies and
API tokens are random 256-bit secrets; the database keeps only their SHA-256, so a leaked
database does not let anyone log in. Pages carry a per-session CSRF token in every form
(the synchronizer-token pattern); bearer-token API calls need none, as browsers never send
them on their own.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.orm import Session

from mrimaster.storage import repository as repo

_HASHER = PasswordHasher()
MIN_PASSWORD = 12
"""ASVS 4.0.3 V2.1.1: passwords of at least 12 characters."""
MAX_PASSWORD = 128
"""ASVS 4.0.3 V2.1.2: at least 64 allowed; Argon2 hashes any length, 128 bounds the work."""


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(stored: str, password: str) -> bool:
    try:
        return _HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_hex(8))


def burn_verify(password: str) -> None:
    """Spend a verification's time for an unknown user, so timing does not tell who exists."""
    verify_password(_dummy_hash(), password)


def new_secret() -> str:
    """A random URL-safe token (256 bits)."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    """Constant-time string comparison."""
    return hmac.compare_digest(a.encode(), b.encode())


def _common_bases(password: str) -> set[str]:
    """The forms of ``password`` looked up in the common list: itself lower-cased, and without
    the digits and symbols people append to a common word to reach the minimum length."""
    low = password.lower()
    return {low, low.rstrip("0123456789!@#$%^&*()-_=+.,;:?~ ")}


@functools.cache
def common_passwords() -> frozenset[str]:
    """The 30,000 most common passwords of zxcvbn's ``frequency_lists.FREQUENCY_LISTS
    ["passwords"]`` (zxcvbn 4.5 on PyPI; the list of Dropbox's zxcvbn, drawn from leaked
    password dumps), loaded on first use."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(FREQUENCY_LISTS["passwords"])


def password_problem(password: str, username: str | None = None) -> tuple[str, str] | None:
    """Why ``password`` is refused, as ``(message, hint)``, or ``None`` when it is acceptable.

    ASVS 4.0.3 V2.1.1 (at least 12 characters), V2.1.2 (up to at least 64; 128 allowed),
    V2.1.7 (not a common or breached password), V2.1.9 (no composition rules). With
    ``username``, the password must not contain the user name (the first guess of anyone).

    Args:
        password: The proposed password (any characters, spaces included).
        username: The account's name, or ``None`` to skip that check.
    """
    if len(password) < MIN_PASSWORD:
        return ("the password is too short",
                f"use at least {MIN_PASSWORD} characters; a phrase of several words is easiest")
    if len(password) > MAX_PASSWORD:
        return "the password is too long", f"use at most {MAX_PASSWORD} characters"
    if any(base in common_passwords() for base in _common_bases(password) if base):
        return ("the password is one of the most common passwords",
                "choose one that is not a common word or pattern with digits appended")
    if username and len(username) >= 3 and username.lower() in password.lower():
        return "the password contains the user name", "choose one without your user name"
    return None


class LoginLimiter:
    """The log-in rate limit (ASVS 4.0.3 V2.2.1), its failures kept in the database so that
    every server process shares them.

    Keys and their limits within ``window_s``: ``user|address`` ``attempts`` failures;
    ``*|address`` (an address, whatever names it tries) ``attempts * 4``; ``user|*`` (an
    account, whatever addresses try it) ``attempts * 2``. Failures older than the window are
    deleted as new ones come.

    Args:
        attempts: Failures allowed per user and address in the window (>= 1).
        window_s: The window in seconds (> 0).
        clock: The current time, timezone-aware UTC (tests inject one).
    """

    def __init__(self, attempts: int, window_s: float,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.attempts = attempts
        self.window_s = window_s
        self.clock = clock or (lambda: datetime.now(UTC))

    def limit(self, key: str) -> int:
        if key.startswith("*|"):
            return self.attempts * 4
        if key.endswith("|*"):
            return self.attempts * 2
        return self.attempts

    def blocked_for(self, db: Session, key: str) -> float:
        """Seconds until ``key`` may try again (0: now)."""
        now = self.clock()
        count, oldest = repo.recent_failures(db, key, now - timedelta(seconds=self.window_s))
        if count < self.limit(key) or oldest is None:
            return 0.0
        return max(self.window_s - (now - oldest).total_seconds(), 1.0)

    def failed(self, db: Session, key: str) -> None:
        """Count a failure of ``key`` (and delete those out of the window; the caller
        commits)."""
        now = self.clock()
        repo.purge_failures(db, now - timedelta(seconds=self.window_s))
        repo.add_failure(db, key, now)

    def succeeded(self, db: Session, key: str) -> None:
        repo.clear_failures(db, key)
