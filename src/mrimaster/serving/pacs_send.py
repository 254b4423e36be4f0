"""Filing a pulled case's results (DICOM SEG + Comprehensive 3D SR) back into its study on the
PACS once a doctor approves, and what the case page shows about it (readiness, earlier sends).

Identity. A case's original identifiers are kept encrypted by
:mod:`mrimaster.serving.pacs_service`; only :func:`send_results` decrypts them, and every
decryption is audited (``pacs-link-read``, with who). Without a key, sending is refused. Audit
details and recorded send outcomes name the case, never the patient or the study; PACS messages
are scrubbed of the link's values before they are kept.

Nothing half-sent. The SEG and SR go in one STOW-RS request; their SOP Instance UIDs are
derived from the server's secret key, the case and its mask's digest, so a retry re-sends the
same instances (a PACS keeps one copy), while a new segmentation gets new ones. A failed
send changes nothing on the case; it is recorded (``pacs_sends``, state ``failed``) with its
message, and the case page offers a retry.

Settings are read when a request needs them: ``MRIMASTER_DICOMWEB_*``
(:func:`mrimaster.pacs.pacs_config`), ``MRIMASTER_LINK_KEY`` / ``MRIMASTER_LINK_KEY_FILE``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mrimaster.errors import MRIMasterError
from mrimaster.pacs import Pacs, PacsError
from mrimaster.serving import masks, studies
from mrimaster.serving.cases import UploadError
from mrimaster.serving.context import AppContext
from mrimaster.serving.pacs_service import (
    PacsDisabled,
    connect,
    is_linked,
    link_fernet,
    scrub_link_values,
)
from mrimaster.storage import repository as repo
from mrimaster.storage.pacs_tables import PacsLink, PacsSend
from mrimaster.storage.tables import Case, User

log = logging.getLogger(__name__)
REVIEWER_ROLES = ("radiologist", "admin")
"""Roles that may review cases, hence approve sending their results."""
SENDABLE_STATUSES = ("ai-read", "referred", "reviewed")


def sends_of(db: Session, case_id: int) -> list[PacsSend]:
    """The case's send attempts, newest first."""
    return list(db.scalars(select(PacsSend).where(PacsSend.case_id == case_id)
                           .order_by(PacsSend.id.desc())))


def send_view(row: PacsSend) -> dict[str, Any]:
    return {"by": row.by, "at": row.at.isoformat(), "state": row.state, "detail": row.detail}


def _reference_series(ctx: AppContext, case: Case) -> dict[str, Any]:
    """The series.json entry of the series the mask lies on (the segmentation's reference)."""
    study = (case.result or {}).get("study") or {}
    role = (study.get("reference") or {}).get("role")
    name = studies.roles_of(ctx, case).get(str(role))
    entry = next((e for e in studies.series_of(ctx, case) if e.get("file") == name), None)
    if entry is None or entry.get("series_number") is None:
        raise UploadError(f"case {case.id}'s reference series is not a DICOM series of the "
                          "PACS study", "only a study pulled from the PACS can be sent", 409)
    return entry


def readiness(ctx: AppContext, db: Session, case: Case) -> str | None:
    """Why the case's results cannot be sent now, or ``None`` when they can."""
    if not is_linked(db, case.id):
        return "this case was not pulled from the PACS"
    job = repo.job_of(db, case.id)
    if job is not None and job.state in ("queued", "running"):
        return "the segmentation is still running"
    if case.status not in SENDABLE_STATUSES or "mask.nii.gz" not in case.files \
            or not (case.result or {}).get("volumes_ml"):
        return "the case has no segmentation to send"
    return None


def panel(ctx: AppContext, db: Session, case: Case) -> dict[str, Any] | None:
    """What the case page shows about filing back: ``None`` for a case not pulled from the
    PACS; else what would be sent, whether it can be now, and the earlier sends."""
    if not is_linked(db, case.id):
        return None
    result = case.result or {}
    reference = ((result.get("study") or {}).get("reference") or {}).get("series", "")
    sends = [send_view(s) for s in sends_of(db, case.id)]
    return {"ready": readiness(ctx, db, case), "reference": reference,
            "volumes_ml": result.get("volumes_ml") or {},
            "convention": result.get("label_convention", ""), "sends": sends,
            "sent": any(s["state"] == "ok" for s in sends),
            "last_failed": bool(sends) and sends[0]["state"] == "failed"}


def _uid(ctx: AppContext, case: Case, what: str, mask_digest: str | None = None) -> str:
    """A UID fixed by the server's key, the case, the mask sent and ``what`` (see the module
    docstring: a retry re-sends the same instances; another reviewed version, new ones)."""
    from pydicom.uid import generate_uid

    mask = mask_digest or str(case.files.get("mask.nii.gz", ""))
    secret = hmac.new(ctx.key, f"pacs-send|{case.id}|{mask}|{what}".encode(),
                      hashlib.sha256).hexdigest()
    return str(generate_uid(entropy_srcs=[secret]))


def _set_uids(ds: Any, series_uid: str, sop_uid: str) -> None:
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = sop_uid
    if getattr(ds, "file_meta", None) is not None:
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid


def _read_link(db: Session, fernet: Any, case: Case, user: User) -> dict[str, Any]:
    from cryptography.fernet import InvalidToken

    row = db.get(PacsLink, case.id)
    if row is None:
        raise UploadError(f"case {case.id} was not pulled from the PACS",
                          "only pulled studies can be filed back", 409)
    repo.audit(db, user.username, "pacs-link-read", f"case {case.id}", "to send the results")
    db.commit()
    try:
        link: dict[str, Any] = json.loads(fernet.decrypt(row.blob))
    except InvalidToken:
        raise PacsDisabled(f"case {case.id}'s PACS link cannot be decrypted with this key",
                           "set MRIMASTER_LINK_KEY back to the key in use when the study was "
                           "pulled") from None
    return link


def _volumes(db: Session, case: Case) -> dict[str, Any]:
    """The volumes of the mask that is sent: the reviewed version's, else the AI's."""
    chosen = masks.reviewed(db, case)
    if chosen is not None and chosen.get("volumes_ml"):
        return dict(chosen["volumes_ml"])
    return dict((case.result or {}).get("volumes_ml") or {})


def build_results(ctx: AppContext, pacs: Pacs, case: Case, link: dict[str, Any],
                  work: Path, mask_digest: str | None = None,
                  volumes_ml: dict[str, Any] | None = None) -> list[Any]:
    """The SEG of the case's mask on its reference series, re-retrieved from the PACS, and the
    SR of its volumes: ``[seg, sr]`` (pydicom datasets) in the original study, under the
    patient's own identifiers. ``mask_digest`` and ``volumes_ml``: the reviewed version's
    (default: the AI's mask and volumes).

    Raises:
        PacsError: the retrieval failed; UploadError: the series is gone from the study (409);
        DataError: the mask does not fit the series.
    """
    import nibabel as nib
    import pydicom

    from mrimaster.imaging.dicom_seg import write_dicom_seg
    from mrimaster.pacs.results import build_volume_report

    entry = _reference_series(ctx, case)
    uids = link["series"].get(str(entry["series_number"]), [])
    if len(uids) != 1:
        raise UploadError(f"the reference series (number {entry['series_number']}) is "
                          f"{'ambiguous' if uids else 'unknown'} in the pulled study",
                          "send the results from the command line (`mrimaster pacs "
                          "segment`)", 409)
    files = pacs.retrieve_study(link["study_uid"], work / "study")
    source = [p for p in files
              if str(pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID) == uids[0]]
    if not source:
        raise UploadError("the reference series is no longer in the study on the PACS",
                          "ask the PACS administrator; nothing was sent", 409)
    mask = work / "mask.nii.gz"
    mask.write_bytes(ctx.store.read(mask_digest or case.files["mask.nii.gz"]))
    result = case.result or {}
    convention = str(result.get("label_convention", "brats2021"))
    write_dicom_seg(nib.load(mask), source, work / "seg.dcm", convention=convention,
                    algorithm_version=case.model or "unknown")
    seg = pydicom.dcmread(work / "seg.dcm")
    _set_uids(seg, _uid(ctx, case, "seg-series", mask_digest),
              _uid(ctx, case, "seg", mask_digest))
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in source]
    sr = build_volume_report(seg, headers, volumes_ml or result["volumes_ml"], convention,
                             model_version=case.model or "unknown")
    _set_uids(sr, _uid(ctx, case, "sr-series", mask_digest), _uid(ctx, case, "sr", mask_digest))
    for ds in (seg, sr):  # never file results into another study or patient
        if str(ds.StudyInstanceUID) != link["study_uid"] or \
                str(ds.PatientID) != link["patient_id"]:
            raise PacsError("the results do not carry the pulled study's identifiers",
                            "report this: nothing was sent")
    return [seg, sr]


def send_results(ctx: AppContext, db: Session, user: User, case: Case, *,
                 pacs: Pacs | None = None, fernet: Any = None) -> PacsSend:
    """File the case's SEG and SR back into its study, approved by ``user``.

    Every attempt is recorded (``pacs_sends``) and audited (``pacs-send``); the case itself is
    not changed.

    Raises:
        UploadError: the user may not approve (403), the case cannot be sent yet (409).
        PacsDisabled: no link key or no PACS.
        PacsError: the PACS was unreachable, slow or refused (recorded as ``failed``; the
            message is kept without identifiers and a retry sends the same instances).
    """
    if user.role not in REVIEWER_ROLES:
        raise UploadError("your role may not approve results", "ask a radiologist", 403)
    why = readiness(ctx, db, case)
    if why:
        raise UploadError(f"case {case.id} cannot be sent: {why}",
                          "wait for the segmentation, or pull the study from the PACS", 409)
    fernet = fernet or link_fernet()
    pacs = pacs or connect()
    link = _read_link(db, fernet, case, user)
    try:
        with ctx.store.work_dir() as work:
            datasets = build_results(ctx, pacs, case, link, work,
                                     masks.reviewed_digest(db, case), _volumes(db, case))
            uids = {"SEG": str(datasets[0].SOPInstanceUID),
                    "SR": str(datasets[1].SOPInstanceUID)}
            stored = pacs.store(datasets)
        if not stored.ok:
            names = {u: n for n, u in uids.items()}
            refused = "; ".join(f"{names.get(u, u)}: {why}" for u, why in stored.failed.items())
            raise PacsError(f"the PACS refused part of the results ({refused})",
                            "retry: the same instances are sent again")
    except Exception as exc:
        message = (scrub_link_values(ctx, str(exc), link) if isinstance(exc, MRIMasterError)
                   else f"the send failed ({type(exc).__name__}); see the server log")
        if not isinstance(exc, MRIMasterError):
            log.exception("PACS send of case %d", case.id)
        db.rollback()
        db.add(PacsSend(case_id=case.id, by=user.username, state="failed",
                        detail=message[:2000]))
        repo.audit(db, user.username, "pacs-send", f"case {case.id}", f"failed: {message}")
        db.commit()
        if isinstance(exc, MRIMasterError):
            status = exc.status if isinstance(exc, PacsError) else None
            raise PacsError(message.split("\n  hint:")[0],
                            exc.hint and scrub_link_values(ctx, exc.hint, link), status) from None
        raise
    detail = (f"approved by {user.username}; stored SEG {uids['SEG']} and SR {uids['SR']} "
              f"(reference series {_reference_series(ctx, case)['series_number']})")
    row = PacsSend(case_id=case.id, by=user.username, state="ok", detail=detail)
    db.add(row)
    repo.audit(db, user.username, "pacs-send", f"case {case.id}", f"ok: {detail}")
    db.commit()
    log.info("case %d: results filed back to the PACS", case.id)
    return row
