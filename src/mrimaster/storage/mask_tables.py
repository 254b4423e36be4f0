"""The table of mask versions (:mod:`mrimaster.serving.masks`): every saved correction of a
case's AI mask, never overwritten, and the 2D tumour boxes.

Created by the migration ``0006``; the same declarative ``Base`` as
:mod:`mrimaster.storage.tables`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mrimaster.storage.tables import Base, utcnow

MASK_KINDS = ("mask", "box")
"""``mask``: a 3D label map (NIfTI in the store); ``box``: a 2D tumour box ``[x0, y0, x1, y1]``
in the original image's pixels."""


class MaskVersion(Base):
    """One version of a case's tumour mask. Number 0 is the AI's (pinned here, with its file's
    digest, at the first save, so that a new segmentation of the case cannot take it away);
    1, 2, ... are doctors' saves, each naming the version it started from. A version's file
    and row never change; only ``reviewed`` moves (at most one version of a case has it)."""

    __tablename__ = "mask_versions"
    __table_args__ = (UniqueConstraint("case_id", "number", name="uq_mask_versions_case_number"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(8), default="mask")
    author: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    base_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """SHA-256 of the NIfTI (gzip) in the object store; ``None`` for a box."""
    label_convention: Mapped[str] = mapped_column(String(16), default="")
    box: Mapped[list[int] | None] = mapped_column(JSON, nullable=True)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Cache: ``volumes_ml`` and ``dice_vs_ai`` per region WT/TC/ET (``None``: not defined)."""
    reviewed: Mapped[bool] = mapped_column(Boolean, default=False)
