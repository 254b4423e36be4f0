"""Class-per-folder datasets: find the images, decode them once, report what was skipped."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mrimaster.data.images import RawStats, image_suffixes, load_slice_file, prepare_slice
from mrimaster.data.labels import CLASSES, canonical_label, known_folder_names
from mrimaster.errors import DataError, ImageLoadError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Skipped:
    """A file or folder that was not used, and why."""

    path: Path
    reason: str

    @classmethod
    def of(cls, path: Path, error: ImageLoadError) -> Skipped:
        """``path`` skipped for ``error``, whose message usually begins with the path: the
        reason is said without it, since every listing names the path first."""
        return cls(path, error.message.removeprefix(f"{path}: ").removeprefix(f"{path} "))


@dataclass
class FolderScan:
    """Image files found in a class-per-folder dataset.

    Attributes:
        root: The dataset folder.
        paths: Image files, sorted.
        labels: Canonical label of each file (see :mod:`mrimaster.data.labels`).
        skipped: Files and folders that were not used.
    """

    root: Path
    paths: list[Path] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


@dataclass
class SliceSet:
    """Decoded, preprocessed slices, ready for a model.

    Attributes:
        images: ``(N, S, S)`` uint8, cropped to the head and resized (:func:`prepare_slice`).
        paths: Source file of each image.
        labels: Canonical label per image, or ``None`` where unlabelled.
        skipped: Files that could not be used, with the reason.
        stats: Size, contrast and colour of each decoded file (for the input checks).
    """

    images: np.ndarray
    paths: list[Path]
    labels: list[str | None]
    skipped: list[Skipped]
    stats: list[RawStats] = field(default_factory=list)

    def label_indices(self) -> np.ndarray:
        """``(N,)`` int64 class indices into :data:`CLASSES` (all images must be labelled)."""
        if any(lab is None for lab in self.labels):
            raise DataError("some images have no class label")
        return np.array([CLASSES.index(lab) for lab in self.labels if lab], dtype=np.int64)


def image_files(folder: Path, skipped: list[Skipped]) -> list[Path]:
    """Image files under ``folder`` (recursively, sorted); other files go to ``skipped``."""
    suffixes = image_suffixes()
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.name.startswith("."):
            continue
        if path.suffix.lower() in suffixes:
            found.append(path)
        else:
            skipped.append(Skipped(path, f"not an image file type ({path.suffix or 'no suffix'})"))
    return found


def scan_class_folders(root: Path) -> FolderScan:
    """Find images in ``root/<class>/**`` with class folders in any accepted naming variant.

    Raises:
        DataError: ``root`` does not exist, or holds no image in a known class folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist",
                        "pass a folder with one subfolder per class, or set MRIMASTER_DATA_ROOT")
    scan = FolderScan(root)
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        label = canonical_label(sub.name)
        if label is None:
            scan.skipped.append(Skipped(sub, "unknown class folder"))
            continue
        for path in image_files(sub, scan.skipped):
            scan.paths.append(path)
            scan.labels.append(label)
    if not scan.paths:
        unknown = [s.path.name for s in scan.skipped if s.reason == "unknown class folder"]
        found = f" (unknown class folder: {', '.join(unknown)})" if unknown else ""
        raise DataError(
            f"no images found in class folders under {root}{found}",
            f"expected subfolders named one of: {', '.join(known_folder_names())}")
    return scan


def collect_image_paths(inputs: Iterable[Path]) -> tuple[list[Path], list[Skipped]]:
    """Expand files and folders (recursively) into image files, for unlabelled prediction."""
    paths: list[Path] = []
    skipped: list[Skipped] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            paths.extend(image_files(item, skipped))
        elif item.is_file():
            paths.append(item)
        else:
            skipped.append(Skipped(item, "no such file or folder"))
    return paths, skipped


def _decode(path: Path, size: int) -> tuple[np.ndarray, RawStats] | ImageLoadError:
    try:
        gray, raw = load_slice_file(path)
    except ImageLoadError as exc:
        return exc
    return prepare_slice(gray, size), raw


def load_slices(paths: list[Path], labels: list[str | None] | None, size: int,
                progress: bool = True, skipped: list[Skipped] | None = None,
                workers: int | None = None, log_skipped: bool = True) -> SliceSet:
    """Decode and preprocess images; undecodable files are skipped and reported (logged as a
    warning, unless ``log_skipped`` is false: the caller lists them), not fatal.

    Files are decoded by ``workers`` threads (default: one per CPU core, at most 8): Pillow
    and NumPy release the GIL while decoding and resizing, so both cores of a small machine
    work. The order of the result is the order of ``paths``.
    """
    skipped = list(skipped or [])
    labels_in: list[str | None] = list(labels) if labels is not None else [None] * len(paths)
    images, kept_paths, kept_labels, stats = [], [], [], []
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        decoded = pool.map(lambda p: _decode(p, size), paths)
        for path, label, out in tqdm(zip(paths, labels_in, decoded, strict=True),
                                     total=len(paths), desc="decoding", unit="img",
                                     disable=None if progress else True, leave=False):
            if isinstance(out, ImageLoadError):
                skipped.append(Skipped.of(path, out))
                continue
            images.append(out[0])
            stats.append(out[1])
            kept_paths.append(path)
            kept_labels.append(label)
    for item in skipped if log_skipped else []:
        log.warning("skipped %s: %s", item.path, item.reason)
    array = np.stack(images) if images else np.zeros((0, size, size), np.uint8)
    return SliceSet(array, kept_paths, kept_labels, skipped, stats)


def load_class_folders(root: Path, size: int, progress: bool = True) -> SliceSet:
    """Scan and decode a class-per-folder dataset (see :func:`scan_class_folders`)."""
    scan = scan_class_folders(root)
    labels: list[str | None] = list(scan.labels)
    result = load_slices(scan.paths, labels, size, progress, scan.skipped)
    if len(result.paths) == 0:
        raise DataError(f"none of the images under {root} could be decoded",
                        "see the skipped files listed above")
    return result
