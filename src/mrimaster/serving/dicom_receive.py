"""Studies that a scanner or a PACS routes to MRIMaster over DICOM (C-STORE, received by
:mod:`mrimaster.pacs.receiver`): each complete study is stored as a pulled one is
(:func:`mrimaster.serving.pacs_service.store_linked`): de-identified, its original identifiers
kept only encrypted (so a doctor can approve filing the results back into the same study), its
segmentation queued. The spooled files are deleted once handed on, stored or not.

The cases are added by the account :data:`RECEIVER_USER`, created inactive with a random
password: nobody logs in as it; it names who stored a case in the worklist and the audit log.
A study that cannot be stored (no FLAIR, not images, burned-in annotation, two patients)
leaves nothing but an audit event ``dicom-receive-refused`` with the reason (scrubbed of
the study's identifiers), the sender and the number of instances; a radiologist reads it in the
audit log, and can pull the study from the PACS by hand where one is configured.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from mrimaster.errors import MRIMasterError
from mrimaster.pacs.receiver import ReceivedStudy
from mrimaster.serving import pacs_service, security
from mrimaster.serving.cases import strip_paths
from mrimaster.serving.context import AppContext
from mrimaster.storage import repository as repo
from mrimaster.storage.tables import User

log = logging.getLogger(__name__)
RECEIVER_USER = "dicom-receiver"


def receiver_user(ctx: AppContext) -> None:
    """Create the inactive account :data:`RECEIVER_USER` if it does not exist."""
    with ctx.sessions() as db:
        if repo.get_user(db, RECEIVER_USER) is None:
            user = repo.add_user(db, RECEIVER_USER,
                                 security.hash_password(secrets.token_urlsafe(32)), "radiologist")
            user.active = False
            repo.audit(db, RECEIVER_USER, "create-user", RECEIVER_USER,
                       "inactive service account of the DICOM receiver (nobody logs in as it)")
            db.commit()


def store_received(ctx: AppContext, study: ReceivedStudy, fernet: Any) -> int | None:
    """Store one received study; returns the new case's id, or ``None`` when it was refused
    (the reason is audited, nothing else kept)."""
    senders = ", ".join(study.calling_aets) or "an unknown sender"
    detail = f"{len(study.files)} instances from {senders}"
    with ctx.sessions() as db:
        user = repo.get_user(db, RECEIVER_USER)
        if not isinstance(user, User):
            raise MRIMasterError(f"the account {RECEIVER_USER} is missing",
                                 "start the receiver with `mrimaster pacs listen`")
        try:
            case = pacs_service.store_linked(ctx, db, user, study.folder, study.files, fernet)
        except MRIMasterError as exc:
            db.rollback()
            reason = strip_paths(exc.message, study.folder, ctx.config.app_dir)
            if exc.hint:
                reason += f" ({exc.hint})"
            repo.audit(db, RECEIVER_USER, "dicom-receive-refused", "",
                       f"{detail}: not stored: {reason}")
            db.commit()
            log.warning("received study refused (%s): %s", detail, reason)
            return None
        repo.audit(db, RECEIVER_USER, "dicom-receive", f"case {case.id}",
                   f"{detail}, stored de-identified; segmentation queued")
        db.commit()
        log.info("received study stored as case %d (%s)", case.id, detail)
        return int(case.id)
