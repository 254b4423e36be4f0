"""Reading and writing the app's rows: the only module the services use to reach the database.

Every function takes an open :class:`sqlalchemy.orm.Session`; the caller commits, so one
request's changes (a case and its audit event) land together or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from mrimaster.storage.tables import (
    AuditEvent,
    Case,
    Job,
    LoginFailure,
    LoginSession,
    Review,
    User,
    utcnow,
)


def get_user(db: Session, username: str) -> User | None:
    return db.scalar(select(User).where(User.username == username))


def user_by_id(db: Session, user_id: int) -> User | None:
    return db.get(User, user_id)


def list_users(db: Session) -> list[User]:
    return list(db.scalars(select(User).order_by(User.username)))


def add_user(db: Session, username: str, password_hash: str, role: str,
             must_change: bool = False, own_password: bool = False) -> User:
    """A new active account; ``must_change``: its password is one-time; ``own_password``: the
    owner chose it (``password_changed_at`` is set)."""
    user = User(username=username, password_hash=password_hash, role=role, active=True,
                must_change_password=must_change,
                password_changed_at=utcnow() if own_password else None)
    db.add(user)
    db.flush()
    return user


def count_users(db: Session) -> int:
    return int(db.scalar(select(func.count()).select_from(User)) or 0)


def count_active_admins(db: Session) -> int:
    return int(db.scalar(select(func.count()).select_from(User).where(
        User.role == "admin", User.active.is_(True))) or 0)


def aware(at: datetime) -> datetime:
    """``at`` as timezone-aware UTC (SQLite gives naive datetimes back)."""
    return at if at.tzinfo else at.replace(tzinfo=utcnow().tzinfo)


def add_session(db: Session, token_hash: str, user: User, kind: str, csrf: str,
                expires_at: datetime) -> None:
    now = utcnow()
    db.add(LoginSession(token_hash=token_hash, user_id=user.id, kind=kind, csrf=csrf,
                        created_at=now, last_seen_at=now, expires_at=expires_at))


def get_session(db: Session, token_hash: str, kind: str, idle: timedelta | None = None,
                now: datetime | None = None) -> tuple[LoginSession, User] | None:
    """The live session of ``token_hash`` and its (active) user, or ``None``. A session past
    its absolute end, or unused for longer than ``idle`` (``None``: no idle limit), is
    deleted (the caller commits)."""
    row = db.get(LoginSession, token_hash)
    if row is None or row.kind != kind:
        return None
    now = now or utcnow()
    seen = aware(row.last_seen_at or row.created_at)
    if aware(row.expires_at) <= now or (idle is not None and now - seen > idle):
        db.delete(row)
        return None
    user = db.get(User, row.user_id)
    if user is None or not user.active:
        return None
    return row, user


def touch_session(db: Session, row: LoginSession, now: datetime | None = None,
                  every: timedelta = timedelta(minutes=1)) -> bool:
    """Record the session's use, at most once per ``every`` (spares the database a write per
    request); returns whether it wrote (the caller commits)."""
    now = now or utcnow()
    if row.last_seen_at is None or now - aware(row.last_seen_at) >= every:
        row.last_seen_at = now
        return True
    return False


def sessions_of(db: Session, user_id: int) -> list[LoginSession]:
    """A user's sessions and API tokens, newest first (expired ones included until used)."""
    return list(db.scalars(select(LoginSession).where(LoginSession.user_id == user_id)
                           .order_by(LoginSession.created_at.desc())))


def drop_session(db: Session, token_hash: str) -> None:
    db.execute(delete(LoginSession).where(LoginSession.token_hash == token_hash))


def drop_sessions(db: Session, user_id: int, keep: str | None = None) -> int:
    """End every session of a user but the one whose hash is ``keep``; returns how many."""
    q = delete(LoginSession).where(LoginSession.user_id == user_id)
    if keep is not None:
        q = q.where(LoginSession.token_hash != keep)
    return int(getattr(db.execute(q), "rowcount", 0) or 0)


def add_failure(db: Session, key: str, at: datetime) -> None:
    db.add(LoginFailure(key=key[:200], at=at))


def recent_failures(db: Session, key: str, since: datetime) -> tuple[int, datetime | None]:
    """How many failures ``key`` has had after ``since``, and the oldest of them."""
    count, oldest = db.execute(select(func.count(), func.min(LoginFailure.at)).where(
        LoginFailure.key == key[:200], LoginFailure.at > since)).one()
    return int(count or 0), aware(oldest) if oldest is not None else None


def clear_failures(db: Session, key: str) -> None:
    db.execute(delete(LoginFailure).where(LoginFailure.key == key[:200]))


def purge_failures(db: Session, before: datetime) -> None:
    """Delete the failures older than ``before`` (out of every window)."""
    db.execute(delete(LoginFailure).where(LoginFailure.at <= before))


def audit(db: Session, username: str, action: str, target: str = "", detail: str = "") -> None:
    """Record who did what to what (the audit log)."""
    db.add(AuditEvent(username=username, action=action, target=target, detail=detail[:2000]))


def audit_events(db: Session, limit: int = 200) -> list[AuditEvent]:
    return list(db.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)))


def add_case(db: Session, kind: str, pseudonym: str, user: User, files: dict[str, Any],
             result: dict[str, Any] | None, status: str, ai_label: str | None, model: str,
             note: str = "") -> Case:
    case = Case(kind=kind, pseudonym=pseudonym, status=status, created_by=user.id, files=files,
                result=result, ai_label=ai_label, model=model, note=note)
    db.add(case)
    db.flush()
    return case


def get_case(db: Session, case_id: int) -> Case | None:
    return db.get(Case, case_id)


@dataclass(frozen=True)
class CaseFilter:
    """Worklist filters: free-text search (pseudonym or AI label), status, kind; paging."""

    search: str = ""
    status: str = ""
    kind: str = ""
    page: int = 1
    per_page: int = 25


def list_cases(db: Session, f: CaseFilter) -> tuple[list[Case], int]:
    """One page of cases, newest first, and the number of matching cases."""
    q = select(Case)
    if f.search:
        like = f"%{f.search.lower()}%"
        q = q.where(or_(func.lower(Case.pseudonym).like(like),
                        func.lower(func.coalesce(Case.ai_label, "")).like(like)))
    if f.status:
        q = q.where(Case.status == f.status)
    if f.kind:
        q = q.where(Case.kind == f.kind)
    total = int(db.scalar(select(func.count()).select_from(q.subquery())) or 0)
    rows = db.scalars(q.order_by(Case.created_at.desc(), Case.id.desc())
                      .offset((max(f.page, 1) - 1) * f.per_page).limit(f.per_page))
    return list(rows), total


def add_review(db: Session, case: Case, reviewer: User, label: str | None, agrees: bool,
               mask_ok: bool | None, comment: str) -> Review:
    review = Review(case_id=case.id, reviewer_id=reviewer.id, label=label, agrees=agrees,
                    mask_ok=mask_ok, comment=comment)
    db.add(review)
    case.status = "reviewed"
    case.updated_at = utcnow()
    db.flush()
    return review


def reviews_of(db: Session, case_id: int) -> list[Review]:
    return list(db.scalars(select(Review).where(Review.case_id == case_id)
                           .order_by(Review.id)))


def latest_reviews(db: Session) -> list[tuple[Case, Review]]:
    """Each reviewed case with its latest review."""
    latest = (select(Review.case_id, func.max(Review.id).label("rid"))
              .group_by(Review.case_id).subquery())
    q = (select(Case, Review).join(latest, latest.c.case_id == Case.id)
         .join(Review, Review.id == latest.c.rid).order_by(Case.id))
    return [(c, r) for c, r in db.execute(q).all()]


def referenced_digests(db: Session) -> set[str]:
    """Every file hash a case refers to (the rest of the store is garbage)."""
    out: set[str] = set()
    for files in db.scalars(select(Case.files)):
        out.update(v for v in (files or {}).values() if isinstance(v, str))
    return out


def add_job(db: Session, case: Case, kind: str = "segment") -> Job:
    job = Job(case_id=case.id, kind=kind, state="queued", progress=0.0, message="queued",
              attempts=0)
    db.add(job)
    db.flush()
    return job


def job_of(db: Session, case_id: int) -> Job | None:
    return db.scalar(select(Job).where(Job.case_id == case_id).order_by(Job.id.desc()))


def claim_job(db: Session) -> Job | None:
    """Take the oldest queued job (state ``running``, one more attempt), or ``None``. The
    conditional update makes two workers never take the same job."""
    for job in db.scalars(select(Job).where(Job.state == "queued").order_by(Job.id).limit(5)):
        taken = db.execute(update(Job).where(Job.id == job.id, Job.state == "queued").values(
            state="running", attempts=Job.attempts + 1, updated_at=utcnow(),
            message="starting"))
        db.commit()
        if getattr(taken, "rowcount", 0) == 1:
            db.refresh(job)
            return job
    return None


def set_job(db: Session, job_id: int, **values: object) -> None:
    db.execute(update(Job).where(Job.id == job_id).values(updated_at=utcnow(), **values))
    db.commit()


def fail_stale_jobs(db: Session, older_than_s: float) -> int:
    """Mark failed the jobs ``running`` without news for ``older_than_s`` (a worker that died
    without a word); returns how many."""
    from datetime import timedelta

    cutoff = utcnow() - timedelta(seconds=older_than_s)
    stale = 0
    for job in db.scalars(select(Job).where(Job.state == "running")):
        updated = job.updated_at if job.updated_at.tzinfo else job.updated_at.replace(
            tzinfo=cutoff.tzinfo)
        if updated < cutoff:
            job.state, job.message = "failed", "no progress for too long; upload it again"
            case = db.get(Case, job.case_id)
            if case is not None:
                case.status, case.note = "failed", job.message
            stale += 1
    db.commit()
    return stale


def recover_jobs(db: Session, max_attempts: int = 2) -> tuple[int, int]:
    """After a restart: jobs left ``running`` are queued again, or marked failed once they
    have had ``max_attempts``. Returns ``(requeued, failed)``."""
    requeued = failed = 0
    for job in db.scalars(select(Job).where(Job.state == "running")):
        if job.attempts >= max_attempts:
            job.state, job.message = "failed", "interrupted by a server restart too often"
            case = db.get(Case, job.case_id)
            if case is not None:
                case.status, case.note = "failed", job.message
            failed += 1
        else:
            job.state, job.message, job.progress = "queued", "resumed after a restart", 0.0
            requeued += 1
        job.updated_at = utcnow()
    db.commit()
    return requeued, failed
