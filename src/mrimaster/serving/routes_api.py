"""The JSON API (``/api``): thin routes over the services; bearer tokens or the session
cookie (with its CSRF header for changes)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends, File, Form, Header, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, StrictBool
from sqlalchemy.orm import Session

from mrimaster.serving import (
    accounts,
    cases,
    exports,
    followup,
    masks,
    report,
    studies,
    study_upload,
)
from mrimaster.serving.context import AppContext
from mrimaster.serving.deps import (
    Auth,
    check_csrf,
    client_address,
    get_auth,
    get_ctx,
    get_db,
    require_admin,
)
from mrimaster.serving.uploads import received
from mrimaster.serving.views import case_view, review_view, user_view
from mrimaster.storage import repository as repo
from mrimaster.storage.tables import CASE_KINDS, CASE_STATUSES, Case, utcnow

router = APIRouter(prefix="/api", tags=["api"])


class Credentials(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=256)


class NewUser(Credentials):
    role: str = "radiologist"


class RolesIn(BaseModel):
    roles: dict[str, str | None] = Field(description="{series file (from series.json): "
                                         "flair, t1, t1ce, t2 or null}")


class ReviewIn(BaseModel):
    agrees: StrictBool = Field(description="true: the doctor confirms the AI's read")
    label: str | None = Field(default=None, description="2D: the right class (a correction); "
                              "with agrees=true it must be the AI's class")
    mask_ok: StrictBool | None = Field(default=None, description="3D only: the mask is good")
    comment: str = Field(default="", max_length=4000)


@router.post("/auth/token", summary="Log in: a bearer token for the API")
def token(body: Credentials, request: Request, ctx: AppContext = Depends(get_ctx),
          db: Session = Depends(get_db)) -> dict[str, Any]:
    login = accounts.log_in(ctx, db, body.username, body.password, client_address(request),
                            "api")
    return {"token": login.token, "token_type": "bearer", "user": user_view(login.user),
            "expires_at": (utcnow() + timedelta(hours=ctx.config.session_hours)).isoformat()}


@router.post("/auth/logout", summary="End this token's or cookie's session")
def logout(auth: Auth = Depends(get_auth), db: Session = Depends(get_db),
           x_csrf_token: str | None = Header(default=None)) -> dict[str, str]:
    check_csrf(auth, x_csrf_token)
    accounts.log_out(db, auth.token, auth.user)
    return {"status": "logged out"}


@router.get("/me")
def me(auth: Auth = Depends(get_auth)) -> dict[str, Any]:
    return user_view(auth.user)


def _case(db: Session, case_id: int) -> Case:
    """The case ``case_id`` (any account may read any case: the access model of
    docs/security.md). An id out of the database's range is "not found", like any other."""
    case = repo.get_case(db, case_id) if 1 <= case_id <= cases.MAX_ID else None
    if case is None:
        raise cases.UploadError(f"there is no case {case_id}", "check the worklist", 404)
    return case


def full_case(db: Session, case: Case) -> dict[str, Any]:
    reviews = []
    for r in repo.reviews_of(db, case.id):
        reviewer = repo.user_by_id(db, r.reviewer_id)
        reviews.append(review_view(r, reviewer.username if reviewer else "?"))
    return case_view(case, reviews)


@router.get("/cases", summary="The worklist: filters, search and paging")
def list_cases(q: str = "", status: str = "", kind: str = "", page: int = 1,
               per_page: int = 25, auth: Auth = Depends(get_auth),
               db: Session = Depends(get_db)) -> dict[str, Any]:
    if status and status not in CASE_STATUSES or kind and kind not in CASE_KINDS:
        raise cases.UploadError("unknown status or kind",
                                f"status: {', '.join(CASE_STATUSES)}; kind: "
                                f"{', '.join(CASE_KINDS)}", 422)
    page, per_page = max(page, 1), min(max(per_page, 1), 200)
    rows, total = repo.list_cases(db, repo.CaseFilter(q, status, kind, page, per_page))
    audit_list(db, auth, "list-cases", f"worklist API page {page}", rows)
    return {"total": total, "page": page, "per_page": per_page,
            "cases": [case_view(c) for c in rows]}


def audit_list(db: Session, auth: Auth, action: str, what: str, rows: list[Case]) -> None:
    """Audit a list view: who saw which cases (ids only; a search text is not kept, it may
    be a name typed by mistake)."""
    ids = ",".join(str(c.id) for c in rows)
    repo.audit(db, auth.user.username, action, what, f"cases {ids}" if ids else "no cases")
    db.commit()


@router.post("/cases/2d", summary="Upload a 2D slice (JPEG, PNG or DICOM): AI read + Grad-CAM",
             responses={409: {"description": "burned-in annotation: error, hint and "
                                             "preview_png (base64); upload again with "
                                             "confirm_burned_in=true after looking"}})
def upload_2d(file: UploadFile = File(...), patient: str = Form(default=""),
              confirm_burned_in: bool = Form(default=False),
              gradcam: bool = True, auth: Auth = Depends(get_auth),
              ctx: AppContext = Depends(get_ctx), db: Session = Depends(get_db),
              x_csrf_token: str | None = Header(default=None)) -> Any:
    """``gradcam=false`` skips the heatmaps (a script that needs only the read). A DICOM that
    declares burned-in annotation is answered 409 with a preview and stored only when sent
    again with ``confirm_burned_in=true``."""
    check_csrf(auth, x_csrf_token)
    try:
        with received(ctx, file) as path:
            case = cases.classify_upload(ctx, db, auth.user, path, file.filename or "upload",
                                         patient, gradcam, confirm_burned_in)
    except cases.BurnedInRefused as exc:
        db.rollback()
        return JSONResponse(exc.answer(), status_code=exc.status)
    return full_case(db, case)


def wake_jobs(request: Request) -> None:
    runner = getattr(request.app.state, "runner", None)
    if runner is not None:
        runner.wake()


@router.post("/cases/3d", summary="Upload a 3D study (NIfTI per modality, or a zip of DICOM "
             "series); its segmentation runs as a background job")
def upload_3d(request: Request, flair: UploadFile | None = File(default=None),
              t1: UploadFile | None = File(default=None),
              t1ce: UploadFile | None = File(default=None),
              t2: UploadFile | None = File(default=None),
              dicom_zip: UploadFile | None = File(default=None),
              patient: str = Form(default=""),
              confirm_burned_in: bool = Form(default=False), auth: Auth = Depends(get_auth),
              ctx: AppContext = Depends(get_ctx), db: Session = Depends(get_db),
              x_csrf_token: str | None = Header(default=None)) -> dict[str, Any]:
    """A zip whose series declare burned-in annotation is refused (409, naming the series)
    unless sent with ``confirm_burned_in=true``."""
    check_csrf(auth, x_csrf_token)
    case = study_upload.receive_study(ctx, db, auth.user, {"flair": flair, "t1": t1,
                                                           "t1ce": t1ce, "t2": t2},
                                      dicom_zip, patient, confirm_burned_in)
    wake_jobs(request)
    return full_case(db, case)


@router.get("/cases/{case_id}/job", summary="The state and progress of a case's job")
def case_job(case_id: int, auth: Auth = Depends(get_auth),
             db: Session = Depends(get_db)) -> dict[str, Any]:
    job = repo.job_of(db, _case(db, case_id).id)
    if job is None:
        raise cases.UploadError(f"case {case_id} has no job", "2D cases are read at upload",
                                404)
    return {"state": job.state, "progress": job.progress, "message": job.message,
            "attempts": job.attempts, "updated_at": job.updated_at.isoformat()}


@router.get("/cases/{case_id}/series", summary="A 3D study's series: roles (now and as "
            "detected), why, and the reason of those refused")
def case_series(case_id: int, auth: Auth = Depends(get_auth),
                ctx: AppContext = Depends(get_ctx), db: Session = Depends(get_db)
                ) -> list[dict[str, Any]]:
    return studies.series_of(ctx, _case(db, case_id))


@router.post("/cases/{case_id}/roles", summary="Set the roles of a 3D study's series and "
             "segment it again (a new job)")
def change_roles(case_id: int, body: RolesIn, request: Request,
                 auth: Auth = Depends(get_auth), ctx: AppContext = Depends(get_ctx),
                 db: Session = Depends(get_db),
                 x_csrf_token: str | None = Header(default=None)) -> dict[str, Any]:
    check_csrf(auth, x_csrf_token)
    case = _case(db, case_id)
    studies.change_roles(ctx, db, auth.user, case, body.roles)
    wake_jobs(request)
    return full_case(db, case)


@router.get("/cases/{case_id}")
def get_case(case_id: int, auth: Auth = Depends(get_auth),
             db: Session = Depends(get_db)) -> dict[str, Any]:
    case = _case(db, case_id)
    repo.audit(db, auth.user.username, "view", f"case {case_id}")
    db.commit()
    return full_case(db, case)


def patient_follow_up(ctx: AppContext, db: Session, auth: Auth, pseudonym: str,
                      register: bool = True) -> dict[str, Any]:
    """A patient's follow-up (:func:`mrimaster.serving.followup.follow_up`), audited like a
    case view (which cases were seen), the registrations it made cached (``register=False``:
    none made, pairs not registered yet marked pending)."""
    if not 1 <= len(pseudonym) <= 64:
        raise cases.UploadError(f"there is no 3D study of patient {pseudonym[:64]}",
                                "open the patient from the worklist", 404)
    data = followup.follow_up(ctx, db, pseudonym, register)
    ids = ",".join(str(s["case"]) for s in data["studies"])
    repo.audit(db, auth.user.username, "view-patient", f"patient {pseudonym}", f"cases {ids}")
    db.commit()
    return data


@router.get("/patients/{pseudonym}/followup", summary="A patient's 3D studies in time order: "
            "volumes, their change, the later studies registered onto the earlier ones")
def follow_up(pseudonym: str, auth: Auth = Depends(get_auth),
              ctx: AppContext = Depends(get_ctx), db: Session = Depends(get_db)
              ) -> dict[str, Any]:
    return patient_follow_up(ctx, db, auth, pseudonym)


@router.post("/cases/{case_id}/review", summary="The doctor's decision on a case")
def review(case_id: int, body: ReviewIn, auth: Auth = Depends(get_auth),
           ctx: AppContext = Depends(get_ctx), db: Session = Depends(get_db),
           x_csrf_token: str | None = Header(default=None)) -> dict[str, Any]:
    check_csrf(auth, x_csrf_token)
    case = _case(db, case_id)
    if case.kind == "2d" and case.ai_label is not None and body.agrees and \
            body.label is not None and body.label != case.ai_label:
        raise cases.UploadError(f"agrees=true confirms the AI's class ({case.ai_label}), but "
                                f"the label given is {body.label!r}", "to correct the read, "
                                "send agrees=false with the right label", 422)
    cases.review_case(db, case, auth.user, body.label, body.agrees, body.mask_ok, body.comment,
                      ctx.models_or_fail().classifier.classes)
    return full_case(db, case)


FILE_TYPES = {"image": "image/png", "dicom": "application/dicom",
              studies.SERIES_JSON: "application/json", studies.ROLES_JSON: "application/json"}


@router.get("/cases/{case_id}/files/{role:path}", summary="A stored file of a case")
def case_file(case_id: int, role: str, auth: Auth = Depends(get_auth),
              ctx: AppContext = Depends(get_ctx), db: Session = Depends(get_db)) -> Response:
    case = _case(db, case_id)
    digest = case.files.get(role)
    if not isinstance(digest, str) and role.startswith("cam/"):
        digest = cases.heatmap_on_demand(ctx, db, case, role)
    if not isinstance(digest, str):
        raise cases.UploadError(f"case {case_id} has no file {role!r}",
                                f"it has: {', '.join(sorted(case.files))}", 404)
    if not ctx.store.exists(digest):
        raise cases.UploadError(f"the file {role!r} of case {case_id} is missing from the store",
                                "tell the administrator: the store was changed by hand", 404)
    media = FILE_TYPES.get(role, "application/gzip" if role.endswith(".nii.gz") else "image/png")
    repo.audit(db, auth.user.username, "download", f"case {case_id}", f"file {role}")
    db.commit()
    return Response(ctx.store.read(digest), media_type=media,
                    headers={"Cache-Control": "no-store"})


@router.get("/cases/{case_id}/report.pdf", summary="The case's PDF report")
def case_report(case_id: int, auth: Auth = Depends(get_auth),
                ctx: AppContext = Depends(get_ctx), db: Session = Depends(get_db)) -> Response:
    case = _case(db, case_id)
    pdf = report.case_pdf(ctx, case, full_case(db, case), masks.reviewed(db, case))
    repo.audit(db, auth.user.username, "report", f"case {case_id}")
    db.commit()
    return Response(pdf, media_type="application/pdf", headers={
        "Content-Disposition": f'attachment; filename="case-{case_id}.pdf"'})


@router.get("/export/reviewed.zip",
            summary="Reviewed 2D cases as a class-per-folder dataset for `mrimaster train`")
def export_reviewed(auth: Auth = Depends(get_auth), ctx: AppContext = Depends(get_ctx),
                    db: Session = Depends(get_db)) -> Response:
    data, count = exports.reviewed_zip(ctx, db)
    repo.audit(db, auth.user.username, "export-reviewed", detail=f"{count} cases")
    db.commit()
    return Response(data, media_type="application/zip", headers={
        "Content-Disposition": 'attachment; filename="mrimaster-reviewed.zip"'})


@router.get("/export/reviewed-3d.zip",
            summary="3D cases with a reviewed mask as a BraTS-layout dataset (dataset.json) for "
            "`mrimaster seg train --init MODEL --data EXPORT`")
def export_reviewed_3d(auth: Auth = Depends(get_auth), ctx: AppContext = Depends(get_ctx),
                       db: Session = Depends(get_db)) -> Response:
    data, count = exports.reviewed_3d_zip(ctx, db)
    repo.audit(db, auth.user.username, "export-reviewed-3d", detail=f"{count} cases")
    db.commit()
    return Response(data, media_type="application/zip", headers={
        "Content-Disposition": 'attachment; filename="mrimaster-reviewed-3d.zip"'})


@router.get("/users", summary="Accounts (admins only)")
def users(auth: Auth = Depends(require_admin), db: Session = Depends(get_db)
          ) -> list[dict[str, Any]]:
    rows = [user_view(u) for u in repo.list_users(db)]
    repo.audit(db, auth.user.username, "list-users", "users API", f"{len(rows)} accounts")
    db.commit()
    return rows


@router.post("/users", summary="Create an account (admins only)")
def create_user(body: NewUser, auth: Auth = Depends(require_admin),
                db: Session = Depends(get_db),
                x_csrf_token: str | None = Header(default=None)) -> dict[str, Any]:
    check_csrf(auth, x_csrf_token)
    return user_view(accounts.create_user(db, auth.user, body.username, body.password,
                                          body.role))


@router.get("/audit", summary="The audit log, newest first (admins only)")
def audit_log(limit: int = 200, auth: Auth = Depends(require_admin),
              db: Session = Depends(get_db)) -> list[dict[str, Any]]:
    rows = [{"at": e.at.isoformat(), "user": e.username, "action": e.action,
             "target": e.target, "detail": e.detail}
            for e in repo.audit_events(db, min(max(limit, 1), 1000))]
    repo.audit(db, auth.user.username, "view-audit", "audit API", f"{len(rows)} events")
    db.commit()
    return rows
