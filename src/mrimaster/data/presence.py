"""Presence-only datasets: images that all show a tumour of unknown type, optionally with boxes.

Layouts accepted (``br35h-tumour`` is the first):

- ``ROOT/images/*`` plus ``ROOT/boxes.csv`` (``file,width,height,x_center,y_center,box_width,
  box_height``: the tumour's box as fractions of the image size, YOLO convention);
- ``ROOT/*`` images directly, with or without ``boxes.csv``;
- a box CSV file itself, whose ``file`` column is relative to the CSV's folder or its
  ``images/`` subfolder.

No tumour type is invented: every image is labelled only "tumour present".
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from mrimaster.data.folders import Skipped, image_files
from mrimaster.data.labels import canonical_label
from mrimaster.errors import DataError

PRESENCE_LABEL = "tumour_present"
BOX_FILE = "boxes.csv"


@dataclass(frozen=True)
class Box:
    """A tumour's bounding box as fractions of the image size (YOLO convention).

    Attributes:
        x_center, y_center: Centre, in ``[0, 1]`` of the width / height.
        width, height: Size, in ``[0, 1]`` of the width / height.
    """

    x_center: float
    y_center: float
    width: float
    height: float

    def pixel_bounds(self, img_w: int, img_h: int) -> tuple[int, int, int, int]:
        """``(top, bottom, left, right)`` in pixels of an ``img_w x img_h`` image (exclusive
        ends, clipped to the image, at least one pixel)."""
        left = int(max(0, (self.x_center - self.width / 2) * img_w))
        right = int(min(img_w, max(left + 1, round((self.x_center + self.width / 2) * img_w))))
        top = int(max(0, (self.y_center - self.height / 2) * img_h))
        bottom = int(min(img_h, max(top + 1, round((self.y_center + self.height / 2) * img_h))))
        return top, bottom, left, right


@dataclass
class PresenceScan:
    """Images of a presence-only dataset.

    Attributes:
        root: The folder paths are relative to.
        paths: Image files, sorted.
        boxes: Tumour box per image path, where the CSV has one.
        skipped: Files that were not used, and why.
    """

    root: Path
    paths: list[Path] = field(default_factory=list)
    boxes: dict[Path, Box] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)


def is_presence_dataset(path: Path) -> bool:
    """True for a box CSV, or a folder with no class subfolders but images or a box CSV."""
    path = Path(path)
    if path.is_file():
        return path.suffix.lower() == ".csv"
    if not path.is_dir():
        return False
    subdirs = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if any(canonical_label(p.name) for p in subdirs):
        return False
    return (path / BOX_FILE).is_file() or (path / "images").is_dir() or any(
        p.is_file() for p in path.iterdir())


def _read_boxes(csv_path: Path, image_dir: Path) -> dict[Path, Box]:
    boxes: dict[Path, Box] = {}
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        need = {"file", "x_center", "y_center", "box_width", "box_height"}
        if not reader.fieldnames or not need <= set(reader.fieldnames):
            raise DataError(f"{csv_path} lacks the columns {sorted(need)}",
                            "use the YOLO-style box CSV layout of br35h-tumour/boxes.csv")
        for row in reader:
            try:
                box = Box(float(row["x_center"]), float(row["y_center"]),
                          float(row["box_width"]), float(row["box_height"]))
            except ValueError as exc:
                raise DataError(f"{csv_path}: bad box values in row {row}") from exc
            boxes[image_dir / row["file"]] = box
    return boxes


def scan_presence(path: Path) -> PresenceScan:
    """Find the images (and boxes) of a presence-only dataset.

    Raises:
        DataError: nothing there, or a box CSV naming no existing image.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"dataset {path} does not exist")
    csv_path = path if path.is_file() else path / BOX_FILE
    root = csv_path.parent if path.is_file() else path
    image_dir = root / "images" if (root / "images").is_dir() else root
    scan = PresenceScan(root)
    if csv_path.is_file():
        boxes = _read_boxes(csv_path, image_dir)
        scan.paths = sorted(p for p in boxes if p.is_file())
        scan.skipped += [Skipped(p, "listed in the box file but missing")
                         for p in sorted(boxes) if not p.is_file()]
        scan.boxes = {p: boxes[p] for p in scan.paths}
    else:
        scan.paths = [p for p in image_files(image_dir, scan.skipped)
                      if p.name != BOX_FILE]
    if not scan.paths:
        raise DataError(f"no images found in {path}",
                        "pass a folder of tumour images, or a box CSV next to them")
    return scan
