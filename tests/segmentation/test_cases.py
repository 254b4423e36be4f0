from pathlib import Path

import pytest

from mrimaster.errors import DataError
from mrimaster.segmentation.cases import explicit_case, find_case
from tests.segmentation.synthetic import write_case


@pytest.mark.parametrize("layout,modalities,convention", [
    ("brats2021", ["flair", "t1", "t1ce", "t2"], "brats2021"),
    ("brats2023", ["flair", "t1", "t1ce", "t2"], "brats2023"),
    ("brats2015", ["flair", "t1ce"], "brats2015"),
    ("wt", ["flair", "t1"], "wt"),
    ("msd", ["flair", "t1", "t1ce", "t2"], "msd"),
])
def test_layouts_are_recognised(tmp_path: Path, layout: str, modalities: list[str],
                                convention: str) -> None:
    case = find_case(write_case(tmp_path / "c", layout))
    assert case.available() == modalities
    assert case.convention == convention and case.seg is not None


def test_explicit_files_and_errors(tmp_path: Path) -> None:
    folder = write_case(tmp_path / "c", "brats2021")
    case = explicit_case("x", {"flair": folder / "x_flair.nii.gz"}, folder / "x_seg.nii.gz",
                         "brats2021")
    assert case.available() == ["flair"]
    with pytest.raises(DataError, match="unknown modality"):
        explicit_case("x", {"dwi": folder / "x_flair.nii.gz"})
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no NIfTI volumes"):
        find_case(tmp_path / "empty")


def test_one_3d_volume_with_an_unknown_name_asks_for_the_sequence(tmp_path: Path) -> None:
    """One 3D file named like nothing known used to be taken for a Decathlon 4D image and
    refused with "expected a 4D volume (MSD layout)"."""
    import nibabel as nib
    import numpy as np

    (tmp_path / "case").mkdir()
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)),
             tmp_path / "case" / "scan_a.nii.gz")
    with pytest.raises(DataError, match="do not say which sequence") as err:
        find_case(tmp_path / "case")
    assert "--flair" in str(err.value.hint) and "MSD" not in err.value.message
