"""Decoding what hospitals export besides 8-bit JPEG/PNG: 16-bit and float grayscale (windowed
like a DICOM slice, never clipped at 255), several frames in one file (refused), EXIF
orientation (applied), an unreadable file (named so)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from mrimaster.data import images
from mrimaster.data.dicom import dicom_to_gray
from mrimaster.data.images import load_slice_file, window_to_uint8
from mrimaster.errors import ImageLoadError
from tests.conftest import synthetic_slice
from tests.inference.test_predict_dicom import write_dicom


def stored_values(seed: int = 3, top: int = 1200) -> np.ndarray:
    """A 16-bit slice as an MRI export stores it: values 0..``top``."""
    return (synthetic_slice(seed, 96).astype(np.float64) / 255 * top).round().astype(np.uint16)


@pytest.mark.parametrize("top", [150, 1200, 4095, 65535])
def test_a_16_bit_png_is_windowed_as_the_same_values_in_dicom(tmp_path: Path, top: int) -> None:
    values = stored_values(top=top)
    png = tmp_path / "slice16.png"
    Image.fromarray(values).save(png)
    assert Image.open(png).mode.startswith("I")  # a true 16-bit file, not an 8-bit one
    gray, stats = load_slice_file(png)
    # the DICOM path (slope 2, intercept -10: a linear map the percentile window undoes)
    dcm = write_dicom(tmp_path / "slice.dcm", values)
    want = dicom_to_gray(pydicom.dcmread(dcm))
    assert np.abs(gray.astype(int) - want.astype(int)).max() <= 1
    assert gray.max() == 255 and stats.std > 20  # the whole range used, not clipped flat
    assert stats.colourfulness == 0


def test_16_bit_reads_like_its_8_bit_original(tmp_path: Path) -> None:
    """Before windowing, values over 255 were clipped: 0..4095 became a white silhouette."""
    eight = synthetic_slice(5, 96)
    Image.fromarray(eight.astype(np.uint16) * 16).save(tmp_path / "x16.png")
    gray, _ = load_slice_file(tmp_path / "x16.png")
    assert np.corrcoef(gray.ravel(), eight.ravel())[0, 1] > 0.99
    assert (gray == 255).mean() < 0.05


@pytest.mark.parametrize("scale", [1.0, 1200.0])
def test_a_float_tiff_is_windowed(tmp_path: Path, scale: float) -> None:
    """A float export in 0..1 used to read as blank (every value under 1 of 255)."""
    eight = synthetic_slice(6, 96)
    Image.fromarray(eight.astype(np.float32) / 255 * scale, mode="F").save(tmp_path / "f.tif")
    gray, stats = load_slice_file(tmp_path / "f.tif")
    assert np.corrcoef(gray.ravel(), eight.ravel())[0, 1] > 0.99 and stats.std > 20


def test_window_maps_nan_and_a_constant_image_safely() -> None:
    values = np.full((8, 8), np.nan)
    assert (window_to_uint8(values) == 0).all()
    assert (window_to_uint8(np.full((8, 8), 7.0)) == 0).all()
    ramp = np.arange(100, dtype=np.float64).reshape(10, 10)
    out = window_to_uint8(ramp, 10, 20)
    assert out[0, 0] == 0 and out[-1, -1] == 255 and out[1, 5] == 128


def test_several_frames_in_one_file_are_refused(tmp_path: Path) -> None:
    frames = [Image.fromarray(synthetic_slice(k, 64)) for k in range(3)]
    frames[0].save(tmp_path / "pages.tif", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:2])
    for name, n in (("pages.tif", 3), ("anim.gif", 2)):
        with pytest.raises(ImageLoadError, match=f"holds {n} images") as err:
            load_slice_file(tmp_path / name)
        assert "each slice as its own file" in str(err.value.hint)


def test_a_preview_or_thumbnail_beside_the_slice_is_not_a_second_slice(tmp_path: Path) -> None:
    """A JPEG with a multi-picture block (MPO: a phone's gain map, a camera's preview) and a
    TIFF with a reduced-size page hold one slice: read as it, not refused."""
    slice_ = Image.fromarray(synthetic_slice(4, 96))
    small = slice_.resize((24, 24))
    slice_.convert("RGB").save(tmp_path / "phone.jpg", format="MPO", save_all=True,
                               append_images=[small.convert("RGB")])
    slice_.save(tmp_path / "thumb.tif", save_all=True, append_images=[small])
    assert Image.open(tmp_path / "phone.jpg").n_frames == 2
    assert Image.open(tmp_path / "thumb.tif").n_frames == 2
    for name in ("phone.jpg", "thumb.tif"):
        gray, stats = load_slice_file(tmp_path / name)
        assert gray.shape == (96, 96) and (stats.height, stats.width) == (96, 96)


def test_the_exif_orientation_is_applied(tmp_path: Path) -> None:
    upright = np.zeros((60, 100), np.uint8)
    upright[10:30, 20:90] = 200  # a wide bar: wider than tall once upright
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # as a camera stores
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    stored.save(tmp_path / "x.jpg", exif=exif, quality=95)
    gray, stats = load_slice_file(tmp_path / "x.jpg")
    assert gray.shape == (60, 100) and (stats.height, stats.width) == (60, 100)
    assert np.abs(gray.astype(int) - upright.astype(int)).mean() < 3


def test_an_unreadable_file_says_permission_denied(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "locked.png"
    Image.fromarray(synthetic_slice(1, 64)).save(path)

    def denied(*_a: object, **_k: object) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(images.Image, "open", denied)
    with pytest.raises(ImageLoadError, match="permission denied"):
        load_slice_file(path)


def test_a_folder_given_as_an_image_is_named_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="is a folder"):
        load_slice_file(tmp_path)
