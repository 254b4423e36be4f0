"""The action table of DICOM PS3.15 Annex E, Table E.1-1 (Basic Application Level Confidentiality
Profile), as data.

The table is not typed here: it is read (lazily, once) from the tables that the
``dicom-anonymizer`` package (Kitware, BSD-3-Clause) generates from the standard's published
Table E.1-1 (``dicomfields_2026c``, i.e. PS3.15 2026c; the newest it ships). This module only
resolves the standard's compound actions to one action each and adds the few rules the table does
not state as tag rows (file meta, structured-content free text).

Actions (PS3.15 Table E.1-1, "Basic Prof." column):

* ``D``: replace with a non-zero-length dummy value consistent with the VR;
* ``Z``: replace with a zero-length value (or a dummy);
* ``X``: remove;
* ``U``: replace a UID with a non-zero-length UID, consistently within the set of instances.

Compound actions resolve to the one that keeps the dataset valid without knowing its IOD: ``X/Z``
and ``X/Z/D`` -> ``Z`` (a zero-length value carries no information yet keeps Type 2 attributes
present); ``Z/D`` -> ``Z``; ``X/D`` -> ``D``; ``X/Z/U*`` -> ``U`` (sequences of references: their
UIDs are replaced, the rest cleaned recursively).
"""

from __future__ import annotations

import functools
import importlib

TABLE_MODULE = "dicomanonymizer.dicom_anonymization_databases.dicomfields_2026c"
"""Where the generated Table E.1-1 lives (``dicom-anonymizer`` >= 2.1)."""

TABLE_VERSION = "PS3.15 2026c Table E.1-1"

CATEGORY_ACTION = {
    "D_TAGS": "D",
    "Z_TAGS": "Z",
    "X_TAGS": "X",
    "U_TAGS": "U",
    "Z_D_TAGS": "Z",
    "X_Z_TAGS": "Z",
    "X_D_TAGS": "D",
    "X_Z_D_TAGS": "Z",
    "X_Z_U_STAR_TAGS": "U",
}
"""The table's categories (compound actions included) -> the one action applied here."""

EXTRA_ACTIONS = {
    0x0040A160: "X",  # Text Value: free text of structured content (ContentSequence items)
}
"""Rules the generated table does not carry as rows: free text of a structured-content item
is removed like the table's other free text (Annex E "Clean Structured Content" is not
declared, so the text goes)."""

META_KEEP = frozenset({
    0x00020000,  # File Meta Information Group Length (recomputed when written)
    0x00020001,  # File Meta Information Version
    0x00020002,  # Media Storage SOP Class UID
    0x00020003,  # Media Storage SOP Instance UID (set to the new SOP Instance UID)
    0x00020010,  # Transfer Syntax UID
    0x00020012,  # Implementation Class UID
    0x00020013,  # Implementation Version Name
})
"""File meta (group 0002) attributes kept; every other one (Source/Sending/Receiving
Application Entity Title, Source Presentation Address, Private Information...) is removed:
they name the station or site that wrote the file."""

DATES_OF_BIRTH = frozenset({0x00100030})
"""Patient's Birth Date: emptied (Z) rather than shifted; the Retain Patient Characteristics
option is not declared."""

KEEP_UID_KEYWORDS = frozenset({
    "SOPClassUID", "ReferencedSOPClassUID", "ReferencedSOPClassUIDInFile", "TransferSyntaxUID",
    "MediaStorageSOPClassUID", "ImplementationClassUID", "CodingSchemeUID",
    "MappingResourceUID", "ContextGroupExtensionCreatorUID", "ReferencedTransferSyntaxUIDInFile",
    "SOPClassesInStudy", "RelatedGeneralSOPClassUID", "OriginalSpecializedSOPClassUID",
    "ClassUID", "AffectedSOPClassUID", "RequestedSOPClassUID",
})
"""UID attributes that name a kind of thing (a class, a syntax, a scheme), not an instance:
kept. Well-known UIDs of the standard (pydicom's UID dictionary) are kept whatever the
attribute."""

DEID_METHOD_CODES = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
)
"""DeidentificationMethodCodeSequence (CID 7050, scheme DCM): the profile and the one option
really applied (dates shifted by a per-patient offset; times of day removed)."""


@functools.cache
def action_table() -> dict[int, str]:
    """Table E.1-1 as ``{tag (int): action}``, action one of ``D``, ``Z``, ``X``, ``U``, ``K``.

    Rows with masks (curves 50xx, overlays 60xx) are not in the map: whole groups 50xx and 60xx
    are removed by :func:`is_removed_group`.

    Raises:
        ImportError: ``dicom-anonymizer`` is not installed (it is a dependency).
    """
    module = importlib.import_module(TABLE_MODULE)
    table: dict[int, str] = {}
    for category, action in CATEGORY_ACTION.items():
        for row in getattr(module, category):
            if len(row) == 2:
                table[(int(row[0]) << 16) | int(row[1])] = action
    table.update(EXTRA_ACTIONS)
    return table


def is_removed_group(tag: int) -> bool:
    """True for repeating groups 50xx (curves) and 60xx (overlays), removed whole (Table E.1-1
    rows Curve Data (50xx,xxxx), Overlay Data (60xx,3000), Overlay Comments (60xx,4000)).

    Args:
        tag: the element's tag as an int ``0xggggeeee``.
    """
    group = tag >> 16
    return group & 0xFF01 in (0x5000, 0x6000)
