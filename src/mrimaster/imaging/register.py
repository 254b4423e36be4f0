"""Rigid registration of one sequence of a study onto another's grid (SimpleITK, Mattes MI).

Every sequence of a real study has its own grid (2D axial FLAIR at 0.9 x 0.9 x 4 mm, a sagittal
3D T1 at 1 mm, each with its own tilt and field of view); the segmenter needs them on one.
:func:`register` finds the rigid transform (3 rotations, 3 translations) that maps points of the
reference (fixed) image onto the moving image by maximising Mattes mutual information
(multi-resolution, fixed random sampling seed, so a run is reproducible), resamples the moving
image onto the reference grid (linearly: it is an intensity image; label maps go through
:func:`resample_labels`, nearest-neighbour) and measures how well the result agrees with the
reference: the **quality figure**
(:class:`mrimaster.imaging.registration_quality.RegistrationQuality`). A registration is refused
(:class:`RegistrationError`) when that module's rule names a problem: the optimiser did not
converge, too little of the reference's foreground is covered by the moving image, the
normalised mutual information inside the reference's foreground is too low, or the transform is
larger than sequences of one study plausibly differ (the sequences of one session share the
scanner's coordinates, and a patient moves a few mm and degrees between them).

NIfTI (nibabel) affines map voxels to RAS+ millimetres; ITK's physical space is LPS+. The
converters :func:`to_sitk` and :func:`from_sitk` flip the first two axes of the affine (and
transpose the voxel array, ITK arrays being ``(z, y, x)``), so nibabel -> SimpleITK -> nibabel
keeps the affine and the voxels.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from mrimaster.errors import MRIMasterError
from mrimaster.imaging.registration_quality import (
    MAX_ROTATION_DEG,
    MAX_TRANSLATION_MM,
    MIN_NMI,
    MIN_OVERLAP,
    RegistrationQuality,
    foreground,
    measure,
    rotation_deg,
)

log = logging.getLogger(__name__)

LPS = np.diag([-1.0, -1.0, 1.0])
"""RAS <-> LPS: negate the first two world axes (its own inverse)."""


class RegistrationError(MRIMasterError):
    """A sequence could not be registered onto the reference, or the result is not trusted."""


@dataclass
class Registration:
    """The result of :func:`register`.

    Attributes:
        transform: Rigid transform mapping reference (fixed) physical points, LPS mm, to the
            moving image's (ITK's convention); a ``sitk.Euler3DTransform``.
        resampled: The moving image on the reference grid (linear, float32, 0 outside the moving
            image's field of view).
        quality: The quality figure.
    """

    transform: sitk.Euler3DTransform
    resampled: nib.Nifti1Image
    quality: RegistrationQuality


# ---------------------------------------------------------------- nibabel <-> SimpleITK

def _as_nifti(image: nib.Nifti1Image | str | Path) -> nib.Nifti1Image:
    if isinstance(image, str | Path):
        from mrimaster.segmentation.volumes import load_nifti

        return load_nifti(Path(image))
    return image


def to_sitk(image: nib.Nifti1Image | str | Path, dtype: type = np.float32) -> sitk.Image:
    """A 3D NIfTI image (or path) as a SimpleITK image in LPS physical space.

    Raises:
        RegistrationError: not 3D, or an affine with shear (not spacing x rotation).
    """
    img = _as_nifti(image)
    data = np.asarray(img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise RegistrationError(f"expected a 3D volume, got shape {data.shape}",
                                "register one 3D volume at a time")
    affine = LPS @ np.asarray(img.affine, np.float64)[:3, :4]
    spacing = np.linalg.norm(affine[:, :3], axis=0)
    direction = affine[:, :3] / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise RegistrationError("the volume's affine has shear (its axes are not orthogonal)",
                                "resample it onto an orthogonal grid first")
    out = sitk.GetImageFromArray(np.ascontiguousarray(data.astype(dtype).transpose(2, 1, 0)))
    out.SetSpacing(tuple(float(s) for s in spacing))
    out.SetDirection(tuple(float(v) for v in direction.ravel()))
    out.SetOrigin(tuple(float(v) for v in affine[:, 3]))
    return out


def sitk_affine(image: sitk.Image) -> np.ndarray:
    """The RAS+ voxel-to-world ``(4, 4)`` affine of a SimpleITK image."""
    direction = np.asarray(image.GetDirection(), np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = LPS @ direction @ np.diag(image.GetSpacing())
    affine[:3, 3] = LPS @ np.asarray(image.GetOrigin(), np.float64)
    return affine


def from_sitk(image: sitk.Image, dtype: type | None = None) -> nib.Nifti1Image:
    """A 3D SimpleITK image as a NIfTI image (RAS+ affine, voxel array ``(x, y, z)``)."""
    data = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    if dtype is not None:
        data = data.astype(dtype)
    out = nib.Nifti1Image(np.ascontiguousarray(data), sitk_affine(image))
    out.set_qform(out.affine, code=1)
    out.set_sform(out.affine, code=1)
    return out


# ---------------------------------------------------------------- resampling

def resample_image(moving: nib.Nifti1Image | str | Path, reference: nib.Nifti1Image | str | Path,
                   transform: sitk.Transform) -> nib.Nifti1Image:
    """An intensity image resampled onto ``reference``'s grid through ``transform``
    (reference -> moving points), linearly; 0 outside the moving field of view."""
    out = sitk.Resample(to_sitk(moving), to_sitk(reference), transform, sitk.sitkLinear, 0.0,
                        sitk.sitkFloat32)
    return from_sitk(out)


def resample_labels(labels: nib.Nifti1Image | str | Path,
                    reference: nib.Nifti1Image | str | Path,
                    transform: sitk.Transform) -> nib.Nifti1Image:
    """A label map resampled onto ``reference``'s grid through ``transform``,
    nearest-neighbour (label values are never blended); uint8 when the labels fit, else int16;
    0 outside the field of view."""
    img = _as_nifti(labels)
    values = np.asarray(img.dataobj)
    if not np.allclose(values, np.round(values)):
        raise RegistrationError("resample_labels got non-integer values: is this an intensity "
                                "image?", "use resample_image for intensity images")
    dtype = np.uint8 if values.min() >= 0 and values.max() <= 255 else np.int16
    out = sitk.Resample(to_sitk(img, np.int16), to_sitk(reference), transform,
                        sitk.sitkNearestNeighbor, 0, sitk.sitkInt16)
    return from_sitk(out, dtype)


# ---------------------------------------------------------------- registration

def register(reference: nib.Nifti1Image | str | Path, moving: nib.Nifti1Image | str | Path,
             sequence: str = "moving", *,
             init: Literal["moments", "geometry", "identity"] = "geometry",
             levels_mm: tuple[float, ...] = (8.0, 4.0, 2.0),
             sampling: float = 0.25, iterations: int = 500, seed: int = 20260521,
             learning_rate: float = 2.0, relaxation: float = 0.5,
             min_nmi: float = MIN_NMI, min_overlap: float = MIN_OVERLAP,
             max_translation_mm: float | None = MAX_TRANSLATION_MM,
             max_rotation_deg: float | None = MAX_ROTATION_DEG,
             check: bool = True) -> Registration:
    """Register ``moving`` rigidly onto ``reference`` and resample it onto the reference grid.

    Args:
        reference: The fixed image (its grid is the output's), nibabel image or NIfTI path.
        moving: The sequence to bring onto it (an intensity image; label maps that share its
            grid follow with :func:`resample_labels` and the returned transform).
        sequence: The moving sequence's name, for messages.
        init: Initial transform: ``geometry`` (the two world frames are trusted, the rotation
            centre is the reference's centre: sequences of one session share the scanner's
            coordinates; same as ``identity``), or ``moments`` (centres of mass aligned: for
            files whose world coordinates do not match).
        levels_mm: The multi-resolution schedule: at each level the reference grid is
            shrunk to about this spacing (by a whole factor, at least 1) and both images are
            smoothed by a Gaussian of half of it (mm). The default ends at 2 mm: finer levels
            cost time and, on 1 mm BraTS volumes, did not help (noise).
        sampling: Fraction of reference voxels sampled (randomly, with ``seed``) per iteration.
            A quarter, not a tenth: on the 14 simulated brats-mini studies
            (``benchmarks/eval_study_path.py``'s) a tenth gave noisy gradients: the
            optimiser's step shrank on spurious direction changes, one T1 (``case_2``) ran
            into the iteration limit 1.9 mm off and was refused, and the mean error against
            the known motion was 0.79 mm; a quarter converged on all 14 in 17-70 iterations
            at the finest level, mean error 0.73 mm (``case_2`` 0.98), in about the same time.
        iterations: Iteration limit per level.
        learning_rate, relaxation: The regular-step gradient descent's first step (in units
            of physical shift, mm) and the factor the step shrinks by when the gradient turns
            back.
        seed: The sampling seed: the same inputs give the same transform (on ill-posed
            inputs, such as noise, the order of multithreaded sums can still move the
            optimiser's path slightly; the quality figure's verdict does not change).
        min_nmi, min_overlap, max_translation_mm, max_rotation_deg: The acceptance rule (see
            :meth:`RegistrationQuality.problems`).
        check: Raise when the rule refuses the registration (``False``: return it, for
            inspection).

    Raises:
        RegistrationError: the registration failed or the rule refuses it; the message names
            the sequence and says why.
    """
    start = time.perf_counter()
    ref_nii, mov_nii = _as_nifti(reference), _as_nifti(moving)
    fixed, mov = to_sitk(ref_nii), to_sitk(mov_nii)
    ref_data = np.asarray(ref_nii.dataobj, np.float32)
    fg = foreground(ref_data)
    if not fg.any() or not np.asarray(mov_nii.dataobj).any():
        raise RegistrationError(f"{sequence}: the reference or the moving image is empty",
                                "check that both files hold the study's images")
    centre_vox = np.argwhere(fg).mean(axis=0)
    centre = fixed.TransformContinuousIndexToPhysicalPoint(tuple(float(c) for c in centre_vox))

    transform = sitk.Euler3DTransform()
    transform.SetCenter(centre)
    if init == "moments":
        transform = sitk.Euler3DTransform(sitk.CenteredTransformInitializer(
            fixed, mov, sitk.Euler3DTransform(),
            sitk.CenteredTransformInitializerFilter.MOMENTS))

    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(sampling, seed)
    method.SetMetricFixedMask(sitk.Cast(to_sitk(nib.Nifti1Image(
        fg.astype(np.uint8), ref_nii.affine)), sitk.sitkUInt8))
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=learning_rate, minStep=1e-3, numberOfIterations=iterations,
        relaxationFactor=relaxation, gradientMagnitudeTolerance=1e-6)
    method.SetOptimizerScalesFromPhysicalShift()
    finest = float(min(fixed.GetSpacing()))
    method.SetShrinkFactorsPerLevel([max(1, round(level / finest)) for level in levels_mm])
    method.SetSmoothingSigmasPerLevel([level / 2 for level in levels_mm])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(transform, inPlace=False)
    try:
        result = method.Execute(fixed, mov)
    except RuntimeError as exc:
        raise RegistrationError(f"{sequence}: registration failed ({str(exc).strip()[-200:]})",
                                "check that the sequence shows the same head as the reference "
                                "and overlaps it") from exc
    final = sitk.Euler3DTransform(sitk.CompositeTransform(result).GetBackTransform()
                                  if isinstance(result, sitk.CompositeTransform) else result)
    stop = method.GetOptimizerStopConditionDescription()
    converged = "Maximum number of iterations" not in stop

    resampled = sitk.Resample(mov, fixed, final, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    ones = sitk.Image(mov.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(mov)
    covered = sitk.GetArrayFromImage(sitk.Resample(ones, fixed, final, sitk.sitkNearestNeighbor,
                                                   0)).transpose(2, 1, 0) > 0
    out = from_sitk(resampled)
    nmi, corr, overlap = measure(ref_nii, out, covered)
    moved = np.asarray(final.TransformPoint(centre)) - np.asarray(centre)
    quality = RegistrationQuality(
        sequence=sequence, metric=float(method.GetMetricValue()), nmi=nmi, correlation=corr,
        overlap=overlap, rotation_deg=rotation_deg(final),
        translation_mm=float(np.linalg.norm(moved)),
        iterations=int(method.GetOptimizerIteration()), stop=stop, converged=converged,
        seconds=time.perf_counter() - start)
    log.info("registered %s", quality.summary())
    problems = quality.problems(min_nmi, min_overlap, max_translation_mm, max_rotation_deg)
    if check and problems:
        raise RegistrationError(
            f"{sequence}: registration onto the reference refused: " + "; ".join(problems),
            "check that this series is of the same patient and study and covers the brain "
            "(a series of another patient cannot be registered); if it is, re-export it from "
            "the scanner or PACS with its position tags")
    return Registration(transform=final, resampled=out, quality=quality)
