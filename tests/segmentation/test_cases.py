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
