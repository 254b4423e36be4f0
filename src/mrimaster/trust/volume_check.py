"""Is this 3D volume a brain MRI? The 2D brain-MRI check (:mod:`mrimaster.trust.brain_check`)
on slices cut across it, before the segmenter reads it.

The segmenter's own trust figures (:mod:`mrimaster.segmentation.case_trust`) judge its *mask*:
given a volume that is not a brain MRI at all (a QA phantom, a CT, noise), they refer it, but
the result still carries a tumour volume (a scanner's QA phantom read as 159.5 mL of "whole
tumour" with status ``refer``, 2026-12-07). This check answers the question before any mask
exists, with the model that answers it for single slices: it was trained on axial, coronal and
sagittal slices of brain MRI volumes (``brats-mini``, every sequence) besides 2D slices of other
sources, against many kinds of image that are not MRI.

The rule, fixed before it was measured: cut :data:`PER_AXIS` slices along each axis across the
volume's content (:func:`volume_slices`, as the check's training cut its volume slices), score
each, and refuse the volume when **more than half** of them are judged not brain MRI
(:data:`REFUSE_SHARE`). A majority because single slices at the brain's edge can look like
anything, and the check is built to reject very few real slices (at most 0.5% of the shared
sets' MRI): a real brain volume would need most of its slices to fail at once.

What it measured on 2026-12-07 (``benchmarks/eval_volume_check.py``): 57 of 57 brain MRI volumes
pass (every ``brats-mini`` sequence, 8 of whose 14 cases trained the 2D check and 2 set its
threshold; each case's sequences as a simulated clinical study writes them; the pydeface mean
head, unstripped), at most 2 of 30 slices rejected in one; 19 of 19 volumes that are not brain
MRI are refused (a GE QA phantom, real scanner DICOM; generated CT-like heads, noise,
checkerboards, balls, a stacked photo: :mod:`mrimaster.data.non_mri_volumes`). About 0.5-0.9 s a
series on 2 cores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np

from mrimaster.data.brats_slices import to_uint8
from mrimaster.data.images import prepare_slice
from mrimaster.trust.brain_check import BrainCheck

PREPARED_SIZE = 192
"""Side of the prepared slice (:func:`~mrimaster.data.images.prepare_slice`) that the 2D check's
thumbnail is made from, as in its training."""
PER_AXIS = 10
"""Slices cut along each of the three axes."""
REFUSE_SHARE = 0.5
"""Refuse a volume when more than this share of its slices are judged not brain MRI."""
MIN_SLICES = PER_AXIS
"""Refuse a volume across which fewer slices can be cut (one or a few slices: not a volume a
3D segmentation can read)."""
SPACING_MM = 1.0
"""Volumes are resampled to this isotropic voxel size before slicing, so that a slice across
thick slices (a clinical 2D sequence: 4-6 mm) has the head's proportions and the texture of
the 1 mm volumes the check's training slices came from. (2 mm was tried first: a CT-like head
with a noisy inside then passed, 14 of 30 slices rejected; at 1 mm 26 of 30.)"""
MIN_EXTENT_MM = 100
"""Slices are cut only along an axis across which the content spans at least this (mm) both
ways: an adult brain spans about 140 x 170 x 120 mm, so a whole-head volume is cut along all
three axes, and a slab (partial coverage: 60 mm of axial slices, say) only along its own
plane, whose slices show the whole head. With no such axis a volume is refused: too small to be
a brain MRI volume."""


def volume_slices(volume: np.ndarray, per_axis: int, min_brain: float = 0.3,
                  min_extent: int = 0) -> list[tuple[str, np.ndarray]]:
    """Slices across the brain of a 3D volume along each axis, shown upright.

    Args:
        volume: ``(X, Y, Z)`` float, RAS (``nibabel.as_closest_canonical``); background voxels
            share the corner voxel's value.
        per_axis: Slices per axis, evenly spread over those whose foreground area (windowed
            value above 25 of 255: the head or brain, not the background's noise) is at least
            ``min_brain`` of the axis's largest.
        min_extent: Only cut along an axis when the content spans at least this many voxels
            along both of the other two (a slab's thin side gives strips, not slices).

    Returns:
        ``(axis/index, (H, W) uint8)`` pairs, windowed as
        :func:`mrimaster.data.brats_slices.to_uint8`; empty for a volume with no content.
    """
    gray = to_uint8(volume)
    brain = gray > 25
    spans = [int(np.ptp(np.flatnonzero(brain.any(axis=tuple(b for b in range(3) if b != a)))))
             + 1 if brain.any() else 0 for a in range(3)]
    out = []
    for axis, name in ((2, "axial"), (1, "coronal"), (0, "sagittal")):
        if min(s for a, s in enumerate(spans) if a != axis) < min_extent:
            continue
        area = brain.sum(axis=tuple(a for a in range(3) if a != axis))
        ok = np.flatnonzero(area >= min_brain * max(int(area.max()), 1))
        for k in ok[np.linspace(0, len(ok) - 1, min(per_axis, len(ok))).round().astype(int)]:
            out.append((f"{name}/{int(k)}", np.rot90(np.take(gray, int(k), axis=axis))))
    return out


@dataclass
class VolumeVerdict:
    """The check's answer for one volume.

    Attributes:
        slices: Slices scored.
        rejected: Of those, judged not brain MRI.
        median_p: Median probability of being a brain MRI slice, in [0, 1].
    """

    slices: int
    rejected: int
    median_p: float

    @property
    def refused(self) -> bool:
        """More than :data:`REFUSE_SHARE` of the slices rejected, or fewer than
        :data:`MIN_SLICES` to score."""
        return self.slices < MIN_SLICES or self.rejected > REFUSE_SHARE * self.slices

    def as_dict(self) -> dict[str, Any]:
        return {"slices": self.slices, "rejected": self.rejected,
                "median_p": round(self.median_p, 4), "refused": self.refused}

    def describe(self) -> str:
        if self.slices == 0:
            return (f"no plane across it shows content spanning {MIN_EXTENT_MM} mm both ways "
                    "(a brain spans about 140 x 170 x 120 mm)")
        if self.slices < MIN_SLICES:
            return (f"only {self.slices} slices can be cut across it (at {SPACING_MM:g} mm): "
                    "too thin a volume to segment")
        return (f"{self.rejected} of {self.slices} slices across it were judged not brain MRI "
                f"by the brain-MRI check (median p = {self.median_p:.2f})")


def isotropic(volume: np.ndarray, spacing: tuple[float, float, float] | np.ndarray,
              target: float = SPACING_MM) -> np.ndarray:
    """``volume`` resampled (linearly) to ``target`` mm voxels along every axis, as the
    segmentation's working grid is (``segmentation.geometry.resample_image``, which this layer
    may not import: the trust package stands below the segmentation).

    Args:
        volume: ``(X, Y, Z)`` float.
        spacing: Its voxel size along each axis, mm.
    """
    from scipy import ndimage

    factors = np.asarray(spacing, np.float64) / target
    if np.allclose(factors, 1.0, atol=0.01):
        return volume
    return ndimage.zoom(np.asarray(volume, np.float32), factors, order=1, mode="nearest",
                        grid_mode=True)


def check_volume(check: BrainCheck, volume: np.ndarray,
                 spacing: tuple[float, float, float] | np.ndarray,
                 per_axis: int = PER_AXIS) -> VolumeVerdict:
    """Score slices across ``volume`` with the 2D brain-MRI check.

    Args:
        check: The loaded check (:func:`~mrimaster.trust.brain_check.load_brain_check`).
        volume: ``(X, Y, Z)`` float, RAS, background at the corner voxel's value (a raw
            volume, or a z-scored one with 0 outside the brain).
        spacing: Its voxel size along each axis, mm (it is resampled to
            :data:`SPACING_MM` first: :func:`isotropic`).
        per_axis: Slices per axis (:func:`volume_slices`).
    """
    cuts = volume_slices(isotropic(volume, spacing), per_axis,
                         min_extent=round(MIN_EXTENT_MM / SPACING_MM))
    if not cuts:
        return VolumeVerdict(0, 0, 0.0)
    prepared = np.stack([prepare_slice(np.ascontiguousarray(gray), PREPARED_SIZE)
                         for _, gray in cuts])
    p = check.score(prepared)
    return VolumeVerdict(len(p), int(check.rejects(p).sum()), float(np.median(p)))


def check_nifti(check: BrainCheck, image: nib.Nifti1Image) -> VolumeVerdict:
    """:func:`check_volume` on a 3D image as stored (reoriented to RAS, its own voxel size)."""
    if len(image.shape) == 4 and image.shape[3] == 1:
        image = nib.Nifti1Image(np.asarray(image.dataobj)[..., 0], image.affine)
    canonical = nib.as_closest_canonical(image)
    return check_volume(check, np.asarray(canonical.dataobj, np.float32),
                        nib.affines.voxel_sizes(np.asarray(canonical.affine, np.float64)))
