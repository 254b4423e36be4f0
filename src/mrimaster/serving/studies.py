"""3D studies: the files of a 3D case, reading its series and their roles, and changing the
roles (:func:`change_roles`); storing an uploaded study is :mod:`mrimaster.serving.study_upload`
(a DICOM zip: :mod:`mrimaster.serving.study_import`), the job itself runs in
:mod:`mrimaster.serving.seg_jobs`.

A DICOM zip goes through the imaging stage's importer
(:func:`mrimaster.imaging.dicom_import.import_study`): every structural series converted to a
volume is stored (``series/<name>.nii.gz``), with ``series.json`` listing every series found
(its role, why, and for a refused one the reason) and ``roles.json`` the role assignment
(``{role: case file}``), which a doctor may change (:func:`change_roles`). A NIfTI upload is
one series per field, its role the field's. ``<role>.nii.gz`` names the series of each role
(the slice viewer's images). The job runs :func:`mrimaster.segmentation.study.segment_study`:
every sequence registered onto the reference, skull-stripped when needed, segmented; the mask
comes back on the reference's grid, with the registration and brain-mask pictures and, when
the segmentation writes one, its uncertainty map (``uncertainty.nii.gz``). ``volumes.json``
is the case's result as written (its trust decision ``status``/``reason`` included); a result
its trust checks refer makes the case ``referred``, as a referred 2D read does."""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy.orm import Session

from mrimaster.serving.cases import UploadError
from mrimaster.serving.context import AppContext
from mrimaster.storage import repository as repo
from mrimaster.storage.tables import Case, Job, User

log = logging.getLogger(__name__)
MODALITY_NAMES = {"flair": "FLAIR", "t1": "T1", "t1ce": "T1-Gd", "t2": "T2"}
JOB_FAILED = "the segmentation failed; upload the study again or ask an administrator"
"""What users see of a job that failed for a reason that is not about their data."""
SERIES_JSON = "series.json"
ROLES_JSON = "roles.json"
UNCERTAINTY = "uncertainty.nii.gz"
"""The per-voxel uncertainty map a segmentation may write beside the mask (``volumes.json``'s
``uncertainty_file``: a NIfTI on the mask's grid, 0 = the ensemble's members agree, up to 1);
stored under this name, the viewer's *Uncertainty* overlay."""
OUTPUTS = ("mask.nii.gz", "brain_mask.nii.gz", "brain_mask", "overlay_", "registration_",
           "registered/", UNCERTAINTY)
"""Case files a segmentation writes (names or prefixes): replaced by the next one."""


REGISTERED = "registered/"
"""Prefix of the case files holding every sequence as its segmentation saw it (on the mask's
grid): ``registered/<role>.nii.gz``."""


def registered_files(case: Case) -> dict[str, str]:
    """``{role: store digest}`` of the case's ``registered/<role>.nii.gz`` files."""
    return {name.removeprefix(REGISTERED).removesuffix(".nii.gz"): digest
            for name, digest in case.files.items()
            if name.startswith(REGISTERED) and name.endswith(".nii.gz")
            and isinstance(digest, str)}


def series_label(entry: dict[str, Any]) -> str:
    number = entry.get("series_number")
    name = repr(entry.get("description") or "unnamed series")
    return f"{name} (series {number})" if number is not None else name


def role_files(files: dict[str, Any], roles: dict[str, str]) -> dict[str, Any]:
    """``files`` with ``<role>.nii.gz`` naming the series of each role in ``roles``."""
    out = {k: v for k, v in files.items()
           if not (k.endswith(".nii.gz") and k[:-7] in MODALITY_NAMES)}
    return {**out, **{f"{role}.nii.gz": files[name] for role, name in sorted(roles.items())}}


def _read_json(ctx: AppContext, case: Case, name: str) -> Any:
    digest = case.files.get(name)
    if not isinstance(digest, str) or not ctx.store.exists(digest):
        return None
    return json.loads(ctx.store.read(digest))


def roles_of(ctx: AppContext, case: Case) -> dict[str, str]:
    """The case's role assignment ``{role: case file}`` (cases stored before series were
    kept: ``<role>.nii.gz``)."""
    roles = _read_json(ctx, case, ROLES_JSON)
    if isinstance(roles, dict):
        return {str(r): str(n) for r, n in roles.items()}
    return {n[:-7]: n for n in case.files
            if n.endswith(".nii.gz") and n[:-7] in MODALITY_NAMES}


def series_of(ctx: AppContext, case: Case) -> list[dict[str, Any]]:
    """The series of a 3D case as ``series.json`` lists them, each with ``assigned`` (its role
    now: the upload's or a doctor's choice) and ``detected`` (the importer's role)."""
    entries = _read_json(ctx, case, SERIES_JSON)
    if not isinstance(entries, list):
        return []
    by_file = {n: r for r, n in roles_of(ctx, case).items()}
    return [{**e, "detected": e.get("role"), "assigned": by_file.get(e.get("file") or "")}
            for e in entries]


def change_roles(ctx: AppContext, db: Session, user: User, case: Case,
                 assignment: dict[str, str | None]) -> Job:
    """Set the roles of a 3D case's series (``{case file: role or None}``; series not named
    keep theirs), audit the change and queue a new segmentation. A segmentation still queued
    or running with the old roles is superseded (ended, its result refused), so what the
    case shows is always the segmentation of the roles the doctor set.

    Raises:
        UploadError: not a 3D case, an unknown series or role, a role given to two series,
            no FLAIR (422).
    """
    if case.kind != "3d":
        raise UploadError(f"case {case.id} is not a 3D study", "roles belong to 3D series", 422)
    entries = series_of(ctx, case)
    stored = {e["file"]: e for e in entries if e.get("file")}
    unknown = sorted(set(assignment) - set(stored))
    if unknown:
        raise UploadError(f"case {case.id} has no series {', '.join(unknown)}",
                          f"its series: {', '.join(sorted(stored)) or 'none'}", 422)
    new = {name: e["assigned"] for name, e in stored.items()}
    for name, role in assignment.items():
        role = role or None
        if role is not None and role not in MODALITY_NAMES:
            raise UploadError(f"unknown role {role!r} for {series_label(stored[name])}",
                              f"choose one of {', '.join(MODALITY_NAMES)} or none", 422)
        new[name] = role
    roles: dict[str, str] = {}
    for name, role in new.items():
        if role is None:
            continue
        if role in roles:
            raise UploadError(f"two series are set to {MODALITY_NAMES[role]}: "
                              f"{series_label(stored[roles[role]])} and "
                              f"{series_label(stored[name])}",
                              "give each role to one series at most", 422)
        roles[role] = name
    if "flair" not in roles:
        raise UploadError("no series is set to FLAIR: every model segments with the FLAIR",
                          "set the FLAIR series' role to FLAIR", 422)
    changes = [f"{series_label(stored[n])}: {stored[n]['assigned'] or 'none'} -> "
               f"{new[n] or 'none'}" for n in stored if new[n] != stored[n]["assigned"]]
    if not changes:
        raise UploadError("the roles are unchanged", "change a role, then segment again", 422)
    files = dict(case.files)
    files[ROLES_JSON] = ctx.store.put_bytes(json.dumps(roles).encode())
    case.files = role_files(files, roles)
    case.status = "new"
    case.note = "modalities: " + ", ".join(MODALITY_NAMES[m] for m in MODALITY_NAMES
                                           if m in roles)
    repo.supersede_jobs(db, case.id, "superseded: the series' roles were changed and the "
                        "study is segmented again with the new roles")
    job = repo.add_job(db, case)
    repo.audit(db, user.username, "change-roles", f"case {case.id}", "; ".join(changes))
    db.commit()
    return job
