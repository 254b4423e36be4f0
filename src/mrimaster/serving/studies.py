"""3D studies: storing an uploaded study (NIfTI files or a zip of DICOM series) as a case with
a queued segmentation job, and changing the roles of its series; the job itself runs in
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
SERIES_JSON = "series.json"
ROLES_JSON = "roles.json"
UNCERTAINTY = "uncertainty.nii.gz"
"""The per-voxel uncertainty map a segmentation may write beside the mask (``volumes.json``'s
``uncertainty_file``: a NIfTI on the mask's grid, 0 = the ensemble's members agree, up to 1);
stored under this name, the viewer's *Uncertainty* overlay."""
OUTPUTS = ("mask.nii.gz", "brain_mask.nii.gz", "brain_mask", "overlay_", "registration_",
           "registered/", UNCERTAINTY)
"""Case files a segmentation writes (names or prefixes): replaced by the next one."""
NO_FLAIR_HINT = ("add the FLAIR series; if one is there under another name, set its role to "
                 "FLAIR")


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


def _series_label(entry: dict[str, Any]) -> str:
    number = entry.get("series_number")
    name = repr(entry.get("description") or "unnamed series")
    return f"{name} (series {number})" if number is not None else name


def _found(entries: list[dict[str, Any]]) -> str:
    """Each series and what it is: its role when it is usable, else why not."""
    def what(e: dict[str, Any]) -> str:
        role = e.get("role") if e.get("file") else None
        return str(role or e.get("reason") or e.get("kind"))

    return "; ".join(f"{_series_label(e)}: {what(e)}" for e in entries) or "nothing"


def _import_archive(ctx: AppContext, archive: Path, work: Path, confirm_burned_in: bool,
                    burned: list[str]) -> tuple[list[dict[str, Any]], dict[str, Path],
                                                dict[str, str], str]:
    """Convert a DICOM zip; returns ``(series.json entries, {case file: NIfTI}, {role: case
    file}, patient pseudonym)``. Every structural series converted to a volume is kept; a role
    found on several series goes to the one with the smallest voxels (as the imaging stage
    chooses).

    Raises:
        DataError: an unreadable or over-limit zip, no DICOM.
        UploadError: series of several patients or studies (422); a kept series declaring
            burned-in annotation, not confirmed (409).
    """
    import pydicom

    from mrimaster.imaging.dicom_import import import_study
    from mrimaster.imaging.inputs import check_one_study, smallest_voxels
    from mrimaster.storage.deid import burned_in_reason

    folder = work / "import"
    records = import_study(archive, folder, extract_to=work / "dicom")
    entries: list[dict[str, Any]] = []
    kept: dict[str, Path] = {}
    candidates: dict[str, list[str]] = {}
    identities: dict[str, tuple[str, str]] = {}
    sources: dict[str, list[Path]] = {}
    uploaded: dict[str, str] = {}
    for index, record in enumerate(records):
        entry = _without_description({**record.to_json(), "file": None})
        entry = _without_header_text(entry, record.sources)
        if record.nifti and record.kind == "structural":
            name = f"series/{index + 1}.nii.gz"  # not the converter's name: it quotes the
            entry["nifti"] = name.removeprefix("series/")  # series description
            entry["file"] = name
            kept[name] = folder / record.nifti
            identities[name] = record.identity
            uploaded[name] = _series_label(record.to_json())  # only for the refusal below
            sources[name] = list(record.sources)
            if record.role in MODALITY_NAMES:
                candidates.setdefault(record.role, []).append(name)
        entries.append(entry)
    labels = {e["file"]: _series_label(e) for e in entries if e["file"]}
    check_one_study({labels[name]: identity for name, identity in identities.items()})
    chosen = smallest_voxels({role: [kept[n] for n in names]
                              for role, names in candidates.items()})
    roles = {role: next(n for n in names if kept[n] == chosen[role])
             for role, names in candidates.items()}
    for entry in entries:
        used = [r for r, n in roles.items() if entry["file"] == n]
        if used:
            entry["used_as"] = used[0]
        elif entry["file"] and entry["role"] in roles:
            entry["not_used"] = (f"another {MODALITY_NAMES[entry['role']]} series has "
                                 "smaller voxels")
    reasons = {}
    for name, files in sources.items():
        for path in files:
            reason = burned_in_reason(pydicom.dcmread(path, stop_before_pixels=True))
            if reason:
                reasons[name] = reason
                break
    if reasons and not confirm_burned_in:
        # the refusal goes back to the uploader only: it names their series as they know them
        names = "; ".join(f"{uploaded[n]}: {why}" for n, why in reasons.items())
        raise UploadError(f"series with burned-in annotation ({names}): text in the pixels "
                          "is not removed by de-identification",
                          "check the series in your viewer: if no patient identifier is "
                          "burned in, upload again with 'confirm burned-in annotation' "
                          "(API: confirm_burned_in=true); else leave those series out", 409)
    burned += [f"{labels[n]}: {why}" for n, why in reasons.items()]
    alias = ""
    if sources:
        first = pydicom.dcmread(next(iter(sources.values()))[0], stop_before_pixels=True)
        alias = pseudonym(ctx.key, patient_key(first))
    return entries, kept, roles, alias


def _without_description(entry: dict[str, Any]) -> dict[str, Any]:
    """A ``series.json`` entry without the series description, wherever it is quoted (its
    ``why`` and ``reason``): de-identification removes Series Description (PS3.15 Table
    E.1-1: X), since people type names into it; the app stores and shows what is left."""
    description = str(entry.get("description") or "")

    def clean(text: str) -> str:  # "series 'AX FLAIR' mixes ..." -> "the series mixes ..."
        for quoted in (f"series {description!r}", repr(description), description):
            text = text.replace(quoted, "the series")
        return text

    if description:
        entry["why"] = [clean(str(w)) for w in entry.get("why") or []]
        if entry.get("reason"):
            entry["reason"] = clean(str(entry["reason"]))
    entry["description"] = ""
    return entry


def _without_header_text(entry: dict[str, Any], sources: list[Path]) -> dict[str, Any]:
    """A ``series.json`` entry whose ``why`` and ``reason`` quote no value that
    de-identification removes or replaces in the series' first file
    (:func:`mrimaster.storage.deid.identifying_text`: the role decision quotes
    ContrastBolusAgent and ProtocolName, a refusal may quote the Series Instance UID) nor the
    name of one of its files or folders (a refusal quotes the file at fault; exports name
    files by SOP Instance UID, people by patient; a series without a UID is named by its
    folder); each is shown as ``(removed)``."""
    import re

    import pydicom

    from mrimaster.storage.deid import identifying_text

    if not sources:
        return entry
    header = pydicom.dcmread(sources[0], stop_before_pixels=True)
    files = {p.name for p in sources} | {str(p.parent) for p in sources}  # no UID: the folder
    values = sorted(identifying_text(header) | files, key=len, reverse=True)
    if not values:
        return entry
    quoted = re.compile("|".join(rf"(?<![\w.]){re.escape(v)}(?![\w.])" for v in values))
    entry["why"] = [quoted.sub("(removed)", str(w)) for w in entry.get("why") or []]
    if entry.get("reason"):
        entry["reason"] = quoted.sub("(removed)", str(entry["reason"]))
    return entry


def _nifti_entry(role: str) -> dict[str, Any]:
    return {"series_number": None, "description": f"{MODALITY_NAMES[role]} (NIfTI upload)",
            "role": role, "why": [f"uploaded in the {MODALITY_NAMES[role]} field"],
            "kind": "structural", "n_volumes": 1, "nifti": f"{role}.nii.gz", "reason": None,
            "files": 1, "file": f"series/{role}.nii.gz", "used_as": role}


def _role_files(files: dict[str, Any], roles: dict[str, str]) -> dict[str, Any]:
    """``files`` with ``<role>.nii.gz`` naming the series of each role in ``roles``."""
    out = {k: v for k, v in files.items()
           if not (k.endswith(".nii.gz") and k[:-7] in MODALITY_NAMES)}
    return {**out, **{f"{role}.nii.gz": files[name] for role, name in sorted(roles.items())}}


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
        entries, kept, roles, alias = _import_archive(ctx, archive, work, confirm_burned_in,
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
        raise UploadError(f"the study has no FLAIR series (found: {_found(entries)})",
                          NO_FLAIR_HINT, 422)
    files: dict[str, Any] = {
        name: ctx.store.put_file(_cleaned(p, work / f"clean-{k}.nii.gz"))
        for k, (name, p) in enumerate(kept.items())}
    files[SERIES_JSON] = ctx.store.put_bytes(json.dumps(entries, indent=1).encode())
    files[ROLES_JSON] = ctx.store.put_bytes(json.dumps(roles).encode())
    case = repo.add_case(db, "3d", alias or patient_pseudonym(ctx, reference), user,
                         _role_files(files, roles), None, "new", None, "",
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
    keep theirs), audit the change and queue a new segmentation.

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
            raise UploadError(f"unknown role {role!r} for {_series_label(stored[name])}",
                              f"choose one of {', '.join(MODALITY_NAMES)} or none", 422)
        new[name] = role
    roles: dict[str, str] = {}
    for name, role in new.items():
        if role is None:
            continue
        if role in roles:
            raise UploadError(f"two series are set to {MODALITY_NAMES[role]}: "
                              f"{_series_label(stored[roles[role]])} and "
                              f"{_series_label(stored[name])}",
                              "give each role to one series at most", 422)
        roles[role] = name
    if "flair" not in roles:
        raise UploadError("no series is set to FLAIR: every model segments with the FLAIR",
                          "set the FLAIR series' role to FLAIR", 422)
    changes = [f"{_series_label(stored[n])}: {stored[n]['assigned'] or 'none'} -> "
               f"{new[n] or 'none'}" for n in stored if new[n] != stored[n]["assigned"]]
    if not changes:
        raise UploadError("the roles are unchanged", "change a role, then segment again", 422)
    files = dict(case.files)
    files[ROLES_JSON] = ctx.store.put_bytes(json.dumps(roles).encode())
    case.files = _role_files(files, roles)
    case.status = "new"
    case.note = "modalities: " + ", ".join(MODALITY_NAMES[m] for m in MODALITY_NAMES
                                           if m in roles)
    job = repo.add_job(db, case)
    repo.audit(db, user.username, "change-roles", f"case {case.id}", "; ".join(changes))
    db.commit()
    return job
