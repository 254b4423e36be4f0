"""Label maps of mask versions (:mod:`mrimaster.serving.masks`): a NIfTI-1 mask decoded and
encoded, its labels checked against the case's convention, its regions measured.

A label map is ``(X, Y, Z)`` uint8 in the file's voxel order (0 background, the other values
those of the case's label convention, e.g. ``brats2021`` or ``wt``) on a 4x4 affine (voxel ->
scanner mm). Regions are WT, TC and ET as :mod:`mrimaster.segmentation.labels` defines them
(``None`` where the convention does not); volumes are in mL, Dice in [0, 1]. Nothing here
touches the database or the object store.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass

import nibabel as nib
import numpy as np

from mrimaster.serving.cases import UploadError

REGIONS = ("WT", "TC", "ET")


@dataclass(frozen=True)
class LabelMap:
    """A decoded mask: ``labels`` ``(X, Y, Z)`` uint8 in the file's voxel order, its 4x4
    ``affine`` (voxel -> scanner mm) and voxel volume in mL."""

    labels: np.ndarray
    affine: np.ndarray
    voxel_ml: float


def decode(data: bytes, max_bytes: int) -> LabelMap:
    """A NIfTI-1 label map from ``data`` (gzip or raw), at most ``max_bytes`` once unpacked.

    Raises:
        UploadError: not a NIfTI, larger than ``max_bytes``, not 3D, non-integer values (422).
    """
    if data[:2] == b"\x1f\x8b":
        unpack = zlib.decompressobj(wbits=31)
        try:
            raw = unpack.decompress(data, max_bytes + 1)
        except zlib.error as exc:
            raise UploadError(f"the mask is not a valid gzip file ({exc})",
                              "send the NIfTI as saved by the viewer", 422) from exc
        if len(raw) > max_bytes:
            raise UploadError("the mask is larger than the AI mask's grid allows",
                              "send a mask on the AI mask's grid", 413)
    else:
        raw = data
    try:
        img = nib.Nifti1Image.from_bytes(raw)
        values = _fast_uint8(img, raw)
        if values is None:
            values = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many kinds on garbage
        raise UploadError(f"the body is not a readable NIfTI-1 mask ({type(exc).__name__})",
                          "send the mask as a .nii or .nii.gz file", 422) from exc
    if values.ndim == 4 and values.shape[3] == 1:
        values = values[..., 0]
    if values.ndim != 3:
        raise UploadError(f"the mask has {values.ndim} dimensions, not 3",
                          "send a 3D label map", 422)
    if values.dtype != np.uint8:
        if not np.issubdtype(values.dtype, np.integer) and not np.all(np.mod(values, 1) == 0):
            raise UploadError("the mask holds non-integer values", "send integer labels", 422)
        if values.min() < 0 or values.max() > 255:
            bad = sorted({int(values.min()), int(values.max())} - set(range(256)))
            raise UploadError(f"the mask holds labels {bad} outside 0-255",
                              "send the labels of the case's convention", 422)
        values = values.astype(np.uint8)
    zooms = img.header.get_zooms()[:3]
    return LabelMap(values, img.affine,
                    float(np.prod(zooms)) / 1000.0)


def _fast_uint8(img: nib.Nifti1Image, raw: bytes) -> np.ndarray | None:
    """The voxels of an unscaled uint8 NIfTI straight from its bytes (a view, no copy), or
    ``None`` for any other file (nibabel reads it)."""
    header = img.header
    slope, inter = header.get_slope_inter()
    if header.get_data_dtype() != np.uint8 or slope not in (None, 1.0) \
            or inter not in (None, 0.0) or not nib.is_proxy(img.dataobj):
        return None
    shape = header.get_data_shape()
    offset = int(img.dataobj.offset)  # type: ignore[attr-defined]  # an ArrayProxy
    count = int(np.prod(shape))
    if len(raw) < offset + count:
        raise ValueError("the file is shorter than its header says")
    return np.frombuffer(raw, np.uint8, count, offset).reshape(shape, order="F")


def encode(labels: np.ndarray, affine: np.ndarray) -> bytes:
    """A gzip NIfTI-1 of ``labels`` (uint8) on ``affine``, nothing else in its header."""
    img = nib.Nifti1Image(np.asarray(labels, dtype=np.uint8), affine)
    img.header.set_data_dtype(np.uint8)
    img.header.set_xyzt_units("mm")
    return gzip.compress(img.to_bytes(), compresslevel=1, mtime=0)


def check_labels(labels: np.ndarray, convention: str) -> None:
    """Raises UploadError (422) when ``labels`` holds a value outside ``convention``."""
    from mrimaster.segmentation.labels import get_convention

    conv = get_convention(convention)
    present = np.flatnonzero(np.bincount(labels.ravel(), minlength=256))
    bad = sorted(set(present.tolist()) - set(conv.values))
    if bad:
        raise UploadError(f"the mask holds labels {bad} outside the case's {conv.name} "
                          f"convention ({conv.description})",
                          f"use only the labels {sorted(conv.values)}", 422)


def volumes_ml(labels: np.ndarray, voxel_ml: float, convention: str) -> dict[str, float | None]:
    """mL of each region of ``labels`` (``voxel_ml`` mL a voxel), rounded to 0.001 mL;
    ``None`` where the convention does not define the region."""
    counts = np.bincount(labels.ravel(), minlength=256)
    from mrimaster.segmentation.labels import get_convention

    conv = get_convention(convention)
    return {r: (round(float(counts[list(conv.regions[r])].sum()) * voxel_ml, 3)
                if r in conv.regions else None) for r in REGIONS}


def dice_per_region(a: np.ndarray, b: np.ndarray, convention: str) -> dict[str, float | None]:
    """Dice of each region between two label maps of one grid (1.0 when both are empty, as
    :func:`mrimaster.segmentation.metrics.dice`), from their joint label histogram (one pass
    over the voxels, whatever the number of regions)."""
    from mrimaster.segmentation.labels import get_convention

    conv = get_convention(convention)
    joint = np.bincount((a.ravel().astype(np.uint16) << 8) | b.ravel(),
                        minlength=65536).reshape(256, 256)
    out: dict[str, float | None] = {}
    for r in REGIONS:
        if r not in conv.regions:
            out[r] = None
            continue
        inside = np.zeros(256, dtype=bool)
        inside[list(conv.regions[r])] = True
        both = int(joint[np.ix_(inside, inside)].sum())
        total = int(joint[inside].sum()) + int(joint[:, inside].sum())
        out[r] = 1.0 if total == 0 else round(2.0 * both / total, 4)
    return out
