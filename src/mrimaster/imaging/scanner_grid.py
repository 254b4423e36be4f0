"""Simulated acquisition geometry: a scanner's oblique slice grid and a volume resampled onto it.

:class:`GridSpec` describes one acquisition's grid (plane, tilt, field of view, spacing, bias);
:func:`clinical_copy` resamples a research volume onto it (air subtracted, 0 outside) and
multiplies it by a smooth receive-coil bias field. World coordinates are nibabel's RAS+ mm;
:mod:`mrimaster.imaging.simulate` writes the result as DICOM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage

RAS_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # its own inverse
# (row direction, column direction) in LPS for an untilted plane; the normal is their cross.
_PLANES: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "axial": ((1, 0, 0), (0, 1, 0)),
    "sagittal": ((0, 1, 0), (0, 0, -1)),
    "coronal": ((1, 0, 0), (0, 0, -1)),
}


@dataclass
class GridSpec:
    """One acquisition's grid.

    Attributes:
        plane: "axial", "sagittal" or "coronal": the untilted slice plane.
        pixel: In-plane spacing, mm (rows and columns).
        slice: Slice spacing, mm; the slice thickness is the same (no gap).
        tilt: Rotations (rx, ry, rz) in degrees about the LPS x, y, z axes, applied to the plane.
        fov: Field of view (in-plane along rows, in-plane down columns, slab), mm.
        shift: Offset (x, y, z) of the grid centre from the content's centre, RAS mm.
        bias: Bias amplitude (0..0.4): the field is exp(p) with p spanning [-bias, bias].
    """

    plane: str = "axial"
    pixel: float = 1.0
    slice: float = 1.0
    tilt: tuple[float, float, float] = (0.0, 0.0, 0.0)
    fov: tuple[float, float, float] = (240.0, 240.0, 150.0)
    shift: tuple[float, float, float] = (0.0, 0.0, 0.0)
    bias: float = 0.0

    def __post_init__(self) -> None:
        if self.plane not in _PLANES or not 0 <= self.bias <= 0.4 or min(self.pixel,
                                                                           self.slice) <= 0:
            raise ValueError(f"GridSpec: plane {self.plane!r} (axial/sagittal/coronal), "
                             f"bias {self.bias} (0..0.4), spacing {self.pixel}/{self.slice} mm")

    def shape(self) -> tuple[int, int, int]:
        """Voxels (columns, rows, slices) covering :attr:`fov`."""
        return (max(1, round(self.fov[0] / self.pixel)), max(1, round(self.fov[1] / self.pixel)),
                max(1, round(self.fov[2] / self.slice)))


def _rotation(tilt: tuple[float, float, float]) -> np.ndarray:
    rx, ry, rz = (math.radians(t) for t in tilt)
    cx, sx, cy, sy, cz, sz = math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry), \
        math.cos(rz), math.sin(rz)
    x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return z @ y @ x


def background(data: np.ndarray) -> float:
    """The most common value on the faces of ``data`` (3D): the air level."""
    faces = np.concatenate([data[[0, -1]].ravel(), data[:, [0, -1]].ravel(),
                            data[:, :, [0, -1]].ravel()])
    values, counts = np.unique(faces, return_counts=True)
    return float(values[counts.argmax()])


def content_centre(image: nib.Nifti1Image) -> np.ndarray:
    """Centroid (RAS mm, shape (3,)) of the voxels that differ from the background."""
    data = np.asanyarray(image.dataobj)
    idx = np.argwhere(data != background(data))
    if len(idx) == 0:
        idx = np.argwhere(np.ones(data.shape[:3], bool))
    return np.asarray(nib.affines.apply_affine(image.affine, idx.mean(axis=0)))


def grid_affine(spec: GridSpec, centre: np.ndarray) -> np.ndarray:
    """The RAS affine (4, 4) of ``spec``'s grid centred at ``centre`` (RAS mm) plus its shift."""
    row, col = (np.asarray(v, float) for v in _PLANES[spec.plane])
    rot = _rotation(spec.tilt)
    axes = rot @ np.stack([row, col, np.cross(row, col)], axis=1)  # LPS columns
    lps = np.eye(4)
    lps[:3, :3] = axes * np.array([spec.pixel, spec.pixel, spec.slice])
    half = (np.asarray(spec.shape(), float) - 1) / 2
    centre_lps = (RAS_LPS[:3, :3] @ (np.asarray(centre, float) + np.asarray(spec.shift)))
    lps[:3, 3] = centre_lps - lps[:3, :3] @ half
    return RAS_LPS @ lps


def resample(data: np.ndarray, affine: np.ndarray, target: np.ndarray,
             shape: tuple[int, ...], order: int = 1) -> np.ndarray:
    """``data`` (3D, voxel-to-RAS ``affine``) sampled on the grid ``target`` of ``shape``;
    0 outside. Returns float32 of ``shape``."""
    to_in = np.linalg.inv(affine) @ target
    ijk = np.indices(shape, dtype=np.float32).reshape(3, -1)
    coords = to_in[:3, :3].astype(np.float32) @ ijk + to_in[:3, 3:4].astype(np.float32)
    out = ndimage.map_coordinates(np.asarray(data, np.float32), coords, order=order,
                                  mode="constant", cval=0.0, prefilter=False)
    return out.reshape(shape).astype(np.float32)


def bias_field(affine: np.ndarray, shape: tuple[int, int, int], amplitude: float,
               seed: int) -> np.ndarray:
    """A smooth multiplicative field exp(p), p a random quadratic in world mm scaled to span
    [-amplitude, amplitude] over the grid. Returns float32 of ``shape``."""
    rng = np.random.default_rng(seed)
    ijk = np.indices(shape, dtype=np.float32).reshape(3, -1)
    xyz = (affine[:3, :3] @ ijk + affine[:3, 3:4]) / 100.0  # decimetres
    xyz -= xyz.mean(axis=1, keepdims=True)
    x, y, z = xyz
    terms = [x, y, z, x * y, x * z, y * z, x * x, y * y, z * z]
    p = sum(c * t for c, t in zip(rng.normal(size=len(terms)), terms, strict=True))
    p = np.asarray(p, np.float64)
    span = p.max() - p.min()
    p = (p - (p.max() + p.min()) / 2) * (2 * amplitude / span if span > 0 else 0.0)
    return np.exp(p).reshape(shape).astype(np.float32)


def clinical_copy(image: nib.Nifti1Image, spec: GridSpec, seed: int) -> nib.Nifti1Image:
    """``image`` as a scanner would have acquired it on ``spec``'s oblique grid.

    Args:
        image: A 3D volume (any dtype), RAS affine.
        spec: The target grid; centred on the image's content (voxels unlike the background)
            plus ``spec.shift``.
        seed: Seeds the bias field.

    Returns:
        float32 ``spec.shape()`` volume (columns, rows, slices) with the new grid's affine:
        (input - background) linearly resampled (0 outside the input) times the bias field.
    """
    data = np.asanyarray(image.dataobj).astype(np.float32)
    data = data - np.float32(background(data))
    target = grid_affine(spec, content_centre(image))
    shape = spec.shape()
    out = resample(data, image.affine, target, shape)
    if spec.bias > 0:
        out *= bias_field(target, shape, spec.bias, seed)
    result = nib.Nifti1Image(out, target)
    result.header.set_xyzt_units("mm")
    return result
