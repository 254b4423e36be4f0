"""2D axial slices from 3D BraTS cases, as extra classification examples from other scanners.

Every BraTS case is a glioma. Axial slices through its tumour are glioma examples; slices well
away from it (no tumour label within ``margin`` slices, and a full cross-section of brain) are
"no tumour" examples. Taking both from the same skull-stripped volumes keeps skull-stripping
from becoming a shortcut for either class.

Intensities are windowed per volume to the 0.5-99.5 percentiles of the non-zero (brain) voxels
and mapped to 1-255, background 0, then rotated so that anterior is up, as slices are usually
displayed. The result goes through :func:`mrimaster.data.images.prepare_slice` like any file.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from mrimaster.data.images import prepare_slice
from mrimaster.errors import DataError
from mrimaster.segmentation.cases import find_cases
from mrimaster.segmentation.labels import to_regions

log = logging.getLogger(__name__)

SLICE_MODALITIES: tuple[str, ...] = ("flair", "t1", "t1ce", "t2")


@dataclass
class BratsSlices:
    """Slices cut from BraTS cases.

    Attributes:
        images: ``(N, S, S)`` uint8, preprocessed like any slice.
        labels: ``glioma`` or ``no_tumor`` per slice.
        sources: ``case/modality/z`` per slice.
    """

    images: np.ndarray
    labels: list[str]
    sources: list[str]


def brain_mask(volume: np.ndarray) -> np.ndarray:
    """Voxels that differ from the background value (the corner voxel's: 0 for raw BraTS
    volumes, a negative constant for z-scored ones)."""
    return np.abs(volume - volume[0, 0, 0]) > 1e-6


def to_uint8(volume: np.ndarray) -> np.ndarray:
    """Window a volume to its brain's 0.5-99.5 percentiles: float -> uint8, background 0.

    Args:
        volume: ``(X, Y, Z)`` float; background voxels share the corner voxel's value.
    """
    brain = brain_mask(volume)
    if not brain.any():
        return np.zeros(volume.shape, np.uint8)
    lo, hi = np.percentile(volume[brain], [0.5, 99.5])
    scaled = 1 + 254 * np.clip((volume - lo) / max(hi - lo, 1e-6), 0, 1)
    return np.where(brain, scaled, 0).astype(np.uint8)


def _evenly(indices: np.ndarray, n: int) -> np.ndarray:
    if len(indices) <= n:
        return indices
    return indices[np.linspace(0, len(indices) - 1, n).round().astype(int)]


def pick_slices(tumour: np.ndarray, brain: np.ndarray, per_case: int, margin: int = 3
                ) -> tuple[np.ndarray, np.ndarray]:
    """Axial indices of tumour and of tumour-free slices.

    Args:
        tumour: ``(X, Y, Z)`` bool whole-tumour mask.
        brain: ``(X, Y, Z)`` bool brain mask.
        per_case: Tumour slices to take (half as many tumour-free ones).
        margin: Tumour-free slices have no tumour within this many slices.

    Returns:
        ``(tumour_z, free_z)`` int arrays, evenly spread.
    """
    t_area = tumour.sum((0, 1))
    b_area = brain.sum((0, 1))
    with_tumour = np.flatnonzero((t_area >= 100) & (t_area >= 0.02 * np.maximum(b_area, 1)))
    near = np.convolve(t_area > 0, np.ones(2 * margin + 1), mode="same") > 0
    free = np.flatnonzero(~near & (b_area >= 0.5 * b_area.max()))
    return _evenly(with_tumour, per_case), _evenly(free, max(per_case // 2, 1))


def cut_brats_slices(root: Path, per_case: int = 8
                     ) -> Iterator[tuple[str, str, np.ndarray]]:
    """Labelled axial slices of every case under ``root``, before any resizing.

    Yields:
        ``(label, source, slice)``: ``glioma`` or ``no_tumor``; ``case/modality/z``; ``(H, W)``
        uint8 windowed as :func:`to_uint8` and rotated anterior-up.
    """
    for case in find_cases(Path(root)):
        if case.seg is None or case.convention is None or not case.images:
            continue
        seg = nib.as_closest_canonical(nib.load(str(case.seg)))
        tumour = to_regions(np.asarray(seg.dataobj), case.convention)[0][0]
        for modality in SLICE_MODALITIES:
            if modality not in case.images:
                continue
            vol = np.asarray(nib.as_closest_canonical(nib.load(str(case.images[modality])))
                             .dataobj, dtype=np.float32)
            if vol.shape != tumour.shape:
                log.warning("skipped %s %s: shape %s differs from its labels %s", case.name,
                            modality, vol.shape, tumour.shape)
                continue
            gray = to_uint8(vol)
            t_z, f_z = pick_slices(tumour, brain_mask(vol), per_case)
            for label, zs in (("glioma", t_z), ("no_tumor", f_z)):
                for z in zs:
                    yield label, f"{case.name}/{modality}/{int(z)}", np.rot90(gray[:, :, z])


def load_brats_slices(root: Path, size: int, per_case: int = 8) -> BratsSlices:
    """Cut labelled axial slices from every case under ``root`` (see the module docstring),
    preprocessed to ``size`` like any file.

    Raises:
        DataError: no case with a label map under ``root``.
    """
    images: list[np.ndarray] = []
    labels: list[str] = []
    sources: list[str] = []
    for label, source, gray in cut_brats_slices(root, per_case):
        images.append(prepare_slice(gray, size))
        labels.append(label)
        sources.append(source)
    if not images:
        raise DataError(f"no labelled BraTS case under {root}",
                        "point brats_dir at a folder of BraTS case folders with label maps")
    return BratsSlices(np.stack(images), labels, sources)


def write_brats_slices(root: Path, out_dir: Path, per_case: int = 8) -> int:
    """Write the slices of :func:`cut_brats_slices` as PNG files in the class-per-folder layout
    (``out_dir/glioma/``, ``out_dir/no_tumor/``), so that they are read like any user's files.

    Returns:
        The number of files written.

    Raises:
        DataError: no case with a label map under ``root``.
    """
    n = 0
    for label, source, gray in cut_brats_slices(root, per_case):
        path = Path(out_dir) / label / (source.replace("/", "_") + ".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(gray)).save(path)
        n += 1
    if n == 0:
        raise DataError(f"no labelled BraTS case under {root}",
                        "point at a folder of BraTS case folders with label maps")
    return n
