"""Voxel grids: do a case's volumes share one, and resampling to and from the model's spacing.

A case's modalities must lie on one grid (same shape, and affines that put every corner of the
grid within :data:`GRID_TOLERANCE` of a voxel of each other); otherwise voxel ``(i, j, k)`` of
one image is not the same place in the head as in another, and the error says what differs.
Volumes whose spacing differs from the model's training spacing are resampled to it (images
linearly, label maps nearest-neighbour) and the result is brought back to the input grid,
nearest-neighbour. The resampled grid keeps the field of view exactly: its spacing is the
training spacing rounded so that a whole number of voxels spans the input's extent (within half
a voxel of the training spacing).
"""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np

from mrimaster.errors import DataError

log = logging.getLogger(__name__)

AFFINE_TOLERANCE = 1e-2
"""Direction-cosine and origin differences (mm) below which two affines are described as the
same in :func:`describe_difference`."""

GRID_TOLERANCE = 0.1
"""Largest distance, in voxels (the smallest voxel side of the two grids), between where two
volumes put any corner of the grid: float rounding in converters stays far below it; a
misregistration, or a series slightly rotated or rescaled against another, far above."""

SPACING_TOLERANCE = 0.05
"""Relative spacing difference under which a volume is used as it is (not resampled)."""

FAR_SPACING = 2.0
"""A voxel side more than this many times the training spacing gets a warning: the model
sees interpolated slices, and thin structures may be missed."""

MIN_EXTENT_MM = 30.0
"""A volume shorter than this along any axis is far from holding a brain (about 140 x 170 x
120 mm) and is refused: a slab of a few slices, or a 2D picture stacked into a volume, would
get tumour masks the model has no basis for. Between this and :data:`FOV_RANGE_MM` a warning
is given."""

FOV_RANGE_MM = (120.0, 320.0)
"""Fields of view (per axis, mm) outside this range get a warning: the training volumes
(BraTS, 240 x 240 x 155 mm) cover the whole head; a partial or much larger field of view is
unlike them."""


def _mm(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"


def describe_difference(a: nib.Nifti1Image, b: nib.Nifti1Image) -> str:
    """What differs between two images' grids, in words (shape, spacing, orientation,
    origin)."""
    parts = []
    if a.shape[:3] != b.shape[:3]:
        parts.append(f"shape {a.shape[:3]} vs {b.shape[:3]}")
    za, zb = voxel_sizes(a), voxel_sizes(b)
    if not np.allclose(za, zb, atol=1e-3):
        parts.append(f"spacing {_mm(za)} vs {_mm(zb)} mm")
    oa, ob = nib.aff2axcodes(a.affine), nib.aff2axcodes(b.affine)
    if oa != ob:
        parts.append(f"orientation {''.join(map(str, oa))} vs {''.join(map(str, ob))}")
    elif not np.allclose(a.affine[:3, :3], b.affine[:3, :3], atol=1e-6, rtol=0) and \
            np.allclose(za, zb, atol=1e-3):
        parts.append("direction cosines differ (the volumes are rotated against each other)")
    shift = np.asarray(a.affine[:3, 3]) - np.asarray(b.affine[:3, 3])
    if np.abs(shift).max() > AFFINE_TOLERANCE:
        parts.append(f"origin shifted by {_mm(shift)} mm")
    if a.shape[:3] == b.shape[:3]:
        parts.append(f"grid corners up to {corner_distance(a, b):.2g} mm apart")
    return "; ".join(parts)


def check_same_grid(images: list[nib.Nifti1Image], names: list[str], case: str) -> None:
    """Raise when the volumes do not share one grid.

    Args:
        images: The case's volumes (3D, or 4D whose first three axes are the grid).
        names: What each is (``flair``, ``label map``, ...), for the message.
        case: The case's name.

    Raises:
        DataError: shapes differ, or grid corners more than :data:`GRID_TOLERANCE` of a voxel
            apart; says which volume and how.
    """
    ref = images[0]
    for img, name in zip(images[1:], names[1:], strict=True):
        if not same_grid(img, ref):
            raise DataError(f"case {case}: {name} is not on the grid of {names[0]} "
                            f"({describe_difference(img, ref)})",
                            "register and resample every modality onto one grid (for example "
                            "the FLAIR's) before segmenting")


def same_grid(a: nib.Nifti1Image, b: nib.Nifti1Image) -> bool:
    """Whether ``a`` and ``b`` share one grid: the same shape (first three axes) and grid
    corners at most :data:`GRID_TOLERANCE` of the smaller voxel side apart."""
    tolerance = GRID_TOLERANCE * min(voxel_sizes(a).min(), voxel_sizes(b).min())
    return a.shape[:3] == b.shape[:3] and corner_distance(a, b) <= tolerance


def voxel_sizes(img: nib.Nifti1Image) -> np.ndarray:
    """``(3,)`` voxel sizes (mm) along the file's axes, from the affine (not the header's
    pixdim, which a converter may leave inconsistent)."""
    return np.asarray(nib.affines.voxel_sizes(np.asarray(img.affine, np.float64)))


def corner_distance(a: nib.Nifti1Image, b: nib.Nifti1Image) -> float:
    """Largest distance (mm) between where ``a``'s and ``b``'s affines put the 8 corners of
    ``a``'s voxel grid."""
    n = np.asarray(a.shape[:3], np.float64) - 1
    corners = np.array([[i * n[0], j * n[1], k * n[2], 1.0]
                        for i in (0, 1) for j in (0, 1) for k in (0, 1)])
    diff = corners @ (np.asarray(a.affine, np.float64) - np.asarray(b.affine, np.float64)).T
    return float(np.linalg.norm(diff[:, :3], axis=1).max())


def working_shape(shape: tuple[int, ...], zooms: np.ndarray, spacing: np.ndarray
                  ) -> tuple[int, int, int] | None:
    """The grid shape at ``spacing`` covering the same extent, or ``None`` when the input's
    ``zooms`` are within :data:`SPACING_TOLERANCE` of it (no resampling)."""
    if np.all(np.abs(zooms - spacing) <= SPACING_TOLERANCE * spacing):
        return None
    out = np.maximum(np.round(np.asarray(shape[:3]) * zooms / spacing), 8).astype(int)
    return int(out[0]), int(out[1]), int(out[2])


def warn_if_unusual(zooms: np.ndarray, shape: tuple[int, ...], spacing: np.ndarray,
                    case: str) -> list[str]:
    """Log and return warnings for a spacing or field of view far from the training data.

    Raises:
        DataError: the volume is shorter than :data:`MIN_EXTENT_MM` along an axis.
    """
    fov = np.asarray(shape[:3]) * zooms
    if (fov < MIN_EXTENT_MM).any():
        raise DataError(f"case {case}: the volume covers only {_mm(np.round(fov))} mm, too "
                        f"little along an axis to hold a brain (under {MIN_EXTENT_MM:g} mm)",
                        "segment a 3D volume of the whole brain (the model was trained on "
                        "whole-brain BraTS volumes)")
    notes = []
    coarse = zooms > FAR_SPACING * spacing
    if coarse.any():
        notes.append(f"case {case}: voxels of {_mm(zooms)} mm are much coarser than the "
                     f"training data's {_mm(spacing)} mm; the volume is resampled, "
                     "but thin structures and small lesions may be missed")
    lo, hi = FOV_RANGE_MM
    if (fov < lo).any() or (fov > hi).any():
        notes.append(f"case {case}: field of view {_mm(np.round(fov))} mm is "
                     f"unlike the training volumes' (whole head, about 240 x 240 x 155 mm); "
                     "check that the whole brain is covered")
    for note in notes:
        log.warning(note)
    return notes


def resample_image(data: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``(D, H, W)`` float -> ``shape``, trilinear, voxel edges aligned (same extent)."""
    from scipy import ndimage

    factors = [o / i for o, i in zip(shape, data.shape, strict=True)]
    return ndimage.zoom(data, factors, order=1, mode="nearest", grid_mode=True).astype(
        np.float32)


def resample_labels(data: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``(..., D, H, W)`` integer or bool label map -> ``shape`` (last three axes),
    nearest-neighbour (label values are never blended)."""
    from scipy import ndimage

    lead = data.ndim - 3
    factors = [1.0] * lead + [o / i for o, i in zip(shape, data.shape[lead:], strict=True)]
    out = ndimage.zoom(data.astype(np.uint8), factors, order=0, mode="nearest", grid_mode=True)
    assert out.shape[lead:] == tuple(shape), (out.shape, shape)
    return out.astype(data.dtype)
