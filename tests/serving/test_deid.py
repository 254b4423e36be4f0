"""De-identification (DICOM PS3.15 Annex E basic profile) and pseudonyms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from mrimaster.storage.deid import date_offset, deidentify, pseudonym

KEY = b"k" * 32
IDENTIFIERS = {"PatientName": "Doe^John", "PatientID": "PID-12345",
               "PatientBirthDate": "19700101", "InstitutionName": "General Hospital",
               "ReferringPhysicianName": "Dr^Who", "OperatorsName": "Smith^Anna",
               "AccessionNumber": "ACC-998877", "PatientAddress": "1 Main Street",
               "StationName": "MRI-ROOM-3"}


def identified_dicom(path: Path, pixels: np.ndarray | None = None, patient: str = "PID-12345",
                     study_uid: str | None = None) -> Path:
    """An MR slice with identifying tags (and pixels unless ``pixels`` is ``None``)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    for k, v in IDENTIFIERS.items():
        setattr(ds, k, v)
    ds.PatientID = patient
    ds.Modality = "MR"
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyDate = "20240315"
    ds.AcquisitionDateTime = "20240315101530"
    ds.SeriesDescription = "T1 Doe John"
    ref = Dataset()
    ref.ReferencedSOPClassUID = MRImageStorage
    ref.ReferencedSOPInstanceUID = "1.2.3.4.5.6.7.8.9"
    ds.ReferencedImageSequence = [ref]
    ds.add_new(0x00291010, "OB", b"private vendor data with Doe^John")
    if pixels is not None:
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.PixelData = (pixels.astype(np.uint16) * 4).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_identifying_tags_are_gone_and_the_pseudonym_is_stable(tmp_path: Path) -> None:
    study = generate_uid()
    a = pydicom.dcmread(identified_dicom(tmp_path / "a.dcm", np.ones((8, 8)), study_uid=study))
    b = pydicom.dcmread(identified_dicom(tmp_path / "b.dcm", np.ones((8, 8)), study_uid=study))
    other = pydicom.dcmread(identified_dicom(tmp_path / "c.dcm", np.ones((8, 8)),
                                             patient="PID-777"))
    original_study, original_sop = a.StudyInstanceUID, a.SOPInstanceUID
    alias_a, alias_b, alias_other = (deidentify(d, KEY) for d in (a, b, other))
    assert alias_a == alias_b == pseudonym(KEY, "PID-12345") != alias_other
    a.save_as(tmp_path / "out.dcm")
    raw = (tmp_path / "out.dcm").read_bytes()
    for value in IDENTIFIERS.values():
        assert value.encode() not in raw, value
    for name in IDENTIFIERS:
        assert name not in a or str(a.get(name)) in ("", alias_a), name
    assert a.PatientIdentityRemoved == "YES"
    # UIDs replaced, the same way for one original (series of one study stay together)
    assert a.StudyInstanceUID != original_study and a.StudyInstanceUID == b.StudyInstanceUID
    assert a.SOPInstanceUID != original_sop and a.SOPInstanceUID != b.SOPInstanceUID
    assert a.file_meta.MediaStorageSOPInstanceUID == a.SOPInstanceUID
    # dates shifted back by the patient's own offset (a date-time too); nested UIDs replaced
    assert a.StudyDate == b.StudyDate != "20240315"
    assert a.AcquisitionDateTime == a.StudyDate and b"20240315" not in raw  # DT: date only
    (nested,) = a.ReferencedImageSequence
    assert nested.ReferencedSOPInstanceUID != "1.2.3.4.5.6.7.8.9"
    assert nested.ReferencedSOPClassUID == MRImageStorage  # a class, not an instance: kept
    assert "SeriesDescription" not in a
    shift = date_offset(KEY, "PID-12345")
    assert 1 <= shift <= 3650
    # a different key gives different pseudonyms: they cannot be recomputed without it
    assert pseudonym(b"x" * 32, "PID-12345") != alias_a


def test_a_malformed_date_is_removed_not_a_crash(tmp_path: Path) -> None:
    ds = pydicom.dcmread(identified_dicom(tmp_path / "a.dcm", np.ones((8, 8))))
    ds.StudyDate = "20230231"  # 31 February
    deidentify(ds, KEY)
    assert "StudyDate" not in ds


def test_generic_patient_ids_do_not_merge_patients(tmp_path: Path) -> None:
    a = pydicom.dcmread(identified_dicom(tmp_path / "a.dcm", np.ones((8, 8)),
                                         patient="ANONYMOUS"))
    b = pydicom.dcmread(identified_dicom(tmp_path / "b.dcm", np.ones((8, 8)),
                                         patient="ANONYMOUS"))
    a.PatientName = b.PatientName = ""
    assert deidentify(a, KEY) != deidentify(b, KEY)
