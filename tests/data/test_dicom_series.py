"""A zip of DICOM series becomes NIfTI volumes with the right geometry and slice order
(:func:`mrimaster.imaging.dicom_import.import_study`); a zip is extracted safely; the
helpers here write DICOM series of a known volume for other tests."""

from __future__ import annotations

import io
import random
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from mrimaster.errors import DataError
from mrimaster.imaging.archive import extract_zip
from mrimaster.imaging.dicom_import import import_study

LPS = np.diag([-1.0, -1.0, 1.0])


def series_files(data: np.ndarray, affine: np.ndarray, description: str,
                 patient: str = "PID-1") -> list[tuple[str, bytes]]:
    """DICOM slices of a NIfTI-style volume ``data[i, j, k]`` with RAS ``affine``."""
    x = LPS @ affine[:3, 0]
    y = LPS @ affine[:3, 1]
    series, study = generate_uid(), generate_uid()
    out = []
    for k in range(data.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset("x", {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.PatientID, ds.PatientName, ds.Modality = patient, "Doe^Jane", "MR"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SeriesDescription = description
        ds.InstanceNumber = data.shape[2] - k  # deliberately not the spatial order
        ds.ImageOrientationPatient = [*(x / np.linalg.norm(x)), *(y / np.linalg.norm(y))]
        ds.PixelSpacing = [float(np.linalg.norm(y)), float(np.linalg.norm(x))]
        ds.ImagePositionPatient = list(LPS @ (affine @ [0, 0, k, 1])[:3])
        ds.Rows, ds.Columns = data.shape[1], data.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit, ds.PixelRepresentation = 15, 0
        ds.PixelData = np.ascontiguousarray(data[:, :, k].T.astype(np.uint16)).tobytes()
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append((f"{description.replace(' ', '_')}/IM{random.randint(0, 10**9):09d}",
                    buf.getvalue()))
    return out


def volume_and_affine() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 1000, (40, 48, 12)).astype(np.uint16)
    theta = np.deg2rad(10)  # an oblique acquisition: rotated about the z axis
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0],
                    [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.9, 0.9, 3.0])
    affine[:3, 3] = [-90.0, -110.0, -40.0]
    return data, affine


def safe_extract(archive: Path, dest: Path, max_bytes: int) -> list[Path]:
    return extract_zip(archive, dest, max_bytes, 20_000)


def test_series_are_converted_with_their_geometry(tmp_path: Path) -> None:
    data, affine = volume_and_affine()
    entries = series_files(data, affine, "AX FLAIR") + series_files(data[::-1], affine,
                                                                     "T1 POST GD")
    random.Random(0).shuffle(entries)
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, blob in entries:
            zf.writestr(name, blob)
        zf.writestr("README.txt", "not DICOM")
    records = {r.description: r for r in import_study(archive, tmp_path / "work")}
    assert set(records) == {"AX FLAIR", "T1 POST GD"}
    assert records["AX FLAIR"].role == "flair" and records["AX FLAIR"].identity[0].startswith(
        "PID-1")
    flair = nib.load(tmp_path / "work" / str(records["AX FLAIR"].nifti))
    assert np.allclose(flair.affine, affine, atol=1e-4)
    assert np.array_equal(np.asarray(flair.dataobj), data)
    t1 = nib.load(tmp_path / "work" / str(records["T1 POST GD"].nifti))
    assert np.array_equal(np.asarray(t1.dataobj), data[::-1])


@pytest.mark.parametrize("name", ["../evil", "/etc/evil", "a/../../evil", "C:/evil"])
def test_entries_escaping_the_folder_are_refused(tmp_path: Path, name: str) -> None:
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(name, b"x")
    with pytest.raises(DataError, match="outside its folder"):
        safe_extract(archive, tmp_path / "out", 10**6)
    assert not (tmp_path / "evil").exists()


def test_zip_bomb_is_refused(tmp_path: Path) -> None:
    """A zip is judged by the total it unpacks to: over the limit it is refused before any
    entry is written; under it, an entry that compresses 1000 times is no bomb (a mostly-air
    slice of a real study compresses 300-400 times)."""
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.dcm", b"\0" * 10_000_000)
    with pytest.raises(DataError, match="unpacks to"):
        safe_extract(archive, tmp_path / "out", 10**6)
    assert not (tmp_path / "out" / "a.dcm").exists()
    assert [p.name for p in safe_extract(archive, tmp_path / "ok", 10**8)] == ["a.dcm"]
