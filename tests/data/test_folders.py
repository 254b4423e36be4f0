from pathlib import Path

import pytest

from mrimaster.data.folders import load_class_folders, scan_class_folders
from mrimaster.errors import DataError
from tests.conftest import write_class_folders


def test_naming_variants_and_formats(tmp_path: Path) -> None:
    root = write_class_folders(tmp_path / "d", per_class=3,
                               names=("glioma", "meningioma_tumor", "no_tumor", "pituitary"))
    scan = scan_class_folders(root)
    assert sorted(set(scan.labels)) == ["glioma", "meningioma", "no_tumor", "pituitary"]
    assert {p.suffix for p in scan.paths} == {".jpg", ".png"}


def test_unknown_folder_and_bad_files_are_reported_not_fatal(class_folders: Path) -> None:
    (class_folders / "astrocytoma").mkdir()
    (class_folders / "glioma_tumor" / "broken.jpg").write_text("not a jpeg")
    (class_folders / "glioma_tumor" / "readme.txt").write_text("notes")
    data = load_class_folders(class_folders, 32, progress=False)
    reasons = {s.path.name: s.reason for s in data.skipped}
    assert reasons["astrocytoma"] == "unknown class folder"
    assert "not an image" in reasons["broken.jpg"]
    assert "not an image file type" in reasons["readme.txt"]
    assert len(data.paths) == 24 and data.images.shape == (24, 32, 32)


def test_empty_and_missing_folders_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        scan_class_folders(tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        scan_class_folders(tmp_path / "nope")
