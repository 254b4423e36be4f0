"""The PACS view: search the configured PACS, pull a study into the worklist, and (on the case
page, by a doctor) approve and send its results back. Thin routes over
:mod:`mrimaster.serving.pacs_service` (search, pull) and :mod:`mrimaster.serving.pacs_send`
(send); pages and their JSON twins under ``/api/pacs``.

Searches are POSTs: the filters (a patient ID, an accession number) then stay out of URLs,
access logs and browser history.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Form, Header, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from mrimaster.errors import MRIMasterError
from mrimaster.pacs import PacsError
from mrimaster.serving import pacs_send, pacs_service
from mrimaster.serving.cases import UploadError, error_status
from mrimaster.serving.context import AppContext
from mrimaster.serving.deps import Auth, check_csrf, get_auth, get_ctx, get_db
from mrimaster.serving.routes_api import _case, full_case, wake_jobs
from mrimaster.serving.routes_pages import _case_page, page
from mrimaster.serving.views import case_view

router = APIRouter(tags=["pacs"])


class SearchIn(BaseModel):
    patient_id: str = Field(default="", max_length=64)
    date_range: str = Field(default="", max_length=40,
                            description="20240131, 20240101-20240131 or 2024-01-01..2024-01-31")
    accession: str = Field(default="", max_length=64)
    limit: int = Field(default=50, ge=1, le=500)


class PullIn(BaseModel):
    study_uid: str = Field(max_length=64)
    confirm_burned_in: bool = False


def status_of(exc: MRIMasterError) -> int:
    """503 not configured; 504 the PACS timed out, 404 it has no such study, 502 it failed
    otherwise; else the refusal's own status."""
    if isinstance(exc, pacs_service.PacsDisabled):
        return 503
    if isinstance(exc, PacsError):
        if exc.status == 404:
            return 404
        return 504 if "did not answer" in exc.message else 502
    return error_status(exc)


def _fail(exc: MRIMasterError) -> JSONResponse:
    body = {"error": exc.message} | ({"hint": exc.hint} if exc.hint else {})
    return JSONResponse(body, status_code=status_of(exc))


def _message(exc: MRIMasterError) -> str:
    return f"{exc.message}. {exc.hint}" if exc.hint else exc.message


# -- pages ------------------------------------------------------------------------------------

@router.get("/pacs", response_class=HTMLResponse, summary="PACS search page")
def pacs_page(request: Request, auth: Auth = Depends(get_auth)) -> HTMLResponse:
    return page(request, "pacs.html", auth, studies=None, query={})


@router.post("/pacs", response_class=HTMLResponse, summary="Search the PACS (form)")
def pacs_search(request: Request, patient_id: str = Form(default=""),
                date_range: str = Form(default=""), accession: str = Form(default=""),
                csrf: str = Form(default=""), auth: Auth = Depends(get_auth),
                db: Session = Depends(get_db)) -> HTMLResponse:
    check_csrf(auth, csrf)
    query = {"patient_id": patient_id, "date_range": date_range, "accession": accession}
    try:
        found = pacs_service.search(pacs_service.connect(), db, auth.user, patient_id,
                                    date_range, accession)
    except MRIMasterError as exc:
        db.rollback()
        return page(request, "pacs.html", auth, status_of(exc), studies=None, query=query,
                    error=_message(exc), retry=True)
    return page(request, "pacs.html", auth, studies=found, query=query)


@router.post("/pacs/pull", summary="Pull a study from the PACS into the worklist (form)")
def pacs_pull(request: Request, study_uid: str = Form(...),
              confirm_burned_in: bool = Form(default=False), csrf: str = Form(default=""),
              auth: Auth = Depends(get_auth), ctx: AppContext = Depends(get_ctx),
              db: Session = Depends(get_db)) -> Response:
    check_csrf(auth, csrf)
    try:
        case = pacs_service.pull_study(ctx, db, auth.user, study_uid,
                                       confirm_burned_in=confirm_burned_in)
    except MRIMasterError as exc:
        db.rollback()
        return page(request, "pacs.html", auth, status_of(exc), studies=None, query={},
                    error=_message(exc), pull_uid=study_uid,
                    burned_in=status_of(exc) == 409)
    wake_jobs(request)
    return RedirectResponse(f"/cases/{case.id}", status_code=303)


@router.post("/cases/{case_id}/send", summary="Approve a case's results and send them to "
             "the PACS (form)")
def approve_and_send(request: Request, case_id: int, approve: bool = Form(default=False),
                     csrf: str = Form(default=""), auth: Auth = Depends(get_auth),
                     ctx: AppContext = Depends(get_ctx), db: Session = Depends(get_db)
                     ) -> Response:
    """The only route that sends anything to a PACS."""
    check_csrf(auth, csrf)
    case = _case(db, case_id)
    try:
        if not approve:
            raise UploadError("tick the approval box to send",
                              "you approve the segmentation as shown", 422)
        pacs_send.send_results(ctx, db, auth.user, case)
    except MRIMasterError as exc:
        db.rollback()
        classes = ctx.models.classifier.classes if ctx.models else []
        return _case_page(request, auth, ctx, db, case_id, full_case(db, case), classes,
                          status_of(exc), pacs=pacs_send.panel(ctx, db, case),
                          pacs_error=_message(exc))
    return RedirectResponse(f"/cases/{case_id}#pacs", status_code=303)


# -- JSON API ---------------------------------------------------------------------------------

@router.post("/api/pacs/search", summary="Search the PACS (QIDO-RS)", tags=["api"])
def api_search(body: SearchIn, auth: Auth = Depends(get_auth), db: Session = Depends(get_db),
               x_csrf_token: str | None = Header(default=None)) -> Any:
    check_csrf(auth, x_csrf_token)
    try:
        found = pacs_service.search(pacs_service.connect(), db, auth.user, body.patient_id,
                                    body.date_range, body.accession, body.limit)
    except MRIMasterError as exc:
        db.rollback()
        return _fail(exc)
    return [pacs_service.summary_view(s) for s in found]


@router.post("/api/pacs/pull", summary="Pull a study from the PACS into the worklist",
             tags=["api"])
def api_pull(body: PullIn, request: Request, auth: Auth = Depends(get_auth),
             ctx: AppContext = Depends(get_ctx), db: Session = Depends(get_db),
             x_csrf_token: str | None = Header(default=None)) -> Any:
    check_csrf(auth, x_csrf_token)
    try:
        case = pacs_service.pull_study(ctx, db, auth.user, body.study_uid,
                                       confirm_burned_in=body.confirm_burned_in)
    except MRIMasterError as exc:
        db.rollback()
        return _fail(exc)
    wake_jobs(request)
    return case_view(case)


@router.get("/api/pacs/cases/{case_id}", summary="What would be sent to the PACS, and the "
            "earlier sends", tags=["api"])
def api_case_pacs(case_id: int, auth: Auth = Depends(get_auth),
                  ctx: AppContext = Depends(get_ctx), db: Session = Depends(get_db)) -> Any:
    case = _case(db, case_id)
    return pacs_send.panel(ctx, db, case) or {"linked": False}


@router.post("/api/pacs/cases/{case_id}/send", summary="Approve a case's results and send "
             "them to the PACS (SEG + SR)", tags=["api"])
def api_send(case_id: int, auth: Auth = Depends(get_auth),
             ctx: AppContext = Depends(get_ctx), db: Session = Depends(get_db),
             x_csrf_token: str | None = Header(default=None)) -> Any:
    check_csrf(auth, x_csrf_token)
    case = _case(db, case_id)
    try:
        row = pacs_send.send_results(ctx, db, auth.user, case)
    except MRIMasterError as exc:
        db.rollback()
        return _fail(exc)
    return pacs_send.send_view(row)
