"""Tables of the PACS link: the encrypted link from a de-identified case to its study's
original identifiers (:mod:`mrimaster.serving.pacs_service`), and the record of every send
(:mod:`mrimaster.serving.pacs_send`).

Created by the migration ``0004_pacs_links``; the same declarative ``Base`` as
:mod:`mrimaster.storage.tables`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mrimaster.storage.tables import Base, utcnow

SEND_STATES = ("ok", "failed")


class PacsLink(Base):
    """A case pulled from the PACS: its original identifiers (PatientID, PatientName,
    StudyInstanceUID, AccessionNumber, SeriesInstanceUID per series number) as one Fernet
    token (AES-128-CBC + HMAC-SHA256) under ``MRIMASTER_LINK_KEY``. Nothing else in the
    database or the file store names the patient."""

    __tablename__ = "pacs_links"
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"),
                                         primary_key=True)
    blob: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PacsSend(Base):
    """One attempt to file a case's results (SEG + SR) back into the PACS: who approved it,
    when, ``ok`` or ``failed``, and what happened (no original identifier)."""

    __tablename__ = "pacs_sends"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    by: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    state: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text, default="")
