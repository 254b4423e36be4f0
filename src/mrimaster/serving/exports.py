"""Doctors' decisions as training data: reviewed 2D cases as a class-per-folder dataset."""

from __future__ import annotations

import csv
import io
import zipfile

from sqlalchemy.orm import Session

from mrimaster.serving.context import AppContext
from mrimaster.storage import repository as repo


def reviewed_zip(ctx: AppContext, db: Session) -> tuple[bytes, int]:
    """A zip of ``<class>/case-<id>.png`` for every reviewed 2D case, labelled with the
    doctor's latest decision (the folder layout ``mrimaster train`` reads), and
    ``decisions.csv`` (case, AI label, doctor's label, corrected or confirmed, reviewer
    comment). Returns ``(zip bytes, number of images)``."""
    buf = io.BytesIO()
    rows = [("case", "file", "ai_label", "label", "corrected", "comment")]
    count = 0
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for case, review in repo.latest_reviews(db):
            digest = case.files.get("image")
            if case.kind != "2d" or review.label is None or not isinstance(digest, str):
                continue
            name = f"{review.label}/case-{case.id}.png"
            zf.writestr(name, ctx.store.read(digest))
            rows.append((str(case.id), name, case.ai_label or "", review.label,
                         str(not review.agrees).lower(), review.comment))
            count += 1
        text = io.StringIO()
        csv.writer(text).writerows(rows)
        zf.writestr("decisions.csv", text.getvalue())
    return buf.getvalue(), count
