"""De-identification of DICOM files before they are stored, and patient pseudonyms.

Follows the DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile for the
attributes a brain-MRI upload carries: names, IDs, addresses, birth date, institution and
physicians are removed or replaced; dates are shifted by a per-patient offset (so intervals
between one patient's studies survive); UIDs are replaced consistently (the same original UID
always maps to the same new one, so series of one study stay together); private tags are
removed. Pseudonyms and UIDs come from an HMAC-SHA-256 under the server's secret key, so they
cannot be reversed or recomputed without it.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import date, timedelta
from typing import Any

PSEUDONYM_PREFIX = "P-"

REMOVE = (
    "PatientBirthDate", "PatientBirthTime", "PatientAge", "PatientAddress",
    "PatientTelephoneNumbers", "PatientMotherBirthName", "OtherPatientIDs",
    "OtherPatientIDsSequence", "OtherPatientNames", "PatientBirthName", "MilitaryRank",
    "EthnicGroup", "Occupation", "AdditionalPatientHistory", "PatientComments",
    "MedicalRecordLocator", "InstitutionName", "InstitutionAddress",
    "InstitutionalDepartmentName", "ReferringPhysicianName", "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers", "PerformingPhysicianName", "OperatorsName",
    "NameOfPhysiciansReadingStudy", "PhysiciansOfRecord", "RequestingPhysician",
    "ScheduledPerformingPhysicianName", "AccessionNumber", "StationName", "DeviceSerialNumber",
    "StudyID", "RequestAttributesSequence", "IssuerOfPatientID",
    "PatientInsurancePlanCodeSequence", "ImageComments", "StudyDescription",
    "RequestedProcedureDescription", "PerformedProcedureStepID",
    "PerformedProcedureStepDescription", "ContentCreatorName", "PatientWeight", "PatientSize",
)
"""Attributes removed (PS3.15 Table E.1-1 actions X, or D/Z with no value worth keeping)."""

DATES = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "InstanceCreationDate",
         "PerformedProcedureStepStartDate")
"""Dates shifted by the patient's offset (the Retain Longitudinal Temporal Information with
Modified Dates option)."""

UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID",
        "ReferencedSOPInstanceUID", "IrradiationEventUID")
"""UIDs replaced consistently."""

IDENTIFYING = ("PatientName", "PatientID", *REMOVE)
"""Every attribute that must not survive with its original value (used by the tests)."""


def _mac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def pseudonym(key: bytes, patient: str) -> str:
    """A stable pseudonym for ``patient`` (an ID or a name): ``P-`` and 10 hex digits."""
    return PSEUDONYM_PREFIX + _mac(key, "patient:" + patient.strip().lower()).hex()[:10]


def replacement_uid(key: bytes, uid: str) -> str:
    """A new UID for ``uid`` in the ``2.25`` (UUID-derived) root, the same every time."""
    return "2.25." + str(int.from_bytes(_mac(key, "uid:" + uid)[:16], "big"))


def date_offset(key: bytes, patient: str) -> int:
    """Days (1-3650) every date of ``patient``'s studies is moved back."""
    return 1 + int.from_bytes(_mac(key, "date:" + patient.strip().lower())[:4], "big") % 3650


def patient_key(ds: Any) -> str:
    """What identifies the patient of a DICOM dataset (ID, else name, else "unknown")."""
    pid = str(ds.get("PatientID", "") or "").strip()
    name = str(ds.get("PatientName", "") or "").strip()
    return pid or name or "unknown"


def deidentify(ds: Any, key: bytes) -> str:
    """De-identify the pydicom ``Dataset`` ``ds`` in place; returns the patient's pseudonym."""
    patient = patient_key(ds)
    alias = pseudonym(key, patient)
    shift = timedelta(days=date_offset(key, patient))
    ds.remove_private_tags()
    for name in REMOVE:
        if name in ds:
            delattr(ds, name)
    ds.PatientName = alias
    ds.PatientID = alias
    if "PatientSex" in ds:
        ds.PatientSex = ""
    for name in DATES:
        value = str(ds.get(name, "") or "")
        if len(value) >= 8 and value[:8].isdigit():
            d = date(int(value[:4]), int(value[4:6]), int(value[6:8])) - shift
            setattr(ds, name, d.strftime("%Y%m%d"))
        elif name in ds:
            delattr(ds, name)
    for name in UIDS:
        if name in ds and ds.get(name):
            setattr(ds, name, replacement_uid(key, str(ds.get(name))))
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "MediaStorageSOPInstanceUID" in meta:
        meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", replacement_uid(
            key, str(meta.MediaStorageSOPInstanceUID)))
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "DICOM PS3.15 Annex E basic profile, dates shifted (MRIMaster)"
    return alias
