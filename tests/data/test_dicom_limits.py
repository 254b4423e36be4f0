"""A DICOM's declared size is checked from its header, before any pixel is decoded: a slice
or a series that declares too many pixels, or an impossible bit depth, is refused."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from mrimaster.data.dicom import MAX_DICOM_PIXELS, declared_pixels, dicom_to_gray
from mrimaster.errors import ImageLoadError
from mrimaster.imaging.dicom_import import import_study
from tests.data.test_dicom_series import series_files, volume_and_affine


class Exploding(Dataset):
    """A dataset whose pixels must never be decoded."""

    @property
    def pixel_array(self) -> Any:  # type: ignore[override]
        raise AssertionError("the pixels were decoded before the size was checked")


def header(**tags: Any) -> Dataset:
    ds = Exploding()
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.BitsAllocated = 256, 256, 1, 16
    ds.PixelData = b"\0" * 16
    for k, v in tags.items():
        setattr(ds, k, v)
    return ds


@pytest.mark.parametrize(("tags", "words"), [
    ({"Rows": 60000, "Columns": 60000}, "too large"),
    ({"NumberOfFrames": 1000}, "too large"),
    ({"SamplesPerPixel": 3, "Rows": 5000, "Columns": 5000}, "too large"),
    ({"BitsAllocated": 48}, "bits per pixel"),
    ({"BitsAllocated": 0}, "bits per pixel"),
    ({"Rows": 0}, "invalid image size"),
])
def test_declared_size_is_refused_before_decoding(tags: dict[str, int], words: str) -> None:
    with pytest.raises(ImageLoadError, match=words) as info:
        dicom_to_gray(header(**tags), "scan.dcm")
    assert "scan.dcm" in info.value.message and info.value.hint


def test_a_plain_slice_passes_the_check() -> None:
    assert declared_pixels(header()) == 256 * 256 <= MAX_DICOM_PIXELS


def test_series_declaring_too_many_pixels_is_refused(tmp_path: Path) -> None:
    data, affine = volume_and_affine()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, content in series_files(data, affine, "AX FLAIR"):
            ds = pydicom.dcmread(io.BytesIO(content))
            ds.Rows = ds.Columns = 40000
            out = io.BytesIO()
            ds.save_as(out)
            zf.writestr(name, out.getvalue())
    archive = tmp_path / "study.zip"
    archive.write_bytes(buf.getvalue())
    (record,) = import_study(archive, tmp_path / "out")
    assert record.nifti is None and "voxels (at most" in str(record.reason)
    assert not list((tmp_path / "out").glob("*.nii*"))


def test_converted_volume_keeps_voxels_and_affine(tmp_path: Path) -> None:
    import nibabel as nib

    data, affine = volume_and_affine()
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, content in series_files(data, affine, "AX FLAIR"):
            zf.writestr(name, content)
    (record,) = import_study(archive, tmp_path / "out")
    img = nib.load(tmp_path / "out" / str(record.nifti))
    assert np.array_equal(np.asarray(img.dataobj), data)
    assert np.allclose(img.affine, affine, atol=1e-4)
    assert not img.header.extensions and img.header["descrip"].item() == b""
