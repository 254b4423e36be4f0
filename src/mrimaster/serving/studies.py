"""3D studies: storing uploaded modalities (NIfTI files or a zip of DICOM series) as a case
with a queued segmentation job, and running that job."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from fastapi import UploadFile
from sqlalchemy.orm import Session

from mrimaster.errors import MRIMasterError
from mrimaster.serving.cases import UploadError, patient_pseudonym, strip_paths
from mrimaster.serving.context import AppContext
from mrimaster.storage import repository as repo
from mrimaster.storage.deid import patient_key, pseudonym
from mrimaster.storage.tables import Case, Job, User

log = logging.getLogger(__name__)
MODALITY_NAMES = {"flair": "FLAIR", "t1": "T1", "t1ce": "T1-Gd", "t2": "T2"}
JOB_FAILED = "the segmentation failed; upload the study again or ask an administrator"
"""What users see of a job that failed for a reason that is not about their data."""


def _cleaned(path: Path, out: Path) -> Path:
    """A gzip-compressed NIfTI of ``path`` rewritten from its voxels and affine only (no
    description, auxiliary file, intent or database name, no header extension)."""
    from mrimaster.data.dicom_series import write_clean_nifti
    from mrimaster.segmentation.volumes import load_nifti

    return write_clean_nifti(load_nifti(path), out)


def check_volumes(paths: dict[str, Path]) -> None:
    """Each file is a readable 3D NIfTI volume and all share one grid.

    Raises:
        DataError: unreadable, not 3D, NaNs, or grids that differ (says which and how).
    """
    from mrimaster.segmentation.geometry import check_same_grid
    from mrimaster.segmentation.volumes import load_nifti

    images = []
    for m, path in paths.items():
        img = load_nifti(path)
        if len(img.shape) != 3:
            raise UploadError(f"the {MODALITY_NAMES[m]} file holds a {len(img.shape)}D image, "
                              "not a 3D volume", "upload one 3D volume per modality", 422)
        images.append(img)
    check_same_grid(images, [MODALITY_NAMES[m] for m in paths], "the upload")


def store_study(ctx: AppContext, db: Session, user: User, uploads: dict[str, Path],
                archive: Path | None, reference: str, work: Path,
                confirm_burned_in: bool = False) -> Case:
    """Check and store a 3D study, then queue its segmentation.

    Every stored volume is rewritten from its voxels and affine (:func:`_cleaned`): no text
    field or header extension of an uploaded file is kept.

    Args:
        uploads: ``{modality: NIfTI file}`` (may be empty when ``archive`` is given).
        archive: A zip of DICOM series (converted with their geometry), or ``None``.
        reference: The patient reference typed by the user (DICOM brings its own).
        work: A temporary folder.
        confirm_burned_in: The doctor confirms series that declare burned-in annotation.

    Raises:
        UploadError, DataError: nothing usable, unreadable files, grids that differ; a series
            with burned-in annotation, not confirmed (409).
    """
    alias = None
    burned: list[str] = []
    if archive is not None:
        from mrimaster.data.dicom_series import BurnedInSeries, zip_to_modalities

        try:
            converted, first = zip_to_modalities(archive, work, ctx.config.max_upload_bytes * 4,
                                                 confirm_burned_in, burned)
        except BurnedInSeries as exc:
            raise UploadError(exc.message, exc.hint, 409) from exc
        uploads = {**converted, **uploads}
        alias = pseudonym(ctx.key, patient_key(first))
    if not uploads:
        raise UploadError("no volume was uploaded", "add at least the FLAIR volume (NIfTI) or "
                          "a zip of DICOM series", 422)
    unknown = set(uploads) - set(MODALITY_NAMES)
    if unknown:
        raise UploadError(f"unknown modality {sorted(unknown)}",
                          f"use {', '.join(MODALITY_NAMES)}", 422)
    check_volumes(uploads)
    files = {f"{m}.nii.gz": ctx.store.put_file(_cleaned(p, work / f"clean-{m}.nii.gz"))
             for m, p in uploads.items()}
    case = repo.add_case(db, "3d", alias or patient_pseudonym(ctx, reference), user, files,
                         None, "new", None, "", note="modalities: " + ", ".join(
                             MODALITY_NAMES[m] for m in uploads))
    repo.add_job(db, case)
    repo.audit(db, user.username, "upload-3d", f"case {case.id}", case.note + "".join(
        f"; burned-in annotation ({reason}) confirmed by {user.username}" for reason in burned))
    db.commit()
    return case


def receive_study(ctx: AppContext, db: Session, user: User,
                  volumes: dict[str, UploadFile | None], archive: UploadFile | None,
                  reference: str, confirm_burned_in: bool = False) -> Case:
    """Receive the uploaded files of a 3D study (size-limited) and store it
    (:func:`store_study`); the temporary files are removed whatever happens."""
    with ctx.store.work_dir() as work:
        paths: dict[str, Path] = {}
        for m, upload in volumes.items():
            if upload is None or not upload.filename:
                continue
            name = upload.filename.lower()
            suffix = ".nii.gz" if name.endswith(".gz") else ".nii"
            paths[m] = work / f"upload-{m}{suffix}"
            ctx.store.receive(upload.file, paths[m], ctx.config.max_upload_bytes)
            if paths[m].stat().st_size == 0:
                raise UploadError(f"the {MODALITY_NAMES[m]} file is empty",
                                  "choose the file again", 400)
        zip_path = None
        if archive is not None and archive.filename:
            zip_path = work / "upload.zip"
            ctx.store.receive(archive.file, zip_path, ctx.config.max_upload_bytes)
        try:
            return store_study(ctx, db, user, paths, zip_path, reference, work,
                               confirm_burned_in)
        except MRIMasterError as exc:  # name the user's files, not the server's folder
            names = {str(p): f"the {MODALITY_NAMES[m]} file" for m, p in paths.items()}
            message = exc.message
            for path, name in names.items():
                message = message.replace(path, name)
            exc.message = strip_paths(message.replace(f"{work}/", "")
                                      .replace(str(work), "the upload"), ctx.config.app_dir)
            exc.args = (exc.message,)
            raise


def user_message(ctx: AppContext, exc: BaseException) -> str:
    """What users see of a failed job: an :class:`MRIMasterError`'s message (it names their
    data's problem) without any server path, else :data:`JOB_FAILED`."""
    if not isinstance(exc, MRIMasterError):
        return JOB_FAILED
    return strip_paths(str(exc), ctx.config.app_dir, ctx.store.root, tempfile.gettempdir())


def run_job(ctx: AppContext, job: Job) -> None:
    """Segment a queued 3D case and store the mask, the volumes and the overlays; the job and
    the case say how it went (never left ``running`` by an error). A failure is logged in full
    and kept in full in the audit log (admins only); the job and the case show
    :func:`user_message`."""
    try:
        _segment(ctx, job)
    except Exception as exc:  # the job must end in a state, whatever went wrong
        full = f"{type(exc).__name__}: {exc}"
        message = user_message(ctx, exc)
        log.exception("job %d failed", job.id)
        with ctx.sessions() as db:
            repo.set_job(db, job.id, state="failed", message=message[:2000])
            case = repo.get_case(db, job.case_id)
            if case is not None:
                case.status, case.note = "failed", message[:2000]
                repo.audit(db, "system", "segment-failed", f"case {case.id}", full[:4000])
            db.commit()


def _segment(ctx: AppContext, job: Job) -> None:
    models = ctx.models_or_fail()
    with ctx.sessions() as db:
        case = repo.get_case(db, job.case_id)
        if case is None:
            repo.set_job(db, job.id, state="failed", message="the case was deleted")
            return
        files = dict(case.files)
        repo.set_job(db, job.id, progress=0.05, message="loading the volumes")
    with ctx.store.work_dir() as work:
        folder = work / f"case-{job.case_id}"
        folder.mkdir()
        for role, digest in files.items():
            if role.endswith(".nii.gz") and role.split(".")[0] in MODALITY_NAMES:
                shutil.copyfile(ctx.store.path(digest), folder / role)
        with ctx.sessions() as db:
            repo.set_job(db, job.id, progress=0.15, message="segmenting (U-Net, sliding window)")
        with ctx.seg_lock:
            segmenter = models.segmenter()
            segmenter.segment(folder, work / "out")
        with ctx.sessions() as db:
            repo.set_job(db, job.id, progress=0.9, message="storing the mask and the overlays")
        out = work / "out"
        info: dict[str, Any] = json.loads((out / "volumes.json").read_text())
        new = {"mask.nii.gz": ctx.store.put_file(out / "seg.nii.gz")}
        for png in sorted(out.glob("overlay_*.png")):
            new[png.stem] = ctx.store.put_file(png)
    wt = (info.get("volumes_ml") or {}).get("WT")
    with ctx.sessions() as db:
        case = repo.get_case(db, job.case_id)
        if case is None:
            return
        case.files = {**files, **new}
        case.result = info
        case.ai_label = None if wt is None else f"WT {wt:.1f} mL"
        case.status = "referred" if info.get("warnings") else "ai-read"
        case.model = models.seg_version()
        repo.audit(db, "system", "segmented", f"case {case.id}", case.ai_label or "")
        repo.set_job(db, job.id, state="done", progress=1.0, message="done")
