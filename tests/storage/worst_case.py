"""A worst-case DICOM file generated from PS3.15 Table E.1-1 itself.

Every attribute of the table that pydicom's dictionary knows is filled with a value valid for its
VR and unique in the file (text ``ZQ<copy><index>``, dates two days apart, UIDs under a test root),
at the top level and again inside sequences: ContentSequence items (two levels deep),
ReferencedPatientSequence, OriginalAttributesSequence > ModifiedAttributesSequence,
RequestAttributesSequence, and functional-group sequences the table does not name. Private
blocks, overlays (60xx), curves (50xx) and an identifying file meta are added. The originals are
returned so that tests (and the library comparison) can search the de-identified file for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
from pydicom.datadict import DicomDictionary
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

from mrimaster.storage.deid import date_offset
from mrimaster.storage.deid_table import action_table

KEY = b"worst-case-key-0123456789abcdef!"
BASE_DATE = date(1950, 1, 1)
GEOMETRY = {"PixelSpacing": [0.5, 0.5], "ImagePositionPatient": [-120.0, -110.5, 33.25],
            "ImageOrientationPatient": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0], "SliceThickness": 1.25,
            "Rows": 16, "Columns": 16}
"""Attributes outside the table that must come through unchanged."""


@dataclass
class Originals:
    """What the worst-case file held: searchable strings, UIDs and dates (DA/DT prefixes)."""

    strings: set[str] = field(default_factory=set)
    uids: set[str] = field(default_factory=set)
    dates: set[str] = field(default_factory=set)
    patient_id: str = ""


def table_attributes() -> list[tuple[int, str, str]]:
    """``(tag, keyword, VR)`` of every Table E.1-1 row that pydicom's dictionary knows."""
    rows = []
    for tag in sorted(action_table()):
        entry = DicomDictionary.get(tag)
        if entry is None or tag >> 16 in (0x0000, 0x0002):  # command set, file meta
            continue
        vr = entry[0].split(" or ")[0]
        rows.append((tag, entry[4], vr))
    return rows


def _value(vr: str, copy: int, index: int, originals: Originals) -> object:
    token = f"ZQ{copy:01d}{index:03d}"
    if vr == "SQ":
        item = Dataset()
        item.PatientComments = token + "ITEM"  # a table attribute: must go wherever it sits
        uid = f"1.2.826.0.1.3680043.10.778.{copy + 1}.{1000 + index}"
        item.ReferencedSOPInstanceUID = uid
        originals.strings.add(token + "ITEM")
        originals.uids.add(uid)
        return [item]
    if vr == "DA" or vr == "DT":
        day = (BASE_DATE + timedelta(days=2 * (copy * 700 + index))).strftime("%Y%m%d")
        originals.dates.add(day)
        return day if vr == "DA" else day + "101530"
    if vr == "TM":
        return f"10{copy:02d}30.{index:04d}"
    if vr == "UI":
        uid = f"1.2.826.0.1.3680043.10.777.{copy + 1}.{1000 + index}"
        originals.uids.add(uid)
        return uid
    if vr in ("IS", "DS"):
        return str(7000 + index)
    if vr in ("US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"):
        return 7
    if vr == "AT":
        return 0x00100010
    if vr in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
        originals.strings.add(token + "BN")
        return (token + "BN").encode()
    if vr == "AS":
        return "042Y"
    if vr == "PN":
        originals.strings.add(token + "^Given")
        return token + "^Given"
    originals.strings.add(token)
    return token


def fill(ds: Dataset, copy: int, originals: Originals, sequences: bool = True) -> Dataset:
    """Put every table attribute in ``ds`` with values unique to ``copy`` (0-9)."""
    for index, (tag, _keyword, vr) in enumerate(table_attributes()):
        if vr == "SQ" and not sequences:
            continue
        ds.add_new(tag, vr, _value(vr, copy, index, originals))
    return ds


def _private_block(ds: Dataset, token: str, originals: Originals) -> None:
    block = ds.private_block(0x0029, "ZQ VENDOR " + token, create=True)
    block.add_new(0x10, "LO", token + "PRIVATE")
    block.add_new(0x11, "OB", (token + "PRIVBIN!").encode())
    originals.strings.update({token + "PRIVATE", token + "PRIVBIN!", "ZQ VENDOR " + token})


def _overlays_and_curves(ds: Dataset, originals: Originals) -> None:
    for group in (0x6000, 0x6002):
        ds.add_new(group << 16 | 0x0010, "US", 16)
        ds.add_new(group << 16 | 0x0011, "US", 16)
        ds.add_new(group << 16 | 0x0040, "CS", "G")
        ds.add_new(group << 16 | 0x0050, "SS", [1, 1])
        ds.add_new(group << 16 | 0x0100, "US", 1)
        ds.add_new(group << 16 | 0x3000, "OW", f"ZQOVERLAY{group:04X}BITS".encode())
        ds.add_new(group << 16 | 0x4000, "LT", f"ZQOVERLAYCOMMENT{group:04X}")
        originals.strings.update({f"ZQOVERLAY{group:04X}BITS", f"ZQOVERLAYCOMMENT{group:04X}"})
    ds.add_new(0x50000005, "US", 1)
    ds.add_new(0x50002500, "LO", "ZQCURVELABEL")
    ds.add_new(0x50003000, "OB", b"ZQCURVEDATA!")
    originals.strings.update({"ZQCURVELABEL", "ZQCURVEDATA!"})


def worst_case(path: Path, patient_id: str | None = None) -> tuple[Path, Originals]:
    """Write the worst-case file to ``path``; returns it and its original values.

    Args:
        patient_id: the PatientID (default: one whose date offset under :data:`KEY` is odd, so
            that no shifted date can equal another attribute's original, which are two days
            apart).
    """
    originals = Originals()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.SourceApplicationEntityTitle = "ZQSOURCEAE"
    meta.SendingApplicationEntityTitle = "ZQSENDINGAE"
    originals.strings.update({"ZQSOURCEAE", "ZQSENDINGAE"})
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    fill(ds, 0, originals)
    content = fill(Dataset(), 1, originals, sequences=False)
    content.ContentSequence = [fill(Dataset(), 2, originals, sequences=False)]
    ds.ContentSequence = [content]
    ds.ReferencedPatientSequence = [fill(Dataset(), 3, originals)]
    modified = fill(Dataset(), 4, originals, sequences=False)
    original_attrs = Dataset()
    original_attrs.ModifiedAttributesSequence = [modified]
    original_attrs.SourceOfPreviousValues = "ZQSOURCEOFPREVIOUS"
    originals.strings.add("ZQSOURCEOFPREVIOUS")
    ds.OriginalAttributesSequence = [original_attrs]
    ds.RequestAttributesSequence = [fill(Dataset(), 5, originals)]
    shared = fill(Dataset(), 6, originals, sequences=False)
    _private_block(shared, "NESTED", originals)
    frame = Dataset()
    frame.FrameContentSequence = [fill(Dataset(), 7, originals, sequences=False)]
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.PerFrameFunctionalGroupsSequence = [frame]
    _private_block(ds, "TOP", originals)
    _overlays_and_curves(ds, originals)
    ds.SOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Modality = "MR"
    ds.BurnedInAnnotation = "NO"
    for name, value in GEOMETRY.items():
        setattr(ds, name, value)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = (np.arange(256, dtype=np.uint16) * 3).tobytes()
    if patient_id is None:
        patient_id = next(f"ZQPATIENT{n}" for n in range(100)
                          if date_offset(KEY, f"ZQPATIENT{n}") % 2 == 1)
    ds.PatientID = patient_id
    originals.strings.add(patient_id)
    originals.patient_id = patient_id
    ds.save_as(path, enforce_file_format=True)
    return path, originals
