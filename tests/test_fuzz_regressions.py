"""Inputs found by ``benchmarks/fuzz_parsers.py`` that once crashed a parser with a raw
exception; each now gets a clear error that says what is wrong."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest

from mrimaster.config import load_config
from mrimaster.data.images import load_slice_file
from mrimaster.errors import ConfigError, DataError, ImageLoadError
from mrimaster.segmentation.cases import explicit_case
from mrimaster.segmentation.volumes import load_nifti, load_volume
from mrimaster.training.config import TrainConfig

FOUND = Path(__file__).parent / "data" / "fuzz"


def _as_nifti(name: str, tmp_path: Path) -> Path:
    """The fuzz target's encoding: first byte odd -> ``.nii.gz``, else ``.nii``."""
    data = (FOUND / name).read_bytes()
    path = tmp_path / ("input.nii.gz" if data[0] & 1 else "input.nii")
    path.write_bytes(data[1:])
    return path


@pytest.mark.parametrize(("text", "message"), [
    (base64.b64decode("bW9kZWw6IG1yaS1jbm4KZXBvY2hzOiA0CgAAAAAAAGxyOiAwLjAwMQpzjmlmdAo="),
     "not UTF-8"),                       # invalid UTF-8: was UnicodeDecodeError
    (b"&model: mri-cnn\nhs: ", "keys that are not names"),  # a null key: was TypeError
])
def test_config_files_that_crashed(tmp_path: Path, text: bytes, message: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(text)
    with pytest.raises(ConfigError, match=message):
        load_config(TrainConfig, path)


def test_image_declaring_a_huge_size_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "slice.bmp"
    shutil.copy(FOUND / "image_decompression_bomb.bmp", path)
    with pytest.raises(ImageLoadError, match="too large"):  # was DecompressionBombError
        load_slice_file(path)


def test_nifti_with_an_unknown_data_type_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="corrupt or truncated NIfTI"):  # was HeaderDataError
        load_nifti(_as_nifti("nifti_bad_datatype.bin", tmp_path))


def test_volume_with_a_degenerate_affine_is_a_clear_error(tmp_path: Path) -> None:
    path = _as_nifti("case_degenerate_affine.bin", tmp_path)
    with pytest.raises(DataError, match="affine|reorient"):  # was OrientationError
        load_volume(explicit_case("fuzz", {"flair": path}), ["flair"])


def test_volume_declaring_a_billion_voxels_is_refused_before_reading(tmp_path: Path) -> None:
    path = _as_nifti("case_huge_declared_volume.bin", tmp_path)  # was out of memory (> 4 GB)
    with pytest.raises(DataError, match="far larger than any brain MRI volume"):
        load_nifti(path)


def test_jpeg_declaring_a_huge_size_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "slice.jpg"
    shutil.copy(FOUND / "image_huge_declared_jpeg.jpg", path)  # was out of memory (> 4 GB)
    with pytest.raises(ImageLoadError, match="too large"):
        load_slice_file(path)
