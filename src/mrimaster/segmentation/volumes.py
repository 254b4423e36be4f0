"""Load a case's volumes and preprocess them the same way for training and inference.

Steps: check that every volume of the case lies on one grid
(:func:`mrimaster.segmentation.geometry.check_same_grid`), reorient to the closest canonical
(RAS) orientation, check values, resample to the model's spacing when the input's differs,
find the brain (voxels that differ from the background value of any channel), crop to the
brain's bounding box, z-score each channel inside the brain (so raw scanner intensities and
already z-scored files give the same input). :func:`restore_to_input_grid` undoes the crop, the
resampling and the reorientation so that outputs lie on the input's exact grid (shape and
affine).

Images and label maps are kept apart: intensity steps never touch labels, and label maps are
only ever reoriented, cropped and resampled nearest-neighbour (never interpolated).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from mrimaster.errors import DataError
from mrimaster.segmentation.cases import MODALITIES, Case
from mrimaster.segmentation.geometry import (
    check_same_grid,
    resample_image,
    resample_labels,
    voxel_sizes,
    warn_if_unusual,
    working_shape,
)
from mrimaster.segmentation.labels import to_regions

log = logging.getLogger(__name__)


@dataclass
class Volume:
    """A case ready for a network.

    Attributes:
        image: ``(C, D, H, W)`` float32, z-scored per channel inside the brain, 0 outside;
            cropped to the brain box, canonical (RAS) orientation.
        modalities: Channel names, in order.
        brain: ``(D, H, W)`` bool brain mask (cropped).
        regions: ``(3, D, H, W)`` bool WT/TC/ET masks (cropped), or ``None`` if unlabelled.
        known: ``(3,)`` bool: which regions the label map defines.
        box: ``(3, 2)`` int crop box in the working grid.
        canonical_shape: Shape of the canonical (reoriented input) grid.
        reference: The first input image (its shape, affine and orientation are the output's).
        voxel_ml: Volume of one input voxel in millilitres.
        input_spacing: ``(3,)`` voxel size (mm) of the canonical input grid.
        work_shape: Shape of the working grid (the canonical grid resampled to the model's
            spacing; equal to ``canonical_shape`` when not resampled).
        regions_input: ``(3, *canonical_shape)`` bool reference regions on the input grid
            (for scoring what the user gets), or ``None``.
        notes: Warnings about the input (coarse spacing, unusual field of view).
    """

    image: np.ndarray
    modalities: list[str]
    brain: np.ndarray
    regions: np.ndarray | None
    known: np.ndarray
    box: np.ndarray
    canonical_shape: tuple[int, ...]
    reference: nib.Nifti1Image
    voxel_ml: float
    input_spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    work_shape: tuple[int, ...] = ()
    regions_input: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def resampled(self) -> bool:
        return tuple(self.work_shape) != tuple(self.canonical_shape)


MAX_VOXELS = 2 ** 28
"""Most voxels (all channels) a volume may declare: 268 million, e.g. 512 x 512 x 1024; a
240 x 240 x 155 BraTS volume has 9 million. Larger declared sizes are refused before any
memory is allocated for them."""


def _check_declared_size(img: Any, path: Path) -> None:
    shape = tuple(int(d) for d in img.shape)
    voxels = int(np.prod(shape, dtype=np.float64)) if shape else 0
    if voxels > MAX_VOXELS:
        raise DataError(f"{path}: declares a volume of {shape} ({voxels:,} voxels), far larger "
                        "than any brain MRI volume", "check that the file is a brain MRI volume")
    if not str(path).endswith(".gz"):
        header = img.header
        needed = int(header.get_data_offset()) + voxels * header.get_data_dtype().itemsize
        if Path(path).stat().st_size < needed:
            raise DataError(f"{path}: truncated NIfTI file ({Path(path).stat().st_size:,} "
                            f"bytes, the header declares {needed:,})",
                            "re-export or re-download the volume")


def load_nifti(path: Path) -> nib.Nifti1Image:
    """Load a NIfTI file with errors that say what is wrong.

    The voxels are read (and decompressed) once, here, and kept in the returned image, read
    only: every later ``dataobj`` use would otherwise read the file again (a study's volumes
    were read 34 times in one ``seg predict``). Copy before changing them.

    Raises:
        DataError: missing, corrupt, truncated, or declaring an implausibly large volume.
    """
    try:
        proxy = nib.load(str(path))
        if not isinstance(proxy, nib.Nifti1Image | nib.Nifti2Image):
            raise DataError(f"{path}: not a NIfTI image")
        _check_declared_size(proxy, path)
        data = np.asarray(proxy.dataobj)  # truncation fails here
        data.flags.writeable = False
        return type(proxy)(data, proxy.affine, proxy.header)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except DataError:
        raise
    except Exception as exc:  # nibabel, gzip and zlib raise many types for damaged files
        raise DataError(f"{path}: corrupt or truncated NIfTI file ({type(exc).__name__}: "
                        f"{exc})", "re-export or re-download the volume") from exc


def _canonical(img: nib.Nifti1Image, path: Path) -> np.ndarray:
    """The voxels reoriented to the closest canonical (RAS) orientation, float32.

    Raises:
        DataError: the voxel-to-world matrix is not finite or is degenerate (zero spacing).
    """
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise DataError(f"{path}: the volume's voxel-to-world matrix (affine) is degenerate "
                        "or not finite", "re-export it with valid spacing and orientation")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(nib.as_closest_canonical(img).dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel's orientation and scaling errors on odd headers
        raise DataError(f"{path}: cannot reorient the volume ({type(exc).__name__}: {exc})",
                        "re-export it as a standard 3D NIfTI volume") from exc


def _check_volume(data: np.ndarray, path: Path, what: str) -> None:
    if data.ndim != 3 or min(data.shape) < 8:
        raise DataError(f"{path}: {what} has shape {data.shape}; a 3D volume is needed",
                        "pass a 3D NIfTI volume, not a 2D slice")
    if not np.isfinite(data).all():
        raise DataError(f"{path}: {what} contains {int((~np.isfinite(data)).sum())} NaN or "
                        "infinite voxels", "fix or re-export the volume")


def _load_channels(case: Case, modalities: list[str]) -> tuple[list[np.ndarray],
                                                                nib.Nifti1Image, list[Path]]:
    if case.image4d is not None:
        img = load_nifti(case.image4d)
        if img.ndim != 4:
            raise DataError(f"{case.image4d}: expected a 4D volume (MSD layout)")
        channels = []
        for m in modalities:
            idx = MODALITIES.index(m)
            sub = nib.Nifti1Image(np.asarray(img.dataobj[..., idx], np.float32), img.affine)
            channels.append(_canonical(sub, case.image4d))
        ref = nib.Nifti1Image(np.zeros(img.shape[:3], np.uint8), img.affine, img.header)
        return channels, ref, [case.image4d] * len(modalities)
    paths = [case.images[m] for m in modalities]
    images = [load_nifti(p) for p in paths]
    for img, path, m in zip(images, paths, modalities, strict=True):
        if img.ndim != 3:
            raise DataError(f"{path}: {m} has shape {img.shape}; a 3D volume is needed",
                            "pass a 3D NIfTI volume")
    check_same_grid(images, list(modalities), case.name)
    return [_canonical(img, p) for img, p in zip(images, paths, strict=True)], images[0], paths


def brain_of(channels: Iterable[np.ndarray]) -> np.ndarray:
    """The brain as the loader takes it: ``bool``, the voxels that differ from the corner
    value (``[0, 0, 0]``: the background) in any channel (3D arrays on one grid)."""
    brain: np.ndarray | None = None
    for channel in channels:  # one channel's temporaries at a time, not the whole stack's
        differs = np.abs(channel - channel[0, 0, 0]) > 1e-6
        brain = differs if brain is None else brain | differs
    if brain is None:
        raise ValueError("brain_of needs at least one channel")
    return brain


def load_volume(case: Case, modalities: list[str], margin: int = 4,
                spacing: tuple[float, float, float] | None = None,
                scale: Mapping[str, tuple[float, float]] | None = None) -> Volume:
    """Load and preprocess ``modalities`` of ``case`` (and its labels, if any).

    ``scale``: per modality, the ``(mean, standard deviation)`` to z-score it with instead of
    its own over the brain (a follow-up study read on an earlier study's intensity scale:
    :mod:`mrimaster.segmentation.longitudinal`).

    Raises:
        DataError: missing modality, corrupt file, non-3D volume, shapes that differ, NaNs.
    """
    missing = [m for m in modalities if m not in case.available()]
    if missing:
        raise DataError(f"case {case.name} has no {', '.join(missing)} volume",
                        f"it has: {', '.join(case.available()) or 'nothing recognised'}")
    channels, reference, paths = _load_channels(case, modalities)
    for data, path, m in zip(channels, paths, modalities, strict=True):
        _check_volume(data, path, m)
    zooms = canonical_zooms(reference)
    stack = np.stack(channels)
    canonical_shape = stack.shape[1:]
    work = working_shape(canonical_shape, zooms, np.asarray(spacing)) if spacing else None
    notes = warn_if_unusual(zooms, canonical_shape, np.asarray(spacing or (1.0, 1.0, 1.0)),
                            case.name)
    if work is not None:
        stack = np.stack([resample_image(c, work) for c in stack])
    brain = brain_of(stack)
    if not brain.any():
        raise DataError(f"case {case.name}: every voxel has the background value")
    work_voxel_mm3 = float(np.prod(np.asarray(canonical_shape) * zooms / np.asarray(
        brain.shape)))
    notes += skull_notes(float(brain.sum()) * work_voxel_mm3 / 1000.0, case.name)
    idx = np.argwhere(brain)
    lo = np.maximum(idx.min(axis=0) - margin, 0)
    hi = np.minimum(idx.max(axis=0) + 1 + margin, brain.shape)
    box = np.stack([lo, hi], axis=1)
    sl = tuple(slice(a, b) for a, b in box)
    image = stack[(slice(None), *sl)].copy()
    brain_c = brain[sl]
    for c, modality in enumerate(modalities):
        vals = image[c][brain_c]
        mean, std = (scale or {}).get(modality, (float(vals.mean()), float(vals.std())))
        image[c] = np.where(brain_c, (image[c] - mean) / max(std, 1e-6), 0)
    regions, regions_full, known = None, None, np.zeros(3, bool)
    if case.seg is not None:
        seg_img = load_nifti(case.seg)
        check_same_grid([reference, seg_img], [modalities[0], "label map"], case.name)
        labels = _canonical(seg_img, case.seg)
        _check_volume(labels, case.seg, "label map")
        if case.convention is None:
            raise DataError(f"case {case.name}: label convention unknown", "pass --labels")
        regions_full, known = to_regions(labels, case.convention)
        on_work = regions_full if work is None else resample_labels(regions_full, work)
        regions = on_work[(slice(None), *sl)]
    zoom_tuple = (float(zooms[0]), float(zooms[1]), float(zooms[2]))
    return Volume(image.astype(np.float32), list(modalities), brain_c, regions, known, box,
                  canonical_shape, reference, float(np.prod(zooms)) / 1000.0, zoom_tuple,
                  brain.shape, regions_full, notes)


MAX_BRAIN_ML = 2200.0
"""Largest foreground (non-background) volume that can be a skull-stripped brain: adult brains
are about 1,100-1,700 mL, a whole head with skull and scalp 3,000 mL or more."""


def skull_notes(foreground_ml: float, case: str) -> list[str]:
    """A warning when the foreground is too large to be a skull-stripped brain."""
    if foreground_ml <= MAX_BRAIN_ML:
        return []
    note = (f"case {case}: the non-background region is {foreground_ml:,.0f} mL, more than a "
            "brain (about 1,100-1,700 mL): the volume does not look skull-stripped, and the "
            "model was trained on skull-stripped volumes (BraTS); it may mark tissue outside "
            "the brain. Skull-strip it first (e.g. HD-BET or SynthStrip)")
    log.warning(note)
    return [note]


def canonical_zooms(img: nib.Nifti1Image) -> np.ndarray:
    """``(3,)`` voxel size (mm) along the axes of the closest canonical (RAS) orientation
    (from the affine)."""
    zooms = voxel_sizes(img)
    ornt = nib.orientations.io_orientation(img.affine)
    out = np.empty(3)
    for axis, (target, _flip) in enumerate(ornt):
        out[int(target)] = zooms[axis]
    return out


def load_channels_zero_filled(case: Case, modalities: list[str], margin: int = 4,
                              spacing: tuple[float, float, float] | None = None,
                              scale: Mapping[str, tuple[float, float]] | None = None
                              ) -> Volume:
    """:func:`load_volume` of the modalities ``case`` has, with a zero channel (the z-scored
    mean) for each of ``modalities`` it lacks, in the order of ``modalities``: the input of a
    network trained with modality dropout.

    Raises:
        DataError: as :func:`load_volume`; or ``case`` has none of ``modalities``.
    """
    present = [m for m in modalities if m in case.available()]
    if not present:
        raise DataError(f"case {case.name} has none of {', '.join(modalities)}",
                        f"it has: {', '.join(case.available()) or 'nothing recognised'}")
    volume = load_volume(case, present, margin, spacing, scale)
    image = np.zeros((len(modalities), *volume.image.shape[1:]), np.float32)
    for i, m in enumerate(modalities):
        if m in present:
            image[i] = volume.image[present.index(m)]
    volume.image, volume.modalities = image, list(modalities)
    return volume


def to_canonical_grid(cropped: np.ndarray, volume: Volume) -> np.ndarray:
    """``(..., d, h, w)`` bool or integer map on the cropped working grid -> the same on the
    canonical input grid (un-cropped, resampled back nearest-neighbour if it was resampled)."""
    lead = cropped.shape[:-3]
    full = np.zeros((*lead, *volume.work_shape), dtype=cropped.dtype)
    box: tuple[Any, ...] = (Ellipsis, *(slice(int(a), int(b)) for a, b in volume.box))
    full[box] = cropped
    if volume.resampled:
        full = resample_labels(full, volume.canonical_shape)
    return full


def restore_to_input_grid(cropped: np.ndarray, volume: Volume) -> nib.Nifti1Image:
    """Put a ``(d, h, w)`` label map computed on the cropped working grid back on the input's
    grid: same shape, same affine, same orientation (resampled back nearest-neighbour, then
    only axis flips and permutations, never interpolation)."""
    full = to_canonical_grid(cropped.astype(np.uint8), volume)
    ref = volume.reference
    start = nib.orientations.io_orientation(np.diag([1.0, 1, 1, 1]))
    original = nib.orientations.io_orientation(ref.affine)
    transform = nib.orientations.ornt_transform(start, original)
    data = nib.orientations.apply_orientation(full, transform)
    if data.shape != ref.shape[:3]:
        raise AssertionError(f"restored shape {data.shape} != input {ref.shape[:3]}")
    header = ref.header.copy()
    header.set_data_dtype(np.uint8)
    out = nib.Nifti1Image(np.ascontiguousarray(data), ref.affine, header)
    out.header.set_slope_inter(1, 0)
    return out
