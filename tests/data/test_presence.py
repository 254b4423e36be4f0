from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mrimaster.data.presence import Box, is_presence_dataset, scan_presence
from mrimaster.errors import DataError
from tests.conftest import synthetic_slice, write_class_folders


def _write(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.fromarray(synthetic_slice(i, 96)).save(folder / name)


def test_box_csv_layout_and_plain_folder(tmp_path: Path) -> None:
    root = tmp_path / "set"
    _write(root / "images", ["a.jpg", "b.png"])
    (root / "boxes.csv").write_text("file,width,height,x_center,y_center,box_width,box_height\n"
                                    "a.jpg,96,96,0.5,0.25,0.2,0.1\nmissing.jpg,1,1,.5,.5,.1,.1\n")
    assert is_presence_dataset(root) and is_presence_dataset(root / "boxes.csv")
    scan = scan_presence(root)
    assert [p.name for p in scan.paths] == ["a.jpg"]
    assert [s.path.name for s in scan.skipped] == ["missing.jpg"]
    assert scan.boxes[root / "images" / "a.jpg"] == Box(0.5, 0.25, 0.2, 0.1)
    assert scan_presence(root / "boxes.csv").paths == scan.paths
    plain = tmp_path / "plain"
    _write(plain, ["x.png", "y.jpg"])
    assert [p.name for p in scan_presence(plain).paths] == ["x.png", "y.jpg"]


def test_class_folders_are_not_presence_only(tmp_path: Path) -> None:
    assert not is_presence_dataset(write_class_folders(tmp_path / "d", per_class=1))
    with pytest.raises(DataError):
        scan_presence(tmp_path / "nothing")


def test_box_pixel_bounds_by_hand() -> None:
    # centre (50, 25) in a 100x50 image, 20 x 10 px
    assert Box(0.5, 0.5, 0.2, 0.2).pixel_bounds(100, 50) == (20, 30, 40, 60)
    top, bottom, left, right = Box(0.0, 1.0, 0.5, 0.5).pixel_bounds(100, 50)  # clipped
    assert (left, bottom) == (0, 50) and right == 25 and top == 37
    assert np.all(np.array(Box(0.5, 0.5, 0.0, 0.0).pixel_bounds(10, 10)) >= 0)
