"""The HTML pages: thin routes over the same services as the API; forms carry the session's
CSRF token."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from mrimaster.errors import MRIMasterError
from mrimaster.serving import accounts, cases, masks, pacs_send, security, studies, study_upload
from mrimaster.serving.context import AppContext
from mrimaster.serving.deps import (
    COOKIE,
    Auth,
    check_csrf,
    client_address,
    get_auth,
    get_ctx,
    get_db,
    require_admin,
)
from mrimaster.serving.routes_api import (
    _case,
    audit_list,
    full_case,
    patient_follow_up,
    wake_jobs,
)
from mrimaster.serving.uploads import received
from mrimaster.storage import repository as repo
from mrimaster.storage.tables import CASE_KINDS, CASE_STATUSES

router = APIRouter(include_in_schema=True, tags=["pages"])
templates = Jinja2Templates(directory=str(Path(__file__).resolve().parent / "templates"))
LOGIN_CSRF = "mrimaster_login_csrf"
STATIC = Path(__file__).resolve().parent / "static"


def page(request: Request, name: str, auth: Auth | None, code: int = 200,
         **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, {"auth": auth, **context},
                                      status_code=code)


def _login_page(request: Request, error: str = "", status: int = 200) -> HTMLResponse:
    token = security.new_secret()
    response = page(request, "login.html", None, status, error=error, csrf=token,
                    next=request.query_params.get("next", "/"))
    response.set_cookie(LOGIN_CSRF, token, httponly=True, samesite="strict", max_age=3600)
    return response


@router.get("/login", response_class=HTMLResponse, summary="Log-in page")
def login_form(request: Request) -> HTMLResponse:
    return _login_page(request)


@router.post("/login", summary="Log in (form)")
def login(request: Request, username: str = Form(...), password: str = Form(...),
          csrf: str = Form(...), next: str = Form(default="/"),
          ctx: AppContext = Depends(get_ctx), db: Session = Depends(get_db)) -> Response:
    if not security.same(csrf, request.cookies.get(LOGIN_CSRF, "")):
        return _login_page(request, "the form expired; log in again", 403)
    try:
        login = accounts.log_in(ctx, db, username, password, client_address(request), "cookie")
    except accounts.AuthError as exc:
        status = 429 if exc.retry_after else 401
        return _login_page(request, str(exc).replace("\n  hint:", ";"), status)
    target = next if next.startswith("/") and not next.startswith("//") else "/"
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(COOKIE, login.token, httponly=True, samesite="lax",
                        secure=ctx.config.cookie_secure,
                        max_age=int(ctx.config.session_hours * 3600))
    response.delete_cookie(LOGIN_CSRF)
    return response


@router.post("/logout", summary="Log out (form)")
def logout(csrf: str = Form(default=""), auth: Auth = Depends(get_auth),
           db: Session = Depends(get_db)) -> Response:
    check_csrf(auth, csrf)
    accounts.log_out(db, auth.token, auth.user)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response


@router.get("/", response_class=HTMLResponse, summary="Worklist page")
def worklist(request: Request, q: str = "", status: str = "", kind: str = "", page_no: int = 1,
             sort: str = "", auth: Auth = Depends(get_auth), db: Session = Depends(get_db)
             ) -> HTMLResponse:
    status = status if status in CASE_STATUSES else ""
    kind = kind if kind in CASE_KINDS else ""
    sort = sort if sort in repo.CASE_SORTS else ""
    per_page = 20
    rows, total = repo.list_cases(db, repo.CaseFilter(q, status, kind, max(page_no, 1),
                                                      per_page, sort))
    pages = max((total + per_page - 1) // per_page, 1)
    audit_list(db, auth, "list-cases", f"worklist page {page_no}", rows)
    base = f"/?q={quote(q)}&status={status}&kind={kind}&sort={sort}"
    return page(request, "worklist.html", auth, 200, cases=rows, total=total, q=q,
                status=status,
                kind=kind, page_no=page_no, pages=pages, base=base, statuses=CASE_STATUSES,
                kinds=CASE_KINDS, sort=sort)


@router.get("/cases/new", response_class=HTMLResponse, summary="Upload page")
def upload_form(request: Request, auth: Auth = Depends(get_auth)) -> HTMLResponse:
    return page(request, "upload.html", auth)


@router.post("/cases/new", summary="Upload a 2D slice (form)")
def upload(request: Request, file: UploadFile = File(...), patient: str = Form(default=""),
           confirm_burned_in: bool = Form(default=False),
           csrf: str = Form(default=""), auth: Auth = Depends(get_auth),
           ctx: AppContext = Depends(get_ctx), db: Session = Depends(get_db)) -> Response:
    """A DICOM declaring burned-in annotation comes back with its preview (shown, not stored)
    and a box to confirm it."""
    check_csrf(auth, csrf)
    try:
        with received(ctx, file) as path:
            case = cases.classify_upload(ctx, db, auth.user, path, file.filename or "upload",
                                         patient, confirm_burned_in=confirm_burned_in)
    except MRIMasterError as exc:
        db.rollback()
        preview = (exc.answer().get("preview_png")
                   if isinstance(exc, cases.BurnedInRefused) else None)
        return page(request, "upload.html", auth, cases.error_status(exc), error=str(exc),
                    burned_in=isinstance(exc, cases.BurnedInRefused), preview=preview)
    return RedirectResponse(f"/cases/{case.id}", status_code=303)


@router.post("/cases/new3d", summary="Upload a 3D study (form)")
def upload_study(request: Request, flair: UploadFile | None = File(default=None),
                 t1: UploadFile | None = File(default=None),
                 t1ce: UploadFile | None = File(default=None),
                 t2: UploadFile | None = File(default=None),
                 dicom_zip: UploadFile | None = File(default=None),
                 patient: str = Form(default=""),
                 confirm_burned_in: bool = Form(default=False), csrf: str = Form(default=""),
                 auth: Auth = Depends(get_auth), ctx: AppContext = Depends(get_ctx),
                 db: Session = Depends(get_db)) -> Response:
    check_csrf(auth, csrf)
    try:
        case = study_upload.receive_study(ctx, db, auth.user, {"flair": flair, "t1": t1,
                                                               "t1ce": t1ce, "t2": t2},
                                          dicom_zip, patient, confirm_burned_in)
    except MRIMasterError as exc:
        db.rollback()
        return page(request, "upload.html", auth, cases.error_status(exc), error=str(exc),
                    burned_in_3d=cases.error_status(exc) == 409)
    wake_jobs(request)
    return RedirectResponse(f"/cases/{case.id}", status_code=303)


@router.get("/cases/{case_id}", response_class=HTMLResponse, summary="Case page")
def case_page(request: Request, case_id: int, auth: Auth = Depends(get_auth),
              ctx: AppContext = Depends(get_ctx), db: Session = Depends(get_db)
              ) -> HTMLResponse:
    case = _case(db, case_id)
    view = full_case(db, case)
    repo.audit(db, auth.user.username, "view", f"case {case_id}")
    db.commit()
    classes = ctx.models.classifier.classes if ctx.models else []
    return _case_page(request, auth, ctx, db, case_id, view, classes)


def _case_page(request: Request, auth: Auth, ctx: AppContext, db: Session, case_id: int,
               view: dict[str, Any], classes: list[str], code: int = 200, **extra: Any
               ) -> HTMLResponse:
    case = _case(db, case_id)
    series = studies.series_of(ctx, case) if case.kind == "3d" else []
    extra.setdefault("pacs", pacs_send.panel(ctx, db, case))
    extra.setdefault("masks", masks.panel(db, case, auth.user))
    return page(request, "case.html", auth, code, case=view, classes=classes,
                job=repo.job_of(db, case_id), series=series, roles=studies.MODALITY_NAMES,
                viewer=(STATIC / "vendor" / "niivue.umd.js").is_file(), **extra)


@router.get("/patients/{pseudonym}", response_class=HTMLResponse,
            summary="Patient page: follow-up of the 3D studies")
def patient_page(request: Request, pseudonym: str, auth: Auth = Depends(get_auth),
                 ctx: AppContext = Depends(get_ctx), db: Session = Depends(get_db)
                 ) -> HTMLResponse:
    # registering a pair takes tens of seconds: the page answers at once, its script asks the
    # API (which registers) for the pairs still pending
    data = patient_follow_up(ctx, db, auth, pseudonym, register=False)
    return page(request, "patient.html", auth, 200, f=data,
                viewer=(STATIC / "vendor" / "niivue.umd.js").is_file())


@router.post("/cases/{case_id}/roles", summary="Set the roles of a 3D study's series and "
             "segment it again (form)")
def change_roles(request: Request, case_id: int, role: list[str] = Form(default=[]),
                 csrf: str = Form(default=""), auth: Auth = Depends(get_auth),
                 ctx: AppContext = Depends(get_ctx), db: Session = Depends(get_db)
                 ) -> Response:
    """Each ``role`` field is ``<series file>|<role or none>``."""
    check_csrf(auth, csrf)
    case = _case(db, case_id)
    assignment: dict[str, str | None] = {}
    for value in role:
        name, _, chosen = value.rpartition("|")
        assignment[name] = None if chosen in ("", "none") else chosen
    try:
        studies.change_roles(ctx, db, auth.user, case, assignment)
    except MRIMasterError as exc:
        db.rollback()
        classes = ctx.models.classifier.classes if ctx.models else []
        return _case_page(request, auth, ctx, db, case_id, full_case(db, case), classes,
                          cases.error_status(exc), roles_error=str(exc))
    wake_jobs(request)
    return RedirectResponse(f"/cases/{case_id}", status_code=303)


@router.post("/cases/{case_id}/review", summary="Review a case (form)")
def review(request: Request, case_id: int, decision: str = Form(...),
           label: str = Form(default=""), mask: str = Form(default=""),
           comment: str = Form(default=""), csrf: str = Form(default=""),
           auth: Auth = Depends(get_auth), ctx: AppContext = Depends(get_ctx),
           db: Session = Depends(get_db)) -> Response:
    check_csrf(auth, csrf)
    case = _case(db, case_id)
    mask_ok = {"good": True, "wrong": False}.get(mask)
    try:
        cases.review_case(db, case, auth.user, label or None, decision == "confirm", mask_ok,
                          comment, ctx.models_or_fail().classifier.classes)
    except MRIMasterError as exc:
        db.rollback()
        return _case_page(request, auth, ctx, db, case_id, full_case(db, case),
                          ctx.models_or_fail().classifier.classes, 422, error=str(exc))
    return RedirectResponse(f"/cases/{case_id}", status_code=303)


@router.get("/admin/users", response_class=HTMLResponse, summary="Accounts page (admins)")
def users_page(request: Request, auth: Auth = Depends(require_admin),
               db: Session = Depends(get_db)) -> HTMLResponse:
    users = repo.list_users(db)
    repo.audit(db, auth.user.username, "list-users", "users page", f"{len(users)} accounts")
    db.commit()
    return page(request, "users.html", auth, users=users)


@router.post("/admin/users", summary="Create an account (form, admins)")
def add_user(request: Request, username: str = Form(...), password: str = Form(...),
             role: str = Form(default="radiologist"), csrf: str = Form(default=""),
             auth: Auth = Depends(require_admin), db: Session = Depends(get_db)) -> Response:
    check_csrf(auth, csrf)
    try:
        accounts.create_user(db, auth.user, username, password, role)
    except MRIMasterError as exc:
        db.rollback()
        return page(request, "users.html", auth, 422, users=repo.list_users(db),
                    error=str(exc))
    return RedirectResponse("/admin/users", status_code=303)


@router.get("/admin/audit", response_class=HTMLResponse, summary="Audit log page (admins)")
def audit_page(request: Request, auth: Auth = Depends(require_admin),
               db: Session = Depends(get_db)) -> HTMLResponse:
    events = repo.audit_events(db, 500)
    repo.audit(db, auth.user.username, "view-audit", "audit page", f"{len(events)} events")
    db.commit()
    return page(request, "audit.html", auth, events=events)
