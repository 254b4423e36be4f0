"""The web app and the PACS: search it, pull a study into the worklist, and file a case's
results (DICOM SEG + Comprehensive 3D SR) back into the study once a doctor approves.

Identity. The app's store stays de-identified: a pulled study goes through the same
de-identifying import as an upload (:func:`mrimaster.serving.studies.store_study`). Filing
back needs the original identifiers (PatientID, PatientName, StudyInstanceUID,
AccessionNumber, SeriesInstanceUID per series number): they are read from the retrieved files
before the import and kept only as one Fernet token (AES-128-CBC + HMAC-SHA256) in
``pacs_links``, under the key ``MRIMASTER_LINK_KEY`` (or the file ``MRIMASTER_LINK_KEY_FILE``).
Only :func:`send_results` decrypts it, and every decryption is audited (``pacs-link-read``,
with who). Without a key, pulling and sending are refused (a link is never encrypted under a
key made up from nothing). Audit details and recorded send outcomes name the case, never the
patient or the study; PACS messages are scrubbed of the link's values before they are kept.

Nothing half-sent or half-stored. The link row is written in the same transaction as the case
(:func:`_link_new_case`). The SEG and SR go in one STOW-RS request; their SOP Instance UIDs are
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
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from mrimaster.errors import MRIMasterError
from mrimaster.pacs import Pacs, PacsError, StudySummary, pacs_config
from mrimaster.serving import masks, studies
from mrimaster.serving.cases import UploadError, strip_paths
from mrimaster.serving.context import AppContext
from mrimaster.storage import repository as repo
from mrimaster.storage.pacs_tables import PacsLink, PacsSend
from mrimaster.storage.tables import Case, User

log = logging.getLogger(__name__)
REVIEWER_ROLES = ("radiologist", "admin")
"""Roles that may review cases, hence approve sending their results."""
SENDABLE_STATUSES = ("ai-read", "referred", "reviewed")
LINK_FIELDS = ("patient_id", "patient_name", "study_uid", "accession")


class PacsDisabled(MRIMasterError):
    """The PACS or the link key is not configured (the app answers 503)."""


def link_fernet(env: Mapping[str, str] | None = None) -> Any:
    """The link's cipher (``cryptography.fernet.Fernet``) from ``MRIMASTER_LINK_KEY`` or
    ``MRIMASTER_LINK_KEY_FILE`` (a Fernet key: 32 url-safe base64-encoded bytes).

    Raises:
        PacsDisabled: neither set, the file unreadable, or not a Fernet key.
    """
    from cryptography.fernet import Fernet

    env = os.environ if env is None else env
    key = env.get("MRIMASTER_LINK_KEY", "").strip()
    hint = ("set MRIMASTER_LINK_KEY (or MRIMASTER_LINK_KEY_FILE) to a Fernet key: python -c "
            "'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'; "
            "keep it: without it no pulled case can be filed back")
    if not key and env.get("MRIMASTER_LINK_KEY_FILE"):
        try:
            key = Path(env["MRIMASTER_LINK_KEY_FILE"]).read_text().strip()
        except OSError as exc:
            raise PacsDisabled(f"cannot read the PACS link key file ({exc.strerror})",
                               hint) from None
    if not key:
        raise PacsDisabled("PACS pulling and sending are disabled: no link key is set", hint)
    try:
        return Fernet(key.encode())
    except ValueError:
        raise PacsDisabled("the PACS link key is not a Fernet key", hint) from None


def connect(env: Mapping[str, str] | None = None) -> Pacs:
    """The configured PACS (``MRIMASTER_DICOMWEB_URL``...).

    Raises:
        PacsDisabled: no PACS configured, or bad settings.
    """
    try:
        return Pacs(pacs_config(env))
    except PacsError as exc:
        raise PacsDisabled(exc.message, exc.hint) from None


# -- search -----------------------------------------------------------------------------------

def search(pacs: Pacs, db: Session, user: User, patient_id: str = "", date_range: str = "",
           accession: str = "", limit: int = 50) -> list[StudySummary]:
    """Studies on the PACS matching the filters (QIDO-RS). Audited without the filters (they
    identify a patient), with the number found.

    Raises:
        UploadError: no filter (422); PacsError: as :meth:`Pacs.search_studies`.
    """
    if not (patient_id.strip() or date_range.strip() or accession.strip()):
        raise UploadError("give a patient ID, a date range or an accession number",
                          "the PACS is not listed whole", 422)
    found = pacs.search_studies(patient_id=patient_id.strip() or None,
                                date_range=date_range.strip() or None,
                                accession=accession.strip() or None, limit=limit)
    repo.audit(db, user.username, "pacs-search", "PACS", f"{len(found)} studies")
    db.commit()
    return found


# -- pull -------------------------------------------------------------------------------------

def read_identifiers(files: Sequence[Path]) -> dict[str, Any]:
    """The original identifiers of a retrieved study: ``patient_id``, ``patient_name``,
    ``study_uid``, ``accession`` and ``series`` (``{series number: [SeriesInstanceUID...]}``).

    Raises:
        UploadError: no file, or files of several studies (422).
    """
    import pydicom

    link: dict[str, Any] = {"series": {}}
    studies_seen: set[str] = set()
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        studies_seen.add(str(ds.get("StudyInstanceUID", "")))
        for name, keyword in zip(LINK_FIELDS, ("PatientID", "PatientName", "StudyInstanceUID",
                                               "AccessionNumber"), strict=True):
            link.setdefault(name, str(ds.get(keyword, "") or ""))
        number = ds.get("SeriesNumber")
        uids = link["series"].setdefault(str(number if number is not None else ""), [])
        if str(ds.SeriesInstanceUID) not in uids:
            uids.append(str(ds.SeriesInstanceUID))
    if not files or len(studies_seen) != 1:
        raise UploadError("the PACS sent no study or several", "pull one study at a time", 422)
    return link


@contextmanager
def _link_new_case(db: Session, blob: bytes) -> Iterator[None]:
    """While open, the first case flushed in ``db`` gets a :class:`PacsLink` with ``blob``,
    flushed and committed in the same transaction as the case (never a case without its link,
    nor a link without its case)."""
    new: list[Case] = []

    def after_flush(session: Session, _ctx: Any) -> None:
        new.extend(o for o in session.new if isinstance(o, Case))

    def after_postexec(session: Session, _ctx: Any) -> None:
        while new:
            session.add(PacsLink(case_id=new.pop().id, blob=blob))

    event.listen(db, "after_flush", after_flush)
    event.listen(db, "after_flush_postexec", after_postexec)
    try:
        yield
    finally:
        event.remove(db, "after_flush", after_flush)
        event.remove(db, "after_flush_postexec", after_postexec)


def store_linked(ctx: AppContext, db: Session, user: User, folder: Path, files: Sequence[Path],
                 fernet: Any, *, confirm_burned_in: bool = False,
                 expected_study: str | None = None) -> Case:
    """Store the DICOM study in ``folder`` (its Part-10 ``files``) de-identified as a 3D case
    with a queued segmentation, its original identifiers kept only as a Fernet token in the
    same transaction (flushed, not committed).

    Raises:
        PacsError: the files are of another study than ``expected_study``.
        UploadError, DataError: as :func:`studies.store_study` (no FLAIR, burned-in, several
            studies...).
    """
    with ctx.store.work_dir() as work:
        link = read_identifiers(files)
        if expected_study is not None and link["study_uid"] != expected_study:
            raise PacsError("the PACS sent another study than the one asked for",
                            "check the PACS; nothing was stored")
        blob = fernet.encrypt(json.dumps(link, sort_keys=True).encode())
        try:
            with _link_new_case(db, blob):
                case = studies.store_study(ctx, db, user, {}, folder, "", work,
                                           confirm_burned_in)
        except MRIMasterError as exc:  # PACS-side texts may name the patient or the study
            exc.message = _scrub(ctx, exc.message, link)
            exc.args = (exc.message,)
            raise
    if db.get(PacsLink, case.id) is None:  # the flush hook is the guarantee: check it
        raise AssertionError(f"case {case.id} was stored without its PACS link")
    return case


def pull_study(ctx: AppContext, db: Session, user: User, study_uid: str, *,
               confirm_burned_in: bool = False, pacs: Pacs | None = None,
               fernet: Any = None) -> Case:
    """Retrieve ``study_uid`` (WADO-RS), keep its original identifiers encrypted, and store it
    de-identified as a 3D case with a queued segmentation (as an upload, through
    :func:`store_linked`). The retrieved files live only in a temporary folder, removed
    whatever happens.

    Raises:
        PacsDisabled: no link key or no PACS (checked before any transfer).
        PacsError: the retrieval failed or was incomplete.
        UploadError, DataError: as :func:`studies.store_study` (no FLAIR, burned-in...).
    """
    fernet = fernet or link_fernet()
    pacs = pacs or connect()
    study_uid = study_uid.strip()
    with ctx.store.work_dir() as work:
        files = pacs.retrieve_study(study_uid, work / "pacs")
        case = store_linked(ctx, db, user, work / "pacs", files, fernet,
                            confirm_burned_in=confirm_burned_in, expected_study=study_uid)
    repo.audit(db, user.username, "pacs-pull", f"case {case.id}",
               f"{len(files)} instances retrieved and stored de-identified")
    db.commit()
    return case


# -- send -------------------------------------------------------------------------------------

def is_linked(db: Session, case_id: int) -> bool:
    return db.get(PacsLink, case_id) is not None


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


def _scrub(ctx: AppContext, text: str, link: dict[str, Any]) -> str:
    """``text`` without the link's values (the PACS' messages name studies) or server
    paths."""
    values = [str(link.get(k) or "") for k in LINK_FIELDS]
    values += [u for uids in link.get("series", {}).values() for u in uids]
    for value in sorted({v for v in values if len(v) >= 3}, key=len, reverse=True):
        text = text.replace(value, "[original identifier]")
    return strip_paths(text, ctx.config.app_dir, ctx.store.root, tempfile.gettempdir())


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
        message = (_scrub(ctx, str(exc), link) if isinstance(exc, MRIMasterError)
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
                            exc.hint and _scrub(ctx, exc.hint, link), status) from None
        raise
    detail = (f"approved by {user.username}; stored SEG {uids['SEG']} and SR {uids['SR']} "
              f"(reference series {_reference_series(ctx, case)['series_number']})")
    row = PacsSend(case_id=case.id, by=user.username, state="ok", detail=detail)
    db.add(row)
    repo.audit(db, user.username, "pacs-send", f"case {case.id}", f"ok: {detail}")
    db.commit()
    log.info("case %d: results filed back to the PACS", case.id)
    return row


def summary_view(s: StudySummary) -> dict[str, Any]:
    return {"study_uid": s.study_uid, "patient_id": s.patient_id,
            "patient_name": s.patient_name, "study_date": s.study_date,
            "accession": s.accession, "description": s.description,
            "modalities": list(s.modalities), "n_series": s.n_series,
            "n_instances": s.n_instances}
