"""Mask versions of a case: doctors' corrections of the AI's tumour mask, never overwritten.

Version 0 is the AI's mask (``mask.nii.gz`` of the case; pinned in ``mask_versions`` with its
digest at the first save, so that a later segmentation of the case cannot take it away); each
save is a new version 1, 2, ... with its author, time and the version it started from. A save
is checked (the AI mask's shape and affine, labels within the case's convention), written to
the object store first, then its row and the audit event in one transaction: a server killed
at any point leaves the earlier versions intact and no row without its file. The masks' files
are read, checked and measured by :mod:`mrimaster.serving.label_maps`.

2D cases keep the doctor's tumour box (``[x0, y0, x1, y1]`` in the original image's pixels) as
a version of kind ``box``.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mrimaster.serving.cases import UploadError
from mrimaster.serving.context import AppContext
from mrimaster.serving.deps import Forbidden
from mrimaster.serving.label_maps import (
    REGIONS,
    LabelMap,
    check_labels,
    decode,
    dice_per_region,
    encode,
    volumes_ml,
)
from mrimaster.storage import repository as repo
from mrimaster.storage.mask_tables import MaskVersion
from mrimaster.storage.tables import Case, User

REVIEW_ROLES = ("radiologist", "admin")
"""Roles that may review a case, hence save a mask version or mark the reviewed one (the same
accounts as the review route)."""
AI_MASK = "mask.nii.gz"
AFFINE_ATOL_MM = 1e-3
"""Largest difference allowed between an element of a saved mask's affine and the AI mask's
(NiiVue writes the header back as float32)."""


def can_edit(user: User) -> bool:
    return user.role in REVIEW_ROLES


def check_editor(user: User) -> None:
    """Raises Forbidden (403) unless ``user`` may review cases."""
    if not can_edit(user):
        raise Forbidden()


def convention_of(case: Case) -> str:
    """The case's label convention (``brats2021`` or ``wt``), from its AI result."""
    return str((case.result or {}).get("label_convention") or "brats2021")


def _case_3d(case: Case) -> None:
    if case.kind != "3d" or AI_MASK not in case.files:
        raise UploadError(f"case {case.id} has no AI mask to correct",
                          "wait for its segmentation to finish (3D cases only)", 409)


def _max_bytes(shape: tuple[int, ...]) -> int:
    """The largest unpacked NIfTI of a mask on a grid of ``shape`` (float64 voxels)."""
    return int(np.prod(shape)) * 8 + 64 * 1024


# -- reading ----------------------------------------------------------------------------------

def rows(db: Session, case_id: int) -> list[MaskVersion]:
    return list(db.scalars(select(MaskVersion).where(MaskVersion.case_id == case_id)
                           .order_by(MaskVersion.number)))


def digest_of(case: Case, db: Session, number: int) -> str:
    """The store digest of version ``number`` of a 3D case's mask.

    Raises:
        UploadError: no such version (404).
    """
    row = db.scalar(select(MaskVersion).where(MaskVersion.case_id == case.id,
                                              MaskVersion.number == number,
                                              MaskVersion.kind == "mask"))
    if row is not None and row.digest:
        return row.digest
    if number == 0 and isinstance(case.files.get(AI_MASK), str):
        return str(case.files[AI_MASK])
    raise UploadError(f"case {case.id} has no mask version {number}",
                      f"GET /api/cases/{case.id}/masks lists its versions", 404)


def load(ctx: AppContext, case: Case, db: Session, number: int) -> LabelMap:
    digest = digest_of(case, db, number)
    data = ctx.store.read(digest)
    return decode(data, 1 << 34)


def version_view(row: MaskVersion) -> dict[str, Any]:
    return {"number": row.number, "kind": row.kind, "author": row.author,
            "created_at": row.created_at.isoformat(), "base_version": row.base_version,
            "label_convention": row.label_convention, "reviewed": row.reviewed,
            "box": row.box, "volumes_ml": (row.stats or {}).get("volumes_ml"),
            "dice_vs_ai": (row.stats or {}).get("dice_vs_ai"),
            "url": (f"/api/cases/{row.case_id}/masks/{row.number}" if row.kind == "mask"
                    else None)}


def _ai_view(case: Case) -> dict[str, Any]:
    r = case.result or {}
    return {"number": 0, "kind": "mask", "author": f"AI ({case.model})",
            "created_at": case.updated_at.isoformat(), "base_version": None,
            "label_convention": convention_of(case), "reviewed": False, "box": None,
            "volumes_ml": r.get("volumes_ml"), "dice_vs_ai": {k: 1.0 for k in REGIONS},
            "url": f"/api/cases/{case.id}/masks/0"}


def versions(db: Session, case: Case) -> list[dict[str, Any]]:
    """Every version of the case's mask (version 0 the AI's, shown before its first save too)
    and its boxes, oldest first."""
    out = [version_view(r) for r in rows(db, case.id)]
    if case.kind == "3d" and AI_MASK in case.files and not any(
            v["number"] == 0 for v in out):
        out.insert(0, _ai_view(case))
    return out


def reviewed(db: Session, case: Case) -> dict[str, Any] | None:
    """The version marked as the reviewed result (its volumes are the case's), or ``None``."""
    row = db.scalar(select(MaskVersion).where(MaskVersion.case_id == case.id,
                                              MaskVersion.reviewed.is_(True)))
    return version_view(row) if row is not None else None


def panel(db: Session, case: Case, user: User) -> dict[str, Any]:
    """What the case page shows: the versions, the reviewed one, whether the user may edit."""
    listed = versions(db, case)
    return {"versions": listed, "reviewed": reviewed(db, case), "can_edit": can_edit(user),
            "convention": convention_of(case)}


def reviewed_digest(db: Session, case: Case) -> str | None:
    """The store digest of the mask the report and DICOM SEG should use: the reviewed version's,
    else the AI's (``None`` if the case has no mask)."""
    row = db.scalar(select(MaskVersion).where(MaskVersion.case_id == case.id,
                                              MaskVersion.reviewed.is_(True),
                                              MaskVersion.kind == "mask"))
    if row is not None and row.digest:
        return row.digest
    digest = case.files.get(AI_MASK)
    return digest if isinstance(digest, str) else None


def compare(ctx: AppContext, db: Session, case: Case, a: int, b: int) -> dict[str, Any]:
    """Dice and volume (mL) per region WT/TC/ET between versions ``a`` and ``b``."""
    _case_3d(case)
    ma, mb = load(ctx, case, db, a), load(ctx, case, db, b)
    if ma.labels.shape != mb.labels.shape:
        raise UploadError("the two versions lie on different grids", "compare versions of "
                          "one segmentation", 409)
    conv = convention_of(case)
    va, vb = volumes_ml(ma.labels, ma.voxel_ml, conv), volumes_ml(mb.labels, mb.voxel_ml, conv)
    return {"a": a, "b": b, "label_convention": conv,
            "dice": dice_per_region(ma.labels, mb.labels, conv),
            "volumes_ml": {"a": va, "b": vb},
            "difference_ml": {r: (None if va[r] is None or vb[r] is None
                                  else round(float(vb[r]) - float(va[r]), 3))  # type: ignore[arg-type]
                              for r in REGIONS}}


# -- writing ----------------------------------------------------------------------------------

def _next_number(db: Session, case_id: int) -> int:
    top = db.scalar(select(func.max(MaskVersion.number)).where(MaskVersion.case_id == case_id))
    return 1 if top is None else int(top) + 1


def _pin_ai(db: Session, case: Case) -> MaskVersion:
    """The row of version 0 (the AI's mask), added when missing."""
    row = db.scalar(select(MaskVersion).where(MaskVersion.case_id == case.id,
                                              MaskVersion.number == 0))
    if row is not None:
        return row
    r = case.result or {}
    row = MaskVersion(case_id=case.id, number=0, kind="mask", author=f"AI ({case.model})",
                      base_version=None, digest=str(case.files[AI_MASK]),
                      label_convention=convention_of(case), box=None, reviewed=False,
                      stats={"volumes_ml": r.get("volumes_ml"),
                             "dice_vs_ai": {k: 1.0 for k in REGIONS}})
    db.add(row)
    db.flush()
    return row


def save_mask(ctx: AppContext, db: Session, user: User, case: Case, body: bytes,
              base: int) -> dict[str, Any]:
    """Store ``body`` (a NIfTI, gzip or raw) as the next version of the case's mask.

    Checked first (nothing is stored on a refusal): the user may review; the case has an AI
    mask; ``base`` is a version; the mask has the AI mask's shape and affine (within
    :data:`AFFINE_ATOL_MM`) and only the labels of the case's convention. Then the file goes to
    the store, then version 0's pin, the new row and the audit event in one commit.

    Raises:
        Forbidden (403); UploadError: no mask (409), no such base (404), wrong grid or labels,
            unreadable (422), too large (413).
    """
    check_editor(user)
    _case_3d(case)
    digest_of(case, db, base)
    ai = load(ctx, case, db, 0)
    new = decode(body, _max_bytes(ai.labels.shape))
    if new.labels.shape != ai.labels.shape:
        raise UploadError(f"the mask's shape {list(new.labels.shape)} is not the AI mask's "
                          f"{list(ai.labels.shape)}", "save the mask on the AI mask's grid "
                          "(edit it over the reference image)", 422)
    if not np.allclose(new.affine, ai.affine, atol=AFFINE_ATOL_MM):
        raise UploadError("the mask's affine (its position in the scanner) is not the AI "
                          "mask's", "save the mask on the AI mask's grid (edit it over the "
                          "reference image)", 422)
    conv = convention_of(case)
    check_labels(new.labels, conv)
    data = encode(new.labels, ai.affine)
    stats = {"volumes_ml": volumes_ml(new.labels, ai.voxel_ml, conv),
             "dice_vs_ai": dice_per_region(ai.labels, new.labels, conv)}
    digest = ctx.store.put_bytes(data)  # the file first: a row never names a missing file
    for _ in range(3):
        try:
            _pin_ai(db, case)
            number = _next_number(db, case.id)
            row = MaskVersion(case_id=case.id, number=number, kind="mask", author=user.username,
                              base_version=base, digest=digest, label_convention=conv,
                              box=None, stats=stats, reviewed=False)
            db.add(row)
            repo.audit(db, user.username, "mask-save", f"case {case.id}",
                       f"version {number} by {user.username}, base {base}")
            db.commit()
            return version_view(row)
        except IntegrityError:  # another save took the number: take the next one
            db.rollback()
    raise UploadError("the mask was saved by others at the same moment several times",
                      "save again", 409)


def mark_reviewed(db: Session, user: User, case: Case, number: int) -> dict[str, Any]:
    """Mark version ``number`` as the case's reviewed result (the others lose the mark).

    Raises:
        Forbidden (403); UploadError: no such version (404).
    """
    check_editor(user)
    if number == 0 and case.kind == "3d" and AI_MASK in case.files:
        _pin_ai(db, case)
    row = db.scalar(select(MaskVersion).where(MaskVersion.case_id == case.id,
                                              MaskVersion.number == number))
    if row is None:
        raise UploadError(f"case {case.id} has no mask version {number}",
                          f"GET /api/cases/{case.id}/masks lists its versions", 404)
    db.execute(update(MaskVersion).where(MaskVersion.case_id == case.id,
                                         MaskVersion.kind == row.kind)
               .values(reviewed=False).execution_options(synchronize_session=False))
    row.reviewed = True
    repo.audit(db, user.username, "mask-reviewed", f"case {case.id}", f"version {number}")
    db.commit()
    db.refresh(row)
    return version_view(row)


def save_box(ctx: AppContext, db: Session, user: User, case: Case,
             box: list[float]) -> dict[str, Any]:
    """Store the tumour box ``[x0, y0, x1, y1]`` (original image pixels) of a 2D case as its
    next version (kind ``box``), marked as the reviewed box.

    Raises:
        Forbidden (403); UploadError: not a 2D case (409), a box that is not 4 numbers inside
            the image with x0 < x1, y0 < y1 (422).
    """
    from PIL import Image

    check_editor(user)
    if case.kind != "2d" or not isinstance(case.files.get("image"), str):
        raise UploadError(f"case {case.id} is not a 2D case with an image",
                          "boxes are drawn on 2D slices", 409)
    if len(box) != 4 or not all(isinstance(v, int | float) for v in box):
        raise UploadError("the box must be [x0, y0, x1, y1]", "four pixel coordinates", 422)
    with Image.open(io.BytesIO(ctx.store.read(case.files["image"]))) as im:
        width, height = im.size
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise UploadError(f"the box {[x0, y0, x1, y1]} is not inside the {width}x{height} "
                          "image with x0 < x1 and y0 < y1", "draw the box on the image", 422)
    for _ in range(3):
        try:
            db.execute(update(MaskVersion).where(MaskVersion.case_id == case.id,
                                                 MaskVersion.kind == "box")
                       .values(reviewed=False).execution_options(synchronize_session=False))
            number = _next_number(db, case.id)
            row = MaskVersion(case_id=case.id, number=number, kind="box", author=user.username,
                              base_version=None, digest=None, label_convention="box",
                              box=[x0, y0, x1, y1], stats={}, reviewed=True)
            db.add(row)
            repo.audit(db, user.username, "box-save", f"case {case.id}",
                       f"version {number} box {[x0, y0, x1, y1]}")
            db.commit()
            return version_view(row)
        except IntegrityError:
            db.rollback()
    raise UploadError("the box was saved by others at the same moment several times",
                      "save again", 409)
