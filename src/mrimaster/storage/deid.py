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
import secrets
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
    "SeriesDescription", "ProtocolName", "PerformedStationName", "PerformedLocation",
    "RequestedProcedureID", "ReferringPhysicianIdentificationSequence",
    "InstitutionCodeSequence", "PhysiciansOfRecordIdentificationSequence",
    "PerformingPhysicianIdentificationSequence", "OperatorIdentificationSequence",
    "StudyTime", "SeriesTime", "AcquisitionTime", "ContentTime", "InstanceCreationTime",
)
"""Attributes removed (PS3.15 Table E.1-1 actions X, or D/Z with no value worth keeping)."""

DATES = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "InstanceCreationDate",
         "PerformedProcedureStepStartDate", "AcquisitionDateTime")
"""Dates shifted by the patient's offset (the Retain Longitudinal Temporal Information with
Modified Dates option)."""

KEEP_UIDS = ("SOPClassUID", "ReferencedSOPClassUID", "TransferSyntaxUID",
             "MediaStorageSOPClassUID", "ImplementationClassUID", "CodingSchemeUID")
"""UID attributes that name a kind of thing (a class, a syntax), not an instance: kept. Every
other UID, at any depth of nested sequences, is replaced consistently."""

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


GENERIC_IDS = {"", "ANONYMOUS", "ANON", "UNKNOWN", "NONE", "0", "NA", "N/A", "PATIENT"}
"""Patient IDs that name nobody in particular: such files get a pseudonym of their own instead
of merging every such patient into one."""


def patient_key(ds: Any) -> str:
    """What identifies the patient of a DICOM dataset: the ID, else the name; a random key
    when both are missing or generic (``ANONYMOUS``...)."""
    for attr in ("PatientID", "PatientName"):
        value = str(ds.get(attr, "") or "").strip()
        if value.upper() not in GENERIC_IDS:
            return value
    return "unidentified:" + secrets.token_hex(8)


def _replace_uids(ds: Any, key: bytes) -> None:
    """Replace every instance UID of ``ds`` and of its nested sequences."""
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                _replace_uids(item, key)
        elif element.VR == "UI" and element.keyword not in KEEP_UIDS and element.value:
            element.value = replacement_uid(key, str(element.value))


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
        try:
            d = date(int(value[:4]), int(value[4:6]), int(value[6:8])) - shift
            setattr(ds, name, d.strftime("%Y%m%d"))  # a date-time keeps only its shifted date
        except ValueError:  # missing or malformed: removed rather than kept
            if name in ds:
                delattr(ds, name)
    _replace_uids(ds, key)
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "MediaStorageSOPInstanceUID" in meta:
        meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID") or replacement_uid(
            key, str(meta.MediaStorageSOPInstanceUID))
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "DICOM PS3.15 Annex E basic profile, dates shifted (MRIMaster)"
    return alias
