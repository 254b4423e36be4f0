"""Doctors' decisions as training data: reviewed 2D cases as a class-per-folder dataset,
reviewed 3D masks as a BraTS-layout dataset."""

from __future__ import annotations

import csv
import io
import zipfile

from sqlalchemy import select
from sqlalchemy.orm import Session

from mrimaster.serving.context import AppContext
from mrimaster.serving.studies import registered_files
from mrimaster.storage import repository as repo
from mrimaster.storage.tables import Case


def reviewed_zip(ctx: AppContext, db: Session) -> tuple[bytes, int]:
    """A zip of ``<class>/case-<id>.png`` for every reviewed 2D case, labelled with the
    doctor's latest decision (the folder layout ``mrimaster train`` reads), and
    ``decisions.csv`` (case, AI label, the AI read's status: ``reject`` marks an image the AI
    judged not a brain MRI slice, doctor's label, corrected or confirmed, how many reviews the
    case has (``reviews``; more than one: doctors may disagree, the latest is exported), reviewer
    comment). Returns ``(zip bytes, number of images)``."""
    buf = io.BytesIO()
    rows = [("case", "file", "ai_label", "ai_status", "label", "corrected", "reviews",
             "comment")]
    count = 0
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for case, review in repo.latest_reviews(db):
            digest = case.files.get("image")
            if case.kind != "2d" or review.label is None or not isinstance(digest, str):
                continue
            name = f"{review.label}/case-{case.id}.png"
            zf.writestr(name, ctx.store.read(digest))
            rows.append((str(case.id), name, case.ai_label or "",
                         str((case.result or {}).get("status") or ""), review.label,
                         str(not review.agrees).lower(), str(len(repo.reviews_of(db, case.id))),
                         review.comment))
            count += 1
        text = io.StringIO()
        csv.writer(text).writerows(rows)
        zf.writestr("decisions.csv", text.getvalue())
    return buf.getvalue(), count


def reviewed_3d_zip(ctx: AppContext, db: Session) -> tuple[bytes, int]:
    """A zip of every 3D case whose mask a doctor marked reviewed, in the BraTS layout with a
    ``dataset.json`` (:func:`mrimaster.segmentation.reviewed.write_reviewed_dataset`): the
    reviewed mask as ``seg`` and each sequence as the network saw it, registered onto the
    mask's grid (``registered/<role>.nii.gz``, kept by the segmentation job). Cases are named
    ``case-<id>``; reviewers by a pseudonymous id. Returns ``(zip bytes, number of cases)``.
    """
    import hashlib
    import tempfile
    from pathlib import Path

    from mrimaster.segmentation.reviewed import ReviewedCase, write_reviewed_dataset
    from mrimaster.serving import masks

    with tempfile.TemporaryDirectory(prefix="mrimaster-export-") as tmp:
        folder = Path(tmp)
        chosen = []
        for case in db.scalars(select(Case).where(Case.kind == "3d").order_by(Case.id)):
            version = masks.reviewed(db, case)
            digest = masks.reviewed_digest(db, case)
            if version is None or digest is None:
                continue
            case_dir = folder / "in" / f"case-{case.id}"
            case_dir.mkdir(parents=True)
            seg = case_dir / "seg.nii.gz"
            seg.write_bytes(ctx.store.read(digest))
            images = {}
            for role, file_digest in registered_files(case).items():
                images[role] = case_dir / f"{role}.nii.gz"
                images[role].write_bytes(ctx.store.read(file_digest))
            if not images:  # segmented before the registered volumes were kept
                continue
            reviewer = hashlib.sha256(ctx.key + str(version["author"]).encode()).hexdigest()[:8]
            chosen.append(ReviewedCase(
                f"case-{case.id}", images, seg, str(version["label_convention"]),
                f"MRIMaster case {case.id}, mask version {version['number']} reviewed by "
                f"user {reviewer}"))
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            if chosen:
                out = write_reviewed_dataset(chosen, folder / "out")
                for path in sorted(out.rglob("*")):
                    if path.is_file():
                        zf.write(path, path.relative_to(out).as_posix())
        return buf.getvalue(), len(chosen)
