"""Passwords, session and API tokens, CSRF tokens and the log-in rate limit.

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
import threading
import time
from collections import defaultdict, deque

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_HASHER = PasswordHasher()
MIN_PASSWORD = 10


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


class LoginLimiter:
    """At most ``attempts`` failed log-ins per key (user and address) in ``window_s``; an
    address alone (key ``*|address``) may fail ``attempts * 4`` times, whatever names it tries.
    Keys whose failures have all expired are dropped, so memory stays bounded."""

    def __init__(self, attempts: int, window_s: float) -> None:
        self.attempts = attempts
        self.window_s = window_s
        self._fails: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._fails.get(key, deque())
        while q and now - q[0] > self.window_s:
            q.popleft()
        if not q:
            self._fails.pop(key, None)
        return q

    def _limit(self, key: str) -> int:
        return self.attempts * 4 if key.startswith("*|") else self.attempts

    def blocked_for(self, key: str) -> float:
        """Seconds until ``key`` may try again (0: now)."""
        now = time.monotonic()
        with self._lock:
            if len(self._fails) > 10_000:  # drop every expired key now and then
                for k in list(self._fails):
                    self._recent(k, now)
            q = self._recent(key, now)
            if len(q) < self._limit(key):
                return 0.0
            return max(self.window_s - (now - q[0]), 1.0)

    def failed(self, key: str) -> None:
        with self._lock:
            self._fails[key].append(time.monotonic())

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._fails.pop(key, None)
