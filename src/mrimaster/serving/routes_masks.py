"""Mask versions (:mod:`mrimaster.serving.masks`): thin routes. A save's body is the NIfTI
itself (``application/octet-stream``, gzip or raw), read into memory and checked before
anything is stored, so a connection cut mid-body leaves nothing behind."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from mrimaster.serving import masks
from mrimaster.serving.cases import UploadError
from mrimaster.serving.context import AppContext
from mrimaster.serving.deps import Auth, check_csrf, get_auth, get_ctx, get_db
from mrimaster.storage import repository as repo
from mrimaster.storage.tables import Case

router = APIRouter(tags=["masks"])


class BoxIn(BaseModel):
    box: list[Annotated[float, Field(allow_inf_nan=False)]] = Field(
        description="[x0, y0, x1, y1] in the original image's pixels (finite numbers)")


def _case(db: Session, case_id: int) -> Case:
    case = repo.get_case(db, case_id)
    if case is None:
        raise UploadError(f"case {case_id} does not exist", "GET /api/cases lists them", 404)
    return case


async def _body(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise UploadError(f"the mask is larger than the limit of {limit / 1e6:.0f} MB",
                              "send the mask as saved by the viewer", 413)
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("/api/cases/{case_id}/masks", summary="Save a corrected mask as a new version")
async def save_mask(request: Request, case_id: int,
                    base: int = Query(0, description="the version the edit started from"),
                    auth: Auth = Depends(get_auth),
                    ctx: AppContext = Depends(get_ctx)) -> dict[str, Any]:
    """Body: the mask as a NIfTI-1 (gzip or raw) of uint8 labels on the AI mask's grid."""
    check_csrf(auth, request.headers.get("x-csrf-token"))
    masks.check_editor(auth.user)  # before the body is read: a refused user sends nothing
    body = await _body(request, ctx.config.max_upload_bytes)

    def run() -> dict[str, Any]:
        with ctx.sessions() as db:
            user = repo.user_by_id(db, auth.user.id)
            assert user is not None
            return masks.save_mask(ctx, db, user, _case(db, case_id), body, base)

    return await anyio.to_thread.run_sync(run)


@router.get("/api/cases/{case_id}/masks", summary="The versions of a case's mask")
def list_masks(case_id: int, auth: Auth = Depends(get_auth),
               db: Session = Depends(get_db)) -> dict[str, Any]:
    case = _case(db, case_id)
    return masks.panel(db, case, auth.user)


@router.get("/api/cases/{case_id}/masks/compare",
            summary="Dice and volumes per region between two mask versions")
def compare_masks(case_id: int, a: int = Query(0), b: int = Query(...),
                  auth: Auth = Depends(get_auth), ctx: AppContext = Depends(get_ctx),
                  db: Session = Depends(get_db)) -> dict[str, Any]:
    return masks.compare(ctx, db, _case(db, case_id), a, b)


@router.get("/api/cases/{case_id}/masks/{number}", summary="A mask version's NIfTI file")
def mask_file(case_id: int, number: int, auth: Auth = Depends(get_auth),
              ctx: AppContext = Depends(get_ctx), db: Session = Depends(get_db)) -> Response:
    digest = masks.digest_of(_case(db, case_id), db, number)
    return Response(ctx.store.read(digest), media_type="application/gzip", headers={
        "Content-Disposition": f'attachment; filename="case-{case_id}-mask-v{number}.nii.gz"'})


@router.post("/api/cases/{case_id}/masks/{number}/reviewed",
             summary="Mark a mask version as the reviewed result")
def mark_reviewed(request: Request, case_id: int, number: int, auth: Auth = Depends(get_auth),
                  db: Session = Depends(get_db)) -> dict[str, Any]:
    check_csrf(auth, request.headers.get("x-csrf-token"))
    return masks.mark_reviewed(db, auth.user, _case(db, case_id), number)


@router.post("/api/cases/{case_id}/box", summary="Save the tumour box of a 2D case")
def save_box(request: Request, case_id: int, body: BoxIn, auth: Auth = Depends(get_auth),
             ctx: AppContext = Depends(get_ctx),
             db: Session = Depends(get_db)) -> dict[str, Any]:
    check_csrf(auth, request.headers.get("x-csrf-token"))
    return masks.save_box(ctx, db, auth.user, _case(db, case_id), body.box)
