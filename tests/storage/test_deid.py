"""De-identification per PS3.15 Annex E (Table E.1-1 at every depth) and burned-in signs."""

from __future__ import annotations

import re
from datetime import date, timedelta
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    UID_dictionary,
)

from mrimaster.storage.deid import (
    burned_in_reason,
    date_offset,
    deidentify,
    pseudonym,
    replacement_uid,
)
from mrimaster.storage.deid_table import META_KEEP, action_table
from tests.storage.worst_case import GEOMETRY, KEY, Originals, table_attributes, worst_case


def _deidentified(tmp_path: Path) -> tuple[Dataset, Dataset, bytes, Originals]:
    src, originals = worst_case(tmp_path / "worst.dcm")
    before = pydicom.dcmread(src)
    ds = pydicom.dcmread(src)
    alias = deidentify(ds, KEY)
    assert alias == pseudonym(KEY, originals.patient_id)
    ds.save_as(tmp_path / "out.dcm")
    return before, pydicom.dcmread(tmp_path / "out.dcm"), (tmp_path / "out.dcm").read_bytes(), \
        originals


def _shift(day: str, days: int) -> str:
    return (date(int(day[:4]), int(day[4:6]), int(day[6:8])) + timedelta(days=days)).strftime(
        "%Y%m%d")


def test_worst_case_file_keeps_no_original_value_anywhere(tmp_path: Path) -> None:
    before, out, raw, originals = _deidentified(tmp_path)
    assert len(originals.strings) > 2000 and len(originals.uids) > 500  # the test is real
    assert [s for s in originals.strings if s.encode() in raw] == []
    assert [u for u in originals.uids if u.encode() in raw] == []
    # a date may appear inside a new UID's digits by chance: match whole values only
    assert [d for d in originals.dates if re.search(rb"(?<![0-9.])" + d.encode(), raw)] == []
    elements = list(out.iterall())
    assert not [e.tag for e in elements if e.tag.is_private]
    assert not [e.tag for e in elements if e.tag.group & 0xFF00 in (0x5000, 0x6000)]
    # every date left anywhere is an original date moved back by the patient's offset
    offset = date_offset(KEY, originals.patient_id)
    dated = [e for e in elements if e.VR in ("DA", "DT") and e.value]
    assert len(dated) > 50
    for e in dated:
        assert len(str(e.value)) == 8 and _shift(str(e.value), offset) in originals.dates, e
    assert not [e for e in elements if e.VR == "TM" and e.value]
    assert {str(e.value) for e in elements if e.VR == "PN" and e.tag != 0x00100010} <= {
        "", "ANONYMIZED"}
    assert out.PatientName == out.PatientID == pseudonym(KEY, originals.patient_id)
    assert out.PatientIdentityRemoved == "YES"
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    codes = [(c.CodeValue, c.CodingSchemeDesignator) for c in
             out.DeidentificationMethodCodeSequence]
    assert codes == [("113100", "DCM"), ("113107", "DCM")]
    assert {int(e.tag) for e in out.file_meta} <= META_KEEP
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.SOPInstanceUID == replacement_uid(KEY, before.SOPInstanceUID)
    assert out.SOPClassUID == MRImageStorage
    assert out.PixelData == before.PixelData
    for name, value in GEOMETRY.items():
        assert out.get(name) == before.get(name) == value, name


def test_every_table_row_gets_its_action_at_the_top_and_nested(tmp_path: Path) -> None:
    before, out, _raw, _originals = _deidentified(tmp_path)
    table = action_table()
    nested_before = before.ContentSequence[0].ContentSequence[0]
    nested_out = out.ContentSequence[0].ContentSequence[0]  # D: kept, its items cleaned
    checked = 0
    for original, cleaned in ((before, out), (nested_before, nested_out)):
        for tag, keyword, vr in table_attributes():
            if tag not in original or tag in (0x00100010, 0x00100020):
                continue
            action, old, new = table[tag], original[tag].value, cleaned.get(tag)
            if action == "X":
                assert new is None, keyword
            elif vr == "SQ":
                assert new is not None and (new.value == [] or action in "DUK"), keyword
            elif new is not None and new.value not in (None, "", b"", []):
                assert action != "Z" or vr in ("DA", "DT"), keyword
                assert new.value != old, keyword
            checked += 1
    assert checked > 1000


@pytest.fixture(scope="module")
def worst_out(tmp_path_factory: pytest.TempPathFactory) -> tuple[Dataset, bytes]:
    _before, out, raw, _originals = _deidentified(tmp_path_factory.mktemp("worst"))
    return out, raw


def _gone(ds: Dataset, *keywords: str) -> bool:
    return all(not ds.get(k) for k in keywords)


def _content_names_gone(out: Dataset, raw: bytes) -> bool:
    items = [out.ContentSequence[0], out.ContentSequence[0].ContentSequence[0]]
    return all(i.get("PersonName") in (None, "", "ANONYMIZED") and "TextValue" not in i
               for i in items) and b"ZQ1" not in raw and b"ZQ2" not in raw


FINDINGS = {  # the security review of issue 20, one check each (all failed before the fix)
    "OriginalAttributesSequence survives":
        lambda out, raw: "OriginalAttributesSequence" not in out and b"ZQ4" not in raw,
    "person names and text in ContentSequence survive": _content_names_gone,
    "ReferencedPatientSequence keeps the name and ID":
        lambda out, raw: "ReferencedPatientSequence" not in out and b"ZQ3" not in raw,
    "diagnoses, alerts, allergies survive":
        lambda out, raw: _gone(out, "AdmittingDiagnosesDescription", "MedicalAlerts",
                               "Allergies"),
    "placer/filler order numbers survive":
        lambda out, raw: _gone(out, "PlacerOrderNumberImagingServiceRequest",
                               "FillerOrderNumberImagingServiceRequest"),
    "overlays 60xx survive": lambda out, raw: not any(
        e.tag.group & 0xFF00 == 0x6000 for e in out.iterall()) and b"ZQOVERLAY" not in raw,
    "dates outside a fixed list stay unshifted":
        lambda out, raw: _gone(out, "PerformedProcedureStepEndDate",
                               "IssueDateOfImagingServiceRequest"),
    "station AE titles survive":
        lambda out, raw: "SourceApplicationEntityTitle" not in out.file_meta
        and _gone(out, "PerformedStationAETitle") and b"ZQSOURCEAE" not in raw,
    "the method code sequence is missing":
        lambda out, raw: "113100" in {c.CodeValue for c in
                                      out.get("DeidentificationMethodCodeSequence", [])},
    "hundreds of values come through on the worst-case file":
        lambda out, raw: raw.count(b"ZQ") == 0,
}


@pytest.mark.parametrize("finding", sorted(FINDINGS))
def test_review_finding_is_fixed(worst_out: tuple[Dataset, bytes], finding: str) -> None:
    out, raw = worst_out
    assert FINDINGS[finding](out, raw), finding


def test_one_patients_files_stay_consistent(tmp_path: Path) -> None:
    a, _ = worst_case(tmp_path / "a.dcm", patient_id="PID-4711")
    b, _ = worst_case(tmp_path / "b.dcm", patient_id="PID-4711")
    first, second = pydicom.dcmread(a), pydicom.dcmread(b)
    second.SOPInstanceUID = "1.2.826.0.1.3680043.10.999.2"
    second.StudyDate = "20240102"
    first.StudyDate = "20240101"
    ref = Dataset()
    ref.ReferencedSOPClassUID = MRImageStorage
    ref.ReferencedSOPInstanceUID = first.SOPInstanceUID
    second.ReferencedImageSequence = [ref]
    assert deidentify(first, KEY) == deidentify(second, KEY) == pseudonym(KEY, "PID-4711")
    assert first.SOPInstanceUID != second.SOPInstanceUID
    assert second.ReferencedImageSequence[0].ReferencedSOPInstanceUID == first.SOPInstanceUID
    assert second.ReferencedImageSequence[0].ReferencedSOPClassUID == MRImageStorage
    assert first.StudyInstanceUID == second.StudyInstanceUID
    assert first.FrameOfReferenceUID == second.FrameOfReferenceUID
    shift = date_offset(KEY, "PID-4711")
    assert first.StudyDate == _shift("20240101", -shift)
    assert second.StudyDate == _shift("20240102", -shift)  # the interval survives


def test_dates_times_and_an_old_method_sequence(tmp_path: Path) -> None:
    ds = Dataset()
    ds.PatientID = "PID-1"
    ds.AcquisitionDateTime = "20240315101530.123+0100"
    ds.AcquisitionDate = ["20240301", "20240302"]  # several values (VM 1 though)
    ds.SeriesDate = "2024"  # not a full date: removed
    ds.PatientBirthDate = "19700101"
    ds.AcquisitionTime = "101530"
    ds.ContentTime = "101530"
    ds.DeidentificationMethodCodeSequence = [Dataset()]
    ds.DeidentificationMethodCodeSequence[0].CodeValue = "113101"
    deidentify(ds, KEY)
    shift = date_offset(KEY, "PID-1")
    assert ds.AcquisitionDateTime == _shift("20240315", -shift)
    assert list(ds.AcquisitionDate) == [_shift("20240301", -shift), _shift("20240302", -shift)]
    assert "SeriesDate" not in ds and ds.PatientBirthDate == ""
    assert "AcquisitionTime" not in ds or ds.AcquisitionTime == ""
    assert ds.ContentTime == ""
    assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == ["113100", "113107"]


def _file(path: Path, sop_class: str = MRImageStorage) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    return ds


@pytest.mark.parametrize(("attrs", "expected"), [
    ({}, None),
    ({"BurnedInAnnotation": "NO", "ImageType": ["ORIGINAL", "PRIMARY", "M"]}, None),
    ({"ImageType": ["DERIVED", "SECONDARY", "MPR"]}, None),
    ({"BurnedInAnnotation": "YES"}, "BurnedInAnnotation"),
    ({"SOPClassUID": SecondaryCaptureImageStorage}, "Secondary Capture"),
    ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.7.4"}, "Secondary Capture"),
    ({"ImageType": ["DERIVED", "SECONDARY", "SCREEN SHOT"]}, "screen"),
])
def test_burned_in_reason(tmp_path: Path, attrs: dict[str, object], expected: str | None) -> None:
    ds = _file(tmp_path / "x.dcm")
    for name, value in attrs.items():
        setattr(ds, name, value)
    reason = burned_in_reason(ds)
    assert reason is None if expected is None else expected in (reason or "")


def _sample(folder: Path, per_folder: int) -> list[Path]:
    by_folder: dict[Path, list[Path]] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and pydicom.misc.is_dicom(path):
            by_folder.setdefault(path.parent, []).append(path)
    return [p for files in by_folder.values() for p in files[:: max(1, len(files) // per_folder)]
            [:per_folder]]


@pytest.mark.realdata
def test_real_scanner_headers_keep_no_identifying_value(data_root: Path, tmp_path: Path) -> None:
    """Real GE, Siemens and Philips files (enhanced multi-frame ones included): no value of a
    D/Z/X/U attribute of Table E.1-1 at any depth survives in the saved bytes.

    Only values of at least 4 characters that are not digits alone are searched: short or
    numeric values ("0", "1", "MR") occur in the bytes by chance (pixels, numbers, new UIDs).
    """
    table = action_table()
    files = _sample(data_root / "dicom-scanners", per_folder=2)
    assert len(files) >= 10 and any("enhanced" in str(p) for p in files)
    searched = 0
    for n, path in enumerate(files):
        before = pydicom.dcmread(path)
        ds = pydicom.dcmread(path)
        deidentify(ds, KEY)
        ds.save_as(tmp_path / f"{n}.dcm")
        raw = (tmp_path / f"{n}.dcm").read_bytes()
        out = pydicom.dcmread(tmp_path / f"{n}.dcm")
        kept = {str(e.value) for e in out.iterall() if e.VR not in ("SQ", "OB", "OW", "UN")}
        for e in before.iterall():
            identifying = table.get(int(e.tag), "K") in "DZXU" or e.VR == "PN"
            if not identifying or e.VR in ("SQ", "DA", "DT", "TM") or e.tag.is_private:
                continue
            values = e.value if isinstance(e.value, list | pydicom.multival.MultiValue) \
                else [e.value]
            for value in values:
                text = str(value).strip()
                if len(text) < 4 or text.replace(".", "").isdigit() or text in kept:
                    continue  # kept: the same text is also a value the table keeps
                assert text.encode() not in raw, (path, e.keyword, text)
                searched += 1
        for e in before.iterall():  # instance UIDs replaced at every depth (classes kept)
            if e.VR != "UI":
                continue
            for uid in [e.value] if isinstance(e.value, str) else list(e.value or []):
                if uid and uid not in UID_dictionary:
                    whole = rb"(?<![0-9.])" + re.escape(uid.encode()) + rb"(?![0-9.])"
                    assert not re.search(whole, raw), (path, e.keyword)  # a kept UID's root?
                    searched += 1
        elements = list(out.iterall())
        assert not [e for e in elements if e.tag.is_private], path
        # every date left, at any depth, is an original one moved back by one offset
        days = {str(e.value)[:8] for e in before.iterall() if e.VR in ("DA", "DT") and e.value}
        left = {str(e.value) for e in elements if e.VR in ("DA", "DT") and e.value}
        offset = date_offset(KEY, str(before.PatientID))
        assert all(_shift(day, offset) in days for day in left), (path, left)
        assert not [e for e in elements if e.VR == "TM" and e.value]
        assert out.PatientIdentityRemoved == "YES"
        for name in ("PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient",
                     "SliceThickness", "Rows", "Columns", "NumberOfFrames"):
            assert out.get(name) == before.get(name), (path, name)
        assert out.PixelData == before.PixelData
    assert searched > 500


def test_identifying_text_lists_what_deidentification_takes(tmp_path: Path) -> None:
    """Every original text and UID of the worst case (top level, nested, private, overlays)
    is listed, none that de-identification keeps (class UIDs, geometry, the modality)."""
    from mrimaster.storage.deid import identifying_text

    before, _after, out, originals = _deidentified(tmp_path)
    found = identifying_text(before)
    binary = {s for s in originals.strings if s.endswith(("BN", "BITS", "BIN!", "DATA!"))}
    source = (tmp_path / "worst.dcm").read_bytes()  # some originals were overwritten
    texts = {s for s in originals.strings - binary if s.encode() in source} - {
        "ZQSOURCEAE", "ZQSENDINGAE"}  # those are file meta
    assert len(texts) > 1000
    assert texts <= found, sorted(texts - found)[:5]
    uids = {u for u in originals.uids if u.encode() in source}
    assert len(uids) > 100 and uids <= found, sorted(uids - found)[:5]
    assert not {"MR", "MONOCHROME2", str(MRImageStorage)} & found
    assert not [v for v in found if len(v) >= 6 and v.encode() in out]
