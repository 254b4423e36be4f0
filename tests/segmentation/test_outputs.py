"""A result folder's mask file: named by its convention, the convention in ``descrip``, found
from ``volumes.json`` (and in folders written before ``wt.nii.gz`` existed)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mrimaster.errors import DataError
from mrimaster.segmentation.labels import MASK_DESCRIPTIONS, MASK_FILES, mask_file_name
from mrimaster.segmentation.outputs import result_mask, save_mask


def _labels(values: tuple[int, ...]) -> nib.Nifti1Image:
    data = np.zeros((8, 9, 10), np.uint8)
    for i, v in enumerate(values):
        data[i, 2:4, 3:5] = v
    return nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0]))


@pytest.mark.parametrize(("convention", "name", "values"), [
    ("wt", "wt.nii.gz", (1,)), ("brats2021", "seg.nii.gz", (1, 2, 4))])
def test_mask_is_named_and_described_by_its_convention(tmp_path: Path, convention: str,
                                                       name: str, values: tuple[int, ...]
                                                       ) -> None:
    other = next(n for n in MASK_FILES.values() if n != name)
    (tmp_path / other).write_bytes(b"a stale mask of an earlier run")
    path = save_mask(_labels(values), tmp_path, convention)
    assert path == tmp_path / name and not (tmp_path / other).exists()
    back = nib.load(str(path))
    assert back.header["descrip"].item().decode() == MASK_DESCRIPTIONS[convention]
    assert len(MASK_DESCRIPTIONS[convention]) <= 80
    assert np.array_equal(np.asarray(back.dataobj), np.asarray(_labels(values).dataobj))
    (tmp_path / "volumes.json").write_text(json.dumps({"label_convention": convention,
                                                       "mask_file": name}))
    assert result_mask(tmp_path) == (path, convention)


def test_the_wt_description_says_it_is_not_brats() -> None:
    assert "not BraTS" in MASK_DESCRIPTIONS["wt"] and "1 = whole tumour" in MASK_DESCRIPTIONS["wt"]
    assert "BraTS 2021" in MASK_DESCRIPTIONS["brats2021"]
    with pytest.raises(DataError, match="brats2015"):
        mask_file_name("brats2015")


def test_a_folder_written_before_wt_nii_gz_still_reads(tmp_path: Path) -> None:
    nib.save(_labels((1,)), str(tmp_path / "seg.nii.gz"))
    (tmp_path / "volumes.json").write_text(json.dumps({"label_convention": "wt"}))
    assert result_mask(tmp_path) == (tmp_path / "seg.nii.gz", "wt")


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no volumes.json"):
        result_mask(tmp_path)
    (tmp_path / "volumes.json").write_text(json.dumps({"label_convention": "wt",
                                                       "mask_file": "wt.nii.gz"}))
    with pytest.raises(DataError, match="wt.nii.gz"):
        result_mask(tmp_path)
