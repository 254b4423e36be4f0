"""The web app and the PACS, inward: search it, pull a study into the worklist, and keep the
study's original identifiers as an encrypted link (filing a case's results back into the
study: :mod:`mrimaster.serving.pacs_send`).

Identity. The app's store stays de-identified: a pulled study goes through the same
de-identifying import as an upload (:func:`mrimaster.serving.study_upload.store_study`). Filing
back needs the original identifiers (PatientID, PatientName, StudyInstanceUID,
AccessionNumber, SeriesInstanceUID per series number): they are read from the retrieved files
before the import and kept only as one Fernet token (AES-128-CBC + HMAC-SHA256) in
``pacs_links``, under the key ``MRIMASTER_LINK_KEY`` (or the file ``MRIMASTER_LINK_KEY_FILE``).
Only :func:`mrimaster.serving.pacs_send.send_results` decrypts it. Without a key, pulling and
sending are refused (a link is never encrypted under a key made up from nothing). Refusals
are scrubbed of the link's values (:func:`scrub_link_values`) before they are shown or kept.

Nothing half-stored. The link row is written in the same transaction as the case
(:func:`_link_new_case`).

Settings are read when a request needs them: ``MRIMASTER_DICOMWEB_*``
(:func:`mrimaster.pacs.pacs_config`), ``MRIMASTER_LINK_KEY`` / ``MRIMASTER_LINK_KEY_FILE``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from mrimaster.errors import MRIMasterError
from mrimaster.pacs import Pacs, PacsError, StudySummary, pacs_config
from mrimaster.serving import study_upload
from mrimaster.serving.cases import UploadError, strip_paths
from mrimaster.serving.context import AppContext
from mrimaster.storage import repository as repo
from mrimaster.storage.pacs_tables import PacsLink
from mrimaster.storage.tables import Case, User

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


def summary_view(s: StudySummary) -> dict[str, Any]:
    return {"study_uid": s.study_uid, "patient_id": s.patient_id,
            "patient_name": s.patient_name, "study_date": s.study_date,
            "accession": s.accession, "description": s.description,
            "modalities": list(s.modalities), "n_series": s.n_series,
            "n_instances": s.n_instances}


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
        UploadError, DataError: as :func:`study_upload.store_study` (no FLAIR, burned-in,
            several studies...).
    """
    with ctx.store.work_dir() as work:
        link = read_identifiers(files)
        if expected_study is not None and link["study_uid"] != expected_study:
            raise PacsError("the PACS sent another study than the one asked for",
                            "check the PACS; nothing was stored")
        blob = fernet.encrypt(json.dumps(link, sort_keys=True).encode())
        try:
            with _link_new_case(db, blob):
                case = study_upload.store_study(ctx, db, user, {}, folder, "", work,
                                                confirm_burned_in)
        except MRIMasterError as exc:  # PACS-side texts may name the patient or the study
            exc.message = scrub_link_values(ctx, exc.message, link)
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
        UploadError, DataError: as :func:`study_upload.store_study` (no FLAIR, burned-in...).
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


# -- the link ---------------------------------------------------------------------------------

def is_linked(db: Session, case_id: int) -> bool:
    return db.get(PacsLink, case_id) is not None


def scrub_link_values(ctx: AppContext, text: str, link: dict[str, Any]) -> str:
    """``text`` without the link's values (the PACS' messages name studies) or server
    paths."""
    values = [str(link.get(k) or "") for k in LINK_FIELDS]
    values += [u for uids in link.get("series", {}).values() for u in uids]
    for value in sorted({v for v in values if len(v) >= 3}, key=len, reverse=True):
        text = text.replace(value, "[original identifier]")
    return strip_paths(text, ctx.config.app_dir, ctx.store.root, tempfile.gettempdir())
