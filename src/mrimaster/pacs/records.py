"""What the PACS answers, as plain records: :class:`StudySummary` (one study a QIDO-RS search
lists) and :class:`StoreResult` (what a STOW-RS request stored or refused).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class StudySummary:
    """One study as QIDO-RS lists it (empty strings where the PACS gave nothing)."""

    study_uid: str
    patient_id: str
    patient_name: str
    study_date: str  # DICOM DA, YYYYMMDD
    accession: str
    description: str
    modalities: tuple[str, ...]
    n_series: int | None
    n_instances: int | None


@dataclass
class StoreResult:
    """What a STOW-RS request stored.

    Attributes:
        stored: SOP Instance UIDs the PACS accepted.
        failed: SOP Instance UID -> the PACS' reason, for those it refused.
    """

    stored: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed
