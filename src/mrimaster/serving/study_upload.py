"""Storing an uploaded 3D study (NIfTI files or a zip of DICOM series) as a case with a queued
segmentation job: :func:`receive_study` takes the uploaded files, :func:`store_study` checks
them, stores every volume rewritten from its voxels and affine, and queues the job.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import UploadFile
from sqlalchemy.orm import Session

from mrimaster.errors import MRIMasterError
from mrimaster.imaging.series_choice import no_flair
from mrimaster.serving.cases import UploadError, patient_pseudonym, strip_paths
from mrimaster.serving.context import AppContext
from mrimaster.serving.studies import (
    MODALITY_NAMES,
    ROLES_JSON,
    SERIES_JSON,
    role_files,
    series_label,
)
from mrimaster.serving.study_import import import_archive
from mrimaster.storage import repository as repo
from mrimaster.storage.tables import Case, User

NO_FLAIR_HINT = ("add the FLAIR series to the zip, or upload the FLAIR volume (NIfTI) in the "
                 "FLAIR field; a FLAIR the zip holds under another name: upload it there too")


def _cleaned(path: Path, out: Path) -> Path:
    """A gzip-compressed NIfTI of ``path`` rewritten from its voxels and affine only (no
    description, auxiliary file, intent or database name, no header extension)."""
    from mrimaster.data.dicom_series import write_clean_nifti
    from mrimaster.segmentation.volumes import load_nifti

    return write_clean_nifti(load_nifti(path), out)


def check_volumes(paths: dict[str, Path]) -> None:
    """Each file is a readable 3D NIfTI volume (grids may differ: the job registers them).

    Raises:
        DataError: unreadable, NaNs; UploadError: not 3D.
    """
    from mrimaster.segmentation.volumes import load_nifti

    for m, path in paths.items():
        shape = load_nifti(path).shape
        if len(shape) != 3 and not (len(shape) == 4 and shape[3] == 1):
            raise UploadError(f"the {MODALITY_NAMES[m]} file holds a {len(shape)}D image, "
                              "not a 3D volume", "upload one 3D volume per modality", 422)


def _found(entries: list[dict[str, Any]]) -> str:
    """Each series and what it is: its role when it is usable, else why not."""
    def what(e: dict[str, Any]) -> str:
        role = e.get("role") if e.get("file") else None
        return str(role or e.get("reason") or e.get("kind"))

    return "; ".join(f"{series_label(e)}: {what(e)}" for e in entries) or "nothing"


def _nifti_entry(role: str) -> dict[str, Any]:
    return {"series_number": None, "description": f"{MODALITY_NAMES[role]} (NIfTI upload)",
            "role": role, "why": [f"uploaded in the {MODALITY_NAMES[role]} field"],
            "kind": "structural", "n_volumes": 1, "nifti": f"{role}.nii.gz", "reason": None,
            "files": 1, "file": f"series/{role}.nii.gz", "used_as": role}


def store_study(ctx: AppContext, db: Session, user: User, uploads: dict[str, Path],
                archive: Path | None, reference: str, work: Path,
                confirm_burned_in: bool = False) -> Case:
    """Check and store a 3D study, then queue its segmentation.

    Every stored volume is rewritten from its voxels and affine (:func:`_cleaned`): no text
    field or header extension of an uploaded file is kept. Volumes may lie on different grids
    (the job registers them onto the reference).

    Args:
        uploads: ``{modality: NIfTI file}`` (may be empty when ``archive`` is given); a file
            given for a role takes it over from the zip's series.
        archive: A zip of DICOM series, or ``None``.
        reference: The patient reference typed by the user (DICOM brings its own).
        work: A temporary folder.
        confirm_burned_in: The doctor confirms series that declare burned-in annotation.

    Raises:
        UploadError, DataError: nothing usable, unreadable files, no FLAIR, series of several
            patients or studies (422); a series with burned-in annotation, not confirmed (409).
    """
    unknown = set(uploads) - set(MODALITY_NAMES)
    if unknown:
        raise UploadError(f"unknown modality {sorted(unknown)}",
                          f"use {', '.join(MODALITY_NAMES)}", 422)
    alias = ""
    burned: list[str] = []
    entries: list[dict[str, Any]] = []
    kept: dict[str, Path] = {}
    roles: dict[str, str] = {}
    if archive is not None:
        entries, kept, roles, alias = import_archive(ctx, archive, work, confirm_burned_in,
                                                     burned)
    check_volumes(uploads)
    for m, path in uploads.items():
        for entry in entries:
            if entry.get("used_as") == m:
                del entry["used_as"]
                entry["not_used"] = f"replaced by the uploaded {MODALITY_NAMES[m]} file"
        entries.append(_nifti_entry(m))
        kept[f"series/{m}.nii.gz"] = path
        roles[m] = f"series/{m}.nii.gz"
    if not kept and archive is None:
        raise UploadError("no volume was uploaded", "add at least the FLAIR volume (NIfTI) or "
                          "a zip of DICOM series", 422)
    if "flair" not in roles:
        message, hint = no_flair(entries, series_label, _found)
        raise UploadError(message, hint if "cannot be used" in message else NO_FLAIR_HINT, 422)
    files: dict[str, Any] = {
        name: ctx.store.put_file(_cleaned(p, work / f"clean-{k}.nii.gz"))
        for k, (name, p) in enumerate(kept.items())}
    files[SERIES_JSON] = ctx.store.put_bytes(json.dumps(entries, indent=1).encode())
    files[ROLES_JSON] = ctx.store.put_bytes(json.dumps(roles).encode())
    dates = sorted({str(e["study_date"]) for e in entries if e.get("study_date")})
    case = repo.add_case(db, "3d", alias or patient_pseudonym(ctx, reference), user,
                         role_files(files, roles), {"study_date": dates[0]} if dates else None,
                         "new", None, "",
                         note="modalities: " + ", ".join(MODALITY_NAMES[m] for m in
                                                        MODALITY_NAMES if m in roles))
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
