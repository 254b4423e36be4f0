"""Database tables of the web app (SQLAlchemy 2 declarative). The schema is created and
changed only by the Alembic migrations in ``migrations/``; this module describes it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ROLES = ("radiologist", "admin")
"""Account roles; only admins manage accounts."""

CASE_KINDS = ("2d", "3d")
CASE_STATUSES = ("new", "ai-read", "referred", "reviewed", "failed")
"""``new``: stored, not read yet; ``ai-read``: the AI read it with confidence; ``referred``:
the AI refers it to a radiologist (or rejected the image); ``reviewed``: a doctor decided;
``failed``: the AI read failed (the reason is kept)."""


def utcnow() -> datetime:
    """Now, timezone-aware UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False)
    """A one-time password (generated, or set by an admin): only a password change, ``/api/me``
    and log-out are allowed until the owner sets their own (ASVS 4.0.3 V2.3.1)."""
    password_changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                                 nullable=True)
    """When the owner last set their own password; ``None``: never (an admin chose it)."""


class LoginSession(Base):
    """A browser session (cookie) or an API token; only the SHA-256 of the secret is stored."""

    __tablename__ = "login_sessions"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # "cookie" or "api"
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    """Last use (updated at most once a minute; ``None``: ``created_at``), for the idle
    timeout."""


class LoginFailure(Base):
    """A failed log-in under a rate-limit key (``user|address``, ``*|address``, ``user|*``);
    in the database so that every server process sees every failure. Rows older than the
    window are deleted."""

    __tablename__ = "login_failures"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(200), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class Case(Base):
    __tablename__ = "cases"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(4))
    pseudonym: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                 index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    files: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Role (``original``, ``cam/<layer>``, ``flair``, ``mask``, ...) -> SHA-256 in the store."""
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    """The AI read: the prediction with its trust fields, or the volumes of a segmentation."""
    ai_label: Mapped[str | None] = mapped_column(String(32), nullable=True)
    model: Mapped[str] = mapped_column(String(255), default="")
    note: Mapped[str] = mapped_column(Text, default="")


class Review(Base):
    __tablename__ = "reviews"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    label: Mapped[str | None] = mapped_column(String(32), nullable=True)
    agrees: Mapped[bool] = mapped_column(Boolean)
    mask_ok: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditEvent(Base):
    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    username: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(255), default="")
    detail: Mapped[str] = mapped_column(Text, default="")


JOB_STATES = ("queued", "running", "done", "failed")


class Job(Base):
    """A background job on a case (a 3D segmentation).

    A worker claims a queued job (``running``, ``owner`` its token for this claim, one more
    attempt) with a lease until ``lease_until`` that it renews while it runs; a job whose lease
    expired is taken over by another worker, at most ``max_attempts`` times in all, then marked
    failed. Only the owner of an unexpired lease may write the job's state or its result."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="segment")
    state: Mapped[str] = mapped_column(String(16), index=True, default="queued")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    """The claim's token (``host:pid:random``); ``None`` until claimed."""
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    """The owner's lease ends here unless renewed."""
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
