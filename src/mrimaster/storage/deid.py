"""De-identification of DICOM files before they are stored, and patient pseudonyms.

Implements DICOM PS3.15 Annex E, the Basic Application Level Confidentiality Profile, with the
Retain Longitudinal Temporal Information with Modified Dates option (CID 7050 codes 113100 and
113107). The action of every attribute comes from Table E.1-1 as data
(:mod:`mrimaster.storage.deid_table`) and is applied at every depth of nested sequences and to the
file meta:

* ``X`` removed, ``Z`` emptied, ``D`` replaced by a dummy of its VR, ``U`` (UIDs) replaced
  consistently: the same original UID always maps to the same new one (HMAC under the server's
  key), so series of one study, and references between files, stay together. UIDs that name a
  class or a transfer syntax are kept.
* Person names (VR PN) anywhere are emptied (PatientName becomes the pseudonym).
* Dates (DA) and date-times (DT) anywhere are moved back by the patient's offset (1-3650 days,
  the same for all of one patient's files); a DT keeps only its shifted date. Times of day (TM)
  anywhere lose their value (removed where the table says ``X``). Patient's Birth Date is emptied.
* Private tags (odd groups), curves (50xx) and overlays (60xx) are removed at every depth.
* Attributes the table does not name (pixels, geometry, acquisition parameters) are kept.

Pseudonyms and UIDs come from an HMAC-SHA-256 under the server's secret key, so they cannot be
reversed or recomputed without it. Pixels are not examined: :func:`burned_in_reason` tells when
they may show the patient's name.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import date, timedelta
from typing import Any

from mrimaster.storage.deid_table import (
    DATES_OF_BIRTH,
    DEID_METHOD_CODES,
    KEEP_UID_KEYWORDS,
    META_KEEP,
    action_table,
    is_removed_group,
)

PSEUDONYM_PREFIX = "P-"
DUMMY_TEXT = "ANONYMIZED"
"""The dummy value (action ``D``) of text VRs (at most 16 characters: fits AE, CS and SH)."""

DEIDENTIFICATION_METHOD = ["DICOM PS3.15 Annex E Basic Profile (MRIMaster)",
                           "Retain Longitudinal Modified Dates, times removed"]
"""DeidentificationMethod (LO, each value at most 64 characters)."""

TEXT_VRS = frozenset({"AE", "AS", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
BYTES_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})


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


def shift_date(value: str, shift: timedelta) -> str | None:
    """A DA or DT value moved back by ``shift``, as ``YYYYMMDD``; None when it is not a full
    date (a DT's time of day and UTC offset are dropped)."""
    text = value.strip()
    if len(text) < 8 or not text[:8].isdigit():
        return None
    try:
        day = date(int(text[:4]), int(text[4:6]), int(text[6:8])) - shift
    except (ValueError, OverflowError):
        return None
    return day.strftime("%Y%m%d")


def _values(element: Any) -> list[str]:
    value = element.value
    if value is None or value == "":
        return []
    if isinstance(value, str | bytes):
        return [value.decode("ascii", "replace") if isinstance(value, bytes) else value]
    return [str(v) for v in value]


def _keep_uid(element: Any, uid: str) -> bool:
    from pydicom.uid import UID_dictionary

    return element.keyword in KEEP_UID_KEYWORDS or uid in UID_dictionary


def _dummy(vr: str) -> Any:
    """A non-zero-length dummy value of ``vr`` (action D)."""
    if vr == "AS":
        return "000D"
    if vr in TEXT_VRS:
        return DUMMY_TEXT
    if vr in ("IS", "DS"):
        return "0"
    if vr in BYTES_VRS:
        return b"\0\0"
    return 0


class _Cleaner:
    """One dataset's de-identification: the key, the patient's date shift, the table."""

    def __init__(self, key: bytes, shift: timedelta) -> None:
        self.key = key
        self.shift = shift
        self.table = action_table()

    def uid(self, element: Any) -> None:
        values = _values(element)
        new = [v if _keep_uid(element, v) else replacement_uid(self.key, v) for v in values]
        if new:
            element.value = new[0] if len(new) == 1 else new

    def dates(self, element: Any) -> bool:
        """Shift a DA/DT element in place; False when some value cannot be shifted."""
        new = [shift_date(v, self.shift) for v in _values(element)]
        if any(v is None for v in new):
            return False
        if new:
            element.value = new[0] if len(new) == 1 else new
        return True

    def clean(self, ds: Any) -> None:
        """De-identify ``ds`` (a Dataset or a sequence item) in place, nested items too."""
        doomed = []
        for element in ds:
            tag = int(element.tag)
            if (element.tag.is_private or is_removed_group(tag)
                    or not self.apply(element, self.table.get(tag))):
                doomed.append(tag)
        for tag in doomed:
            del ds[tag]

    def apply(self, element: Any, action: str | None) -> bool:
        """Apply ``action`` (None: not in Table E.1-1) to ``element``; False: remove it."""
        vr = element.VR
        if action == "X":
            return False
        if vr == "SQ":
            if action == "Z":
                element.value = []
            else:  # D, U, K or not in the table: clean each item
                for item in element.value:
                    self.clean(item)
            return True
        if vr in ("DA", "DT"):
            if int(element.tag) in DATES_OF_BIRTH:
                element.value = ""
                return True
            return self.dates(element)  # the Modified Dates option: shifted, else removed
        if vr == "TM":
            element.value = ""  # times of day are not kept
            return True
        if action == "K":
            return True
        if vr == "UI":
            if action == "Z":
                element.value = ""
            else:
                self.uid(element)
            return True
        if action == "Z" or (vr == "PN" and action is None):
            element.value = b"" if vr in BYTES_VRS else ("" if vr in TEXT_VRS else None)
        elif action in ("D", "U"):
            element.value = _dummy(vr)
        return True


def _method_codes() -> list[Any]:
    from pydicom.dataset import Dataset

    items = []
    for value, meaning in DEID_METHOD_CODES:
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        items.append(item)
    return items


def deidentify(ds: Any, key: bytes) -> str:
    """De-identify the pydicom ``Dataset`` ``ds`` in place (PS3.15 Annex E, see the module).

    Args:
        ds: a pydicom ``Dataset`` or ``FileDataset`` (with or without ``file_meta``).
        key: the server's secret key (bytes): pseudonyms, UIDs and the date shift derive from
            it, so one key gives the same results for one patient's files every time.

    Returns:
        The patient's pseudonym (``P-`` and 10 hex digits), now also PatientName and PatientID.
    """
    patient = patient_key(ds)
    alias = pseudonym(key, patient)
    cleaner = _Cleaner(key, timedelta(days=date_offset(key, patient)))
    cleaner.clean(ds)
    ds.PatientName = alias
    ds.PatientID = alias
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        for tag in [int(e.tag) for e in meta if int(e.tag) not in META_KEEP]:
            del meta[tag]
        if "MediaStorageSOPInstanceUID" in meta:
            meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID") or replacement_uid(
                key, str(meta.MediaStorageSOPInstanceUID))
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = list(DEIDENTIFICATION_METHOD)
    ds.DeidentificationMethodCodeSequence = _method_codes()
    ds.LongitudinalTemporalInformationModified = "MODIFIED"
    return alias


def identifying_text(ds: Any) -> set[str]:
    """The text and UID values of ``ds`` (at every depth, file meta aside) that
    :func:`deidentify` removes, empties or replaces: Table E.1-1 attributes other than ``K``,
    person names, private tags, curves and overlays (UIDs naming a class or a transfer syntax
    are kept, so not listed). Text made from the original header (a series' role decision
    quotes ContrastBolusAgent or ProtocolName; a refusal its Series Instance UID) is searched
    for these before it is stored.

    Returns:
        The values (str, stripped, at least 2 characters).
    """
    table = action_table()
    found: set[str] = set()

    def walk(items: Any, removed: bool) -> None:
        for item in items:
            for element in item:
                tag = int(element.tag)
                action = table.get(tag)
                gone = removed or element.tag.is_private or is_removed_group(tag) or action in (
                    "X", "Z")
                if element.VR == "SQ":
                    walk(element.value or [], gone)
                elif element.VR in TEXT_VRS | {"UI"} and (
                        gone or element.VR == "PN" or action not in (None, "K")):
                    many = element.value if element.VM > 1 else [element.value]  # PN: one
                    values = [v.decode("ascii", "replace") if isinstance(v, bytes) else str(v)
                              for v in many if v is not None]
                    found.update(v.strip() for v in values if len(v.strip()) >= 2
                                 and not (element.VR == "UI" and _keep_uid(element, v)))

    walk([ds], False)
    return found


SECONDARY_CAPTURE_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image",
    "1.2.840.10008.5.1.4.1.1.7.1": "Multi-frame Single Bit Secondary Capture Image",
    "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte Secondary Capture Image",
    "1.2.840.10008.5.1.4.1.1.7.3": "Multi-frame Grayscale Word Secondary Capture Image",
    "1.2.840.10008.5.1.4.1.1.7.4": "Multi-frame True Color Secondary Capture Image",
}
"""Secondary Capture SOP classes (PS3.4): screenshots and scanned films, which often carry the
patient's name burned into the pixels."""

CAPTURE_IMAGE_TYPES = ("SCREEN SHOT", "SCREENSHOT", "SECONDARY CAPTURE", "SCREEN CAPTURE")
"""ImageType values that name a screen capture."""


def burned_in_reason(ds: Any) -> str | None:
    """Why the image may carry burned-in patient text (None: no sign of it).

    Header work (PS3.15 Annex E) cannot clean pixels, so such a file must be looked at by a
    person before it is stored. Signs, in order: BurnedInAnnotation (0028,0301) is ``YES``;
    the SOP class is a Secondary Capture (1.2.840.10008.5.1.4.1.1.7 and .7.1-.7.4); ImageType
    names a screen shot or capture (``SCREEN SHOT``, ``SECONDARY CAPTURE``, any value with
    ``SCREEN`` or ``CAPTURE``). ``SECONDARY`` alone is not a sign: reformats (MPR) write
    ``DERIVED\\SECONDARY`` too.

    Args:
        ds: a pydicom ``Dataset`` (header only is enough).

    Returns:
        A short English reason (str), or None when nothing suggests burned-in text.
    """
    flag = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if flag == "YES":
        return "the file declares burned-in annotation (BurnedInAnnotation = YES)"
    sop_class = str(ds.get("SOPClassUID", "") or "").strip()
    if not sop_class:
        meta = getattr(ds, "file_meta", None)
        sop_class = str(meta.get("MediaStorageSOPClassUID", "") or "").strip() if meta else ""
    if sop_class in SECONDARY_CAPTURE_CLASSES:
        return (f"it is a {SECONDARY_CAPTURE_CLASSES[sop_class]} (a screen or film capture, "
                "which often shows the patient's name)")
    raw = ds.get("ImageType", None)
    values = [] if raw is None else ([raw] if isinstance(raw, str) else list(raw))
    words = {str(v).strip().upper() for v in values}
    if any(t in words for t in CAPTURE_IMAGE_TYPES) or any(
            "SCREEN" in w or "CAPTURE" in w for w in words):
        return "its ImageType names a screen shot or capture (" + "\\".join(sorted(words)) + ")"
    return None
