"""How far a registration can be trusted: the quality figure and the rule that refuses.

:func:`mrimaster.imaging.register.register` measures every registration it finds here
(:func:`measure`: normalised mutual information and correlation inside the reference's
:func:`foreground`, and how much of it the moving image covers, at about
:data:`QUALITY_SPACING_MM`) and refuses it when :meth:`RegistrationQuality.problems` names a
problem: the optimiser did not converge, too little overlap, NMI under :data:`MIN_NMI`, or a
transform larger than sequences of one study plausibly differ (:data:`MAX_TRANSLATION_MM`,
:data:`MAX_ROTATION_DEG`). The sequence checks of :mod:`mrimaster.segmentation.sequence_checks`
use the same foreground and NMI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import nibabel as nib
import numpy as np
import SimpleITK as sitk

MIN_NMI = 1.035
"""Normalised mutual information (Studholme: (H(A) + H(B)) / H(A, B), 1 for independent images,
2 for identical ones; 32 bins, inside the reference's foreground, at about
:data:`QUALITY_SPACING_MM`) below which a registration is refused. Measured on BraTS 2018
volumes (``brats-mini``, case 0's FLAIR as reference, see tests/imaging/test_register.py): its
FLAIR registered back from an oblique, biased 0.9 x 0.9 x 4 mm copy 1.26 (2 mm reference) and
1.23 (1 mm), its T1 (a low-contrast pre-contrast T1, the hardest pair here) 1.075 (2 mm) and
1.046 (1 mm); another subject's FLAIR shifted by 60 mm 1.004-1.007 after registration, another
subject's T1 in the same atlas space 1.02-1.03, gamma noise 1.001. The rule catches gross
failures (noise, another head, no overlap); it does not catch a T1 caught a few degrees off in a
local optimum (1.048 seen). Contrasts that share less with the reference than a BraTS T1 with a
FLAIR may fall under it: lower it (``min_nmi``) only after checking such pairs."""

MIN_OVERLAP = 0.5
"""Smallest fraction of the reference's foreground that the moving image must cover after
registration (a slab of a few slices cannot be checked, nor used)."""

MAX_TRANSLATION_MM = 40.0
"""Largest displacement (mm) of the reference foreground's centre that is accepted: sequences
of one study share the scanner's coordinates. ``None`` in
:func:`mrimaster.imaging.register.register` lifts the limit (for files whose scanner coordinates
were lost)."""

MAX_ROTATION_DEG = 30.0
"""Largest rotation (degrees) that is accepted, for the same reason."""

NMI_BINS = 32


@dataclass
class RegistrationQuality:
    """How well a registered sequence agrees with the reference.

    Attributes:
        sequence: The moving sequence's name.
        metric: Final Mattes mutual information (SimpleITK's metric value: negative, lower is
            better) at the finest level.
        nmi: Normalised mutual information inside the reference's foreground after
            registration (1 independent .. 2 identical); the figure the rule uses.
        correlation: Pearson correlation of the two images there (contrast-dependent: T1
            against FLAIR may be low or negative; reported, not used by the rule).
        overlap: Fraction of the reference's foreground covered by the moving image.
        rotation_deg: Rotation angle of the transform (degrees).
        translation_mm: Displacement (mm) of the reference foreground's centre.
        iterations: Optimiser iterations at the finest level.
        stop: The optimiser's stop condition.
        converged: The optimiser stopped on its step or gradient tolerance, not on its
            iteration limit.
        seconds: Wall time of the registration.
    """

    sequence: str
    metric: float
    nmi: float
    correlation: float
    overlap: float
    rotation_deg: float
    translation_mm: float
    iterations: int
    stop: str
    converged: bool
    seconds: float

    def problems(self, min_nmi: float = MIN_NMI, min_overlap: float = MIN_OVERLAP,
                 max_translation_mm: float | None = MAX_TRANSLATION_MM,
                 max_rotation_deg: float | None = MAX_ROTATION_DEG) -> list[str]:
        """What makes this registration untrustworthy, in words (empty when it passes)."""
        found = []
        if not self.converged:
            found.append(f"the optimiser did not converge ({self.stop})")
        if self.overlap < min_overlap:
            found.append(f"it covers only {self.overlap:.0%} of the reference's foreground "
                         f"(at least {min_overlap:.0%} needed)")
        if not self.nmi >= min_nmi:
            found.append(f"normalised mutual information {self.nmi:.3f} is below {min_nmi:g}")
        if max_translation_mm is not None and self.translation_mm > max_translation_mm:
            found.append(f"it moves the brain by {self.translation_mm:.1f} mm (more than "
                         f"{max_translation_mm:g} mm)")
        if max_rotation_deg is not None and self.rotation_deg > max_rotation_deg:
            found.append(f"it rotates by {self.rotation_deg:.1f} degrees (more than "
                         f"{max_rotation_deg:g})")
        return found

    def summary(self) -> str:
        return (f"{self.sequence}: NMI {self.nmi:.3f}, correlation {self.correlation:.2f}, "
                f"overlap {self.overlap:.0%}, rotation {self.rotation_deg:.2f} deg, "
                f"translation {self.translation_mm:.1f} mm, MI {self.metric:.4f}, "
                f"{self.iterations} iterations, {self.seconds:.1f} s")


def foreground(data: np.ndarray) -> np.ndarray:
    """Voxels that belong to the head or brain.

    A skull-stripped volume (at least 30 % of its voxels hold the border's most common value,
    :func:`mrimaster.imaging.skullstrip.background_value`): every other voxel, so z-scored
    volumes, half of whose brain is negative, keep their whole brain. Otherwise: above 5 % of
    the 99th percentile of the positive voxels. (Measured on the BraTS 2015 z-scored FLAIR /
    T1-Gd pairs, as aligned by BraTS: NMI 1.026-1.043 with the threshold alone, which put the
    negative half of the brain outside; 1.087-1.094 with the brain.)"""
    from mrimaster.imaging.skullstrip import background_value

    at_background = data == background_value(data)
    if at_background.mean() >= 0.3:
        return np.asarray(~at_background)
    positive = data[data > 0]
    if positive.size == 0:
        return np.zeros(data.shape, bool)
    return np.asarray(data > 0.05 * np.percentile(positive, 99))


def normalised_mutual_information(a: np.ndarray, b: np.ndarray, bins: int = NMI_BINS) -> float:
    """Studholme's NMI, (H(A) + H(B)) / H(A, B), of paired samples (1 independent, 2 identical);
    intensities binned between their 1st and 99th percentiles."""
    if a.size < 10:
        return float("nan")

    def edges(x: np.ndarray) -> np.ndarray:
        lo, hi = np.percentile(x, [1, 99])
        hi = hi if hi > lo else lo + 1.0
        return np.linspace(lo, hi, bins + 1)

    joint, _, _ = np.histogram2d(np.clip(a, *edges(a)[[0, -1]]), np.clip(b, *edges(b)[[0, -1]]),
                                 bins=[edges(a), edges(b)])
    p = joint / joint.sum()

    def entropy(q: np.ndarray) -> float:
        q = q[q > 0]
        return float(-(q * np.log(q)).sum())

    return (entropy(p.sum(1)) + entropy(p.sum(0))) / entropy(p)


def rotation_deg(transform: sitk.Euler3DTransform) -> float:
    """The angle (degrees) of a rigid transform's rotation."""
    matrix = np.asarray(transform.GetMatrix()).reshape(3, 3)
    return float(math.degrees(math.acos(np.clip((np.trace(matrix) - 1) / 2, -1, 1))))


QUALITY_SPACING_MM = 2.0
"""The quality figure is measured at about this spacing (both images smoothed and subsampled
from the reference's grid), so that it depends little on the reference's voxel size and noise:
NMI of raw 1 mm voxels is lower than of 2 mm ones for the same alignment."""


def measure(reference: nib.Nifti1Image, resampled: nib.Nifti1Image, covered: np.ndarray
            ) -> tuple[float, float, float]:
    """``(nmi, correlation, overlap)`` of a resampled image against the reference, inside the
    reference's foreground where the moving image has data (``covered``), measured at about
    :data:`QUALITY_SPACING_MM` (Gaussian smoothing, then every n-th voxel)."""
    from scipy import ndimage

    zooms = np.asarray(nib.affines.voxel_sizes(np.asarray(reference.affine, np.float64)))
    step = np.maximum(1, np.round(QUALITY_SPACING_MM / zooms)).astype(int)
    sigma = np.where(step > 1, step / 2.355, 0.0)  # a FWHM of one working voxel
    raw = np.asarray(reference.dataobj, np.float32)
    take = tuple(slice(None, None, int(n)) for n in step)
    ref = ndimage.gaussian_filter(raw, sigma)[take]
    mov = ndimage.gaussian_filter(np.asarray(resampled.dataobj, np.float32), sigma)[take]
    raw, covered = raw[take], covered[take]
    fg = foreground(raw)
    inside = fg & covered
    overlap = float(inside.sum() / max(fg.sum(), 1))
    a, b = ref[inside], mov[inside]
    if a.size < 10 or a.std() == 0 or b.std() == 0:
        return float("nan"), float("nan"), overlap
    return normalised_mutual_information(a, b), float(np.corrcoef(a, b)[0, 1]), overlap
