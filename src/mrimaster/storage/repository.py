"""Reading and writing the app's rows: the only module the services use to reach the database.

Every function takes an open :class:`sqlalchemy.orm.Session`; the caller commits, so one
request's changes (a case and its audit event) land together or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy import case as sql_case
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
    """Worklist filters: free-text search (pseudonym or AI label), status, kind; paging;
    ``sort``: ``""`` newest first, ``"uncertain"`` the 3D segmentation's uncertainty score
    (``result["uncertainty"]["score"]``) highest first, cases without one last (newest
    first among them)."""

    search: str = ""
    status: str = ""
    kind: str = ""
    page: int = 1
    per_page: int = 25
    sort: str = ""


CASE_SORTS = ("", "uncertain")
"""The worklist's orders (see :class:`CaseFilter`)."""


def list_cases(db: Session, f: CaseFilter) -> tuple[list[Case], int]:
    """One page of cases in ``f.sort``'s order (newest first by default), and the number of
    matching cases."""
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
    order: list[Any] = [Case.created_at.desc(), Case.id.desc()]
    if f.sort == "uncertain":
        score = sql_case((Case.kind == "3d", Case.result["uncertainty"]["score"].as_float()),
                     else_=None)
        order.insert(0, score.desc().nullslast())
    rows = db.scalars(q.order_by(*order)
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
    """Every file hash a case or a saved mask version refers to (the rest of the store is
    garbage)."""
    from mrimaster.storage.mask_tables import MaskVersion

    out: set[str] = set()
    for files in db.scalars(select(Case.files)):
        out.update(v for v in (files or {}).values() if isinstance(v, str))
    out.update(d for d in db.scalars(select(MaskVersion.digest)) if d)
    return out


def add_job(db: Session, case: Case, kind: str = "segment") -> Job:
    job = Job(case_id=case.id, kind=kind, state="queued", progress=0.0, message="queued",
              attempts=0)
    db.add(job)
    db.flush()
    return job


def supersede_jobs(db: Session, case_id: int, message: str) -> int:
    """End the case's queued and running jobs (``failed``, with ``message``), before a new one
    replaces them: a queued one is never claimed, and a running one's worker no longer owns
    a running job, so its result is refused (:func:`update_owned_job`). Returns how many; the
    caller commits."""
    done = db.execute(update(Job).where(Job.case_id == case_id,
                                        Job.state.in_(("queued", "running")))
                      .values(state="failed", owner=None, message=message, updated_at=utcnow())
                      .execution_options(synchronize_session=False))
    return int(getattr(done, "rowcount", 0) or 0)


def job_of(db: Session, case_id: int) -> Job | None:
    return db.scalar(select(Job).where(Job.case_id == case_id).order_by(Job.id.desc()))


def _expired(now: datetime) -> Any:
    """A running job whose lease ended (or that has none: left by an older version)."""
    return and_(Job.state == "running", or_(Job.lease_until.is_(None), Job.lease_until < now))


def _owned(job_id: int, owner: str, now: datetime) -> Any:
    """The job is still ``owner``'s: running, under that claim's token, its lease unexpired."""
    return and_(Job.id == job_id, Job.owner == owner, Job.state == "running",
                Job.lease_until >= now)


def claim_job(db: Session, owner: str, lease_s: float, max_attempts: int,
              now: datetime | None = None) -> Job | None:
    """Take the oldest claimable job for ``owner`` (a token unique to this claim), or ``None``:
    a queued job, or a running one whose lease expired and that has had fewer than
    ``max_attempts``. It becomes ``running``, one more attempt, leased for ``lease_s`` seconds.
    Commits.

    Two claimers never get the same job: PostgreSQL locks the row (``SELECT ... FOR UPDATE SKIP
    LOCKED``, so claimers do not queue behind each other); SQLite claims in one conditional
    ``UPDATE ... RETURNING`` (SQLite runs one writer at a time).
    """
    now = now or utcnow()
    claimable = or_(Job.state == "queued",
                    and_(_expired(now), Job.attempts < max_attempts))
    values: dict[str, Any] = dict(
        state="running", owner=owner, lease_until=now + timedelta(seconds=lease_s),
        claimed_at=now, attempts=Job.attempts + 1, updated_at=now, progress=0.0,
        message="starting")
    if db.get_bind().dialect.name == "postgresql":
        job_id = db.scalar(select(Job.id).where(claimable).order_by(Job.id).limit(1)
                           .with_for_update(skip_locked=True))
        if job_id is not None:
            db.execute(update(Job).where(Job.id == job_id).values(**values)
                       .execution_options(synchronize_session=False))
    else:
        first = select(Job.id).where(claimable).order_by(Job.id).limit(1).scalar_subquery()
        job_id = db.scalar(update(Job).where(Job.id == first, claimable).values(**values)
                           .returning(Job.id).execution_options(synchronize_session=False))
    db.commit()
    if job_id is None:
        return None
    return db.scalar(select(Job).where(Job.id == job_id)
                     .execution_options(populate_existing=True))


def renew_lease(db: Session, job_id: int, owner: str, lease_s: float,
                now: datetime | None = None) -> bool:
    """Extend ``owner``'s lease on a job it still owns; ``False``: it lost it (expired, taken
    over, or the job ended). Commits."""
    now = now or utcnow()
    done = db.execute(update(Job).where(_owned(job_id, owner, now))
                      .values(lease_until=now + timedelta(seconds=lease_s))
                      .execution_options(synchronize_session=False))
    db.commit()
    return int(getattr(done, "rowcount", 0) or 0) == 1


def update_owned_job(db: Session, job_id: int, owner: str, commit: bool = True,
                     now: datetime | None = None, **values: object) -> bool:
    """Write ``values`` to the job only while ``owner`` still owns it (owner and lease checked
    in the same ``UPDATE``); returns whether it wrote. With ``commit=False`` the job's row stays
    locked until the caller commits (write the case's result in the same transaction) or rolls
    back."""
    now = now or utcnow()
    done = db.execute(update(Job).where(_owned(job_id, owner, now))
                      .values(updated_at=now, **values)
                      .execution_options(synchronize_session=False))
    wrote = int(getattr(done, "rowcount", 0) or 0) == 1
    if commit:
        db.commit()
    return wrote


def set_job(db: Session, job_id: int, **values: object) -> None:
    """Progress of a running job (no owner check: a stale worker's progress note can only
    reach a job that is still running; its state and result go through
    :func:`update_owned_job`)."""
    db.execute(update(Job).where(Job.id == job_id, Job.state == "running")
               .values(updated_at=utcnow(), **values)
               .execution_options(synchronize_session=False))
    db.commit()


def expire_jobs(db: Session, max_attempts: int, now: datetime | None = None) -> int:
    """Mark failed the running jobs whose lease expired after ``max_attempts`` (each worker that
    took them stopped without a word), and their cases; returns how many. Commits."""
    now = now or utcnow()
    stale = and_(_expired(now), Job.attempts >= max_attempts)
    failed = 0
    message = (f"the segmentation was interrupted {max_attempts} times (its worker stopped); "
               "upload it again")
    for job_id, case_id in db.execute(select(Job.id, Job.case_id).where(stale)).all():
        done = db.execute(update(Job).where(Job.id == job_id, stale).values(
            state="failed", owner=None, message=message, updated_at=now)
            .execution_options(synchronize_session=False))
        if int(getattr(done, "rowcount", 0) or 0) == 1:
            case = db.get(Case, case_id)
            if case is not None:
                case.status, case.note = "failed", message
            failed += 1
    db.commit()
    return failed
