"""Skull stripping: decide whether a volume is already stripped, and strip it if not (deepbet).

The segmenter was trained on skull-stripped BraTS volumes; a scanner's head volume must lose
its scalp, skull and neck first.

**The "already stripped" rule** (:func:`stripped_decision`): a volume is taken as skull-stripped
when

1. at least :data:`MIN_BACKGROUND_FRACTION` of its voxels hold exactly the background value
   (the most common value on the volume's border): a brain mask was applied. A scanner's head
   volume has noise in the air around the head, so few voxels share one exact value; and
2. the outer rim of the non-background region (its voxels within :data:`RIM_MM` of its
   surface) is not bright: the rim's median is at most :data:`MAX_RIM_RATIO` times the median
   of the region's interior (both measured from the region's 1st percentile, so z-scored
   volumes with negative values are judged alike). A stripped brain's surface is cortex and
   CSF, no brighter than the inside; a head whose background was zeroed still has the scalp
   (skin and fat, bright on T1 and FLAIR) as its rim.

On all 28 ``brats-mini`` volumes (BraTS 2018 FLAIR and T1, BraTS 2015 z-scored FLAIR and T1c)
the background fraction is 0.81-0.88 and the rim ratio 0.40-1.06 (case 0's FLAIR the highest).
No real unstripped head could be installed here (no package ships one); on a synthetic head
made of a BraTS brain in a dark 6 mm skull and a bright 6 mm scalp the rim ratio is 1.44 when
the air is zeroed, and with noise in the air the background fraction is near 0.

**Stripping** (:func:`skull_strip`) uses deepbet (Fisch et al., 2024; MIT; its two TorchScript
networks ship in its wheel, nothing is downloaded), trained on T1-weighted heads: on the CPU
(2 cores) one 240 x 240 x 155 volume takes about 4-5 s. The brain mask is a label map (uint8,
0/1) on the input's grid (shape and affine), the stripped volume the input times the mask.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from mrimaster.errors import MRIMasterError
from mrimaster.imaging.register import resample_labels
from mrimaster.segmentation.geometry import voxel_sizes

log = logging.getLogger(__name__)

MIN_BACKGROUND_FRACTION = 0.3
"""Fraction of voxels at exactly the background value above which a mask may have been applied
(BraTS: 0.83; a brain of 1.5 L in a 240 x 240 x 155 mm field of view leaves 0.8 of it empty)."""

MAX_RIM_RATIO = 1.2
"""Largest ratio of the rim's median intensity to the interior's for a stripped volume."""

RIM_MM = 3.0
"""Thickness (mm) of the rim of the non-background region that :func:`stripped_decision`
inspects."""


class SkullStripError(MRIMasterError):
    """A volume could not be skull-stripped."""


@dataclass
class StripDecision:
    """Whether a volume is already skull-stripped, and the figures behind the decision.

    Attributes:
        stripped: The decision.
        background_fraction: Fraction of voxels holding exactly the background value.
        rim_ratio: Median of the non-background region's rim over the median of its interior.
        reason: The decision in words.
    """

    stripped: bool
    background_fraction: float
    rim_ratio: float
    reason: str


@dataclass
class SkullStrip:
    """The result of :func:`skull_strip`.

    Attributes:
        mask: Brain mask, a label map (uint8, 1 brain, 0 elsewhere) on the input's grid.
        brain: The input times the mask (float32), on the input's grid.
        decision: The "already stripped" decision.
        method: ``"already stripped"`` (the mask is the non-background region) or ``"deepbet"``.
        volume_ml: The mask's volume (ml).
        seconds: Wall time of the stripping step.
    """

    mask: nib.Nifti1Image
    brain: nib.Nifti1Image
    decision: StripDecision
    method: str
    volume_ml: float
    seconds: float


def _as_nifti(image: nib.Nifti1Image | str | Path) -> nib.Nifti1Image:
    if isinstance(image, str | Path):
        from mrimaster.segmentation.volumes import load_nifti

        return load_nifti(Path(image))
    return image


def _data(img: nib.Nifti1Image) -> np.ndarray:
    data = np.asarray(img.dataobj, np.float32)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise SkullStripError(f"expected a 3D volume, got shape {data.shape}",
                              "skull-strip one 3D volume at a time")
    return np.nan_to_num(data)


def background_value(data: np.ndarray) -> float:
    """The most common value on the volume's six faces."""
    border = np.concatenate([data[[0, -1]].ravel(), data[:, [0, -1]].ravel(),
                             data[:, :, [0, -1]].ravel()])
    values, counts = np.unique(border, return_counts=True)
    return float(values[np.argmax(counts)])


def stripped_decision(image: nib.Nifti1Image | str | Path) -> StripDecision:
    """Decide whether ``image`` is already skull-stripped (the rule is in the module's
    docstring)."""
    img = _as_nifti(image)
    data = _data(img)
    region = data != background_value(data)
    background = float(1.0 - region.mean())
    if not region.any():
        raise SkullStripError("the volume is empty (one value everywhere)",
                              "check that the file holds an MRI volume")
    zooms = np.asarray(nib.affines.voxel_sizes(np.asarray(img.affine, np.float64)))
    steps = max(1, int(round(RIM_MM / float(zooms.min()))))
    interior = ndimage.binary_erosion(region, iterations=steps)
    rim = region & ~interior
    inner = data[interior] if interior.sum() > 100 else data[region]
    floor = float(np.percentile(data[region], 1))  # z-scored volumes have negative values
    rim_ratio = float((np.median(data[rim]) - floor) / max(float(np.median(inner)) - floor, 1e-6))
    if background < MIN_BACKGROUND_FRACTION:
        return StripDecision(False, background, rim_ratio,
                             f"only {background:.0%} of the voxels hold the background value "
                             "(a head scan has noise in the air around it)")
    if rim_ratio > MAX_RIM_RATIO:
        return StripDecision(False, background, rim_ratio,
                             f"the outer {RIM_MM:g} mm of the volume's content are {rim_ratio:.2f} "
                             "times as bright as its inside (a scalp)")
    return StripDecision(True, background, rim_ratio,
                         f"{background:.0%} of the voxels are background and the content's rim is "
                         f"not bright ({rim_ratio:.2f} of the inside)")


@functools.lru_cache(maxsize=1)
def _deepbet() -> Any:
    try:
        from deepbet import BrainExtraction
    except ImportError as exc:  # pragma: no cover - a dependency of the project
        raise SkullStripError("deepbet is not installed", "pip install deepbet") from exc
    import warnings

    import torch

    with warnings.catch_warnings():  # deepbet loads TorchScript: torch.jit.load's deprecation
        warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", FutureWarning)
        return BrainExtraction(no_gpu=not torch.cuda.is_available())


def deepbet_mask(image: nib.Nifti1Image | str | Path, threshold: float = 0.5) -> nib.Nifti1Image:
    """deepbet's brain mask of ``image`` as a uint8 label map on the input's grid."""
    img = _as_nifti(image)
    data = _data(img)
    src = nib.Nifti1Image(data, img.affine)
    try:
        _, mask, _ = _deepbet().run(src, threshold=threshold)
    except (AssertionError, RuntimeError, ValueError) as exc:
        raise SkullStripError(f"deepbet could not find a brain ({exc})",
                              "check that the volume is a whole-head 3D MRI") from exc
    values = (np.asarray(mask.dataobj) > 0).astype(np.uint8)
    if values.shape != data.shape or not np.allclose(mask.affine, img.affine):
        raise SkullStripError("deepbet's mask is not on the input grid")  # pragma: no cover
    return nib.Nifti1Image(values, img.affine)


def skull_strip(image: nib.Nifti1Image | str | Path, force: bool = False) -> SkullStrip:
    """The brain mask and the stripped volume of ``image``.

    Args:
        image: A 3D volume (nibabel image or NIfTI path).
        force: Run deepbet even when the volume is already stripped.

    Raises:
        SkullStripError: not 3D, empty, or deepbet found no brain.
    """
    start = time.perf_counter()
    img = _as_nifti(image)
    data = _data(img)
    decision = stripped_decision(img)
    if decision.stripped and not force:
        mask = nib.Nifti1Image((data != background_value(data)).astype(np.uint8), img.affine)
        method = "already stripped"
    else:
        mask = deepbet_mask(img)
        method = "deepbet"
    values = np.asarray(mask.dataobj) > 0
    brain = nib.Nifti1Image(np.where(values, data, 0).astype(np.float32), img.affine)
    voxel_ml = float(abs(np.linalg.det(np.asarray(img.affine)[:3, :3]))) / 1000.0
    result = SkullStrip(mask=mask, brain=brain, decision=decision, method=method,
                        volume_ml=float(values.sum()) * voxel_ml,
                        seconds=time.perf_counter() - start)
    log.info("skull strip (%s): %s; brain %.0f ml, %.1f s", method, decision.reason,
             result.volume_ml, result.seconds)
    return result


def stripped_region(own: nib.Nifti1Image, on_grid: nib.Nifti1Image) -> nib.Nifti1Image:
    """The brain of an already stripped reference on the working grid (``on_grid``: any image
    on it): its non-background voxels on its own grid, a label map resampled
    nearest-neighbour (uint8, 0/1).

    Not the non-background of the linearly resampled reference: where the stripped edge is
    interpolated with air, that adds a rim of partial-volume voxels (on the simulated
    brats-mini studies about 100 mL around a 1.1-1.7 L brain) that the network's z-scoring
    counts as brain, pulling every channel's mean down and its spread up."""
    data = _data(own)
    region = nib.Nifti1Image((data != background_value(data)).astype(np.uint8), own.affine)
    return resample_labels(region, on_grid, sitk.Transform())


def strip_study(volumes: dict[str, nib.Nifti1Image], reference: str, strip: str,
                own_reference: nib.Nifti1Image) -> tuple[nib.Nifti1Image, dict[str, Any]]:
    """The brain mask of a study's volumes on the working grid, and its report.

    The decision is made on the T1 when there is one (deepbet's contrast), else on the
    reference. Not stripped: deepbet's mask of that volume. Already stripped: the
    reference's brain by :func:`stripped_region` when the reference is judged stripped on
    its own grid too, else (a stripped T1 beside an unstripped reference) the T1's
    non-background on the working grid. Except with ``strip="never"``, every volume in
    ``volumes`` is replaced by itself set to 0 outside the mask, so that no sequence brings
    its own rim (a registered or thick-slice sequence resampled onto the grid) into the
    brain the network normalises over.

    Args:
        volumes: Images per role on the working grid (replaced in place).
        reference: The reference's role.
        strip: ``auto``, ``always`` (deepbet even when stripped) or ``never``.
        own_reference: The reference on its own grid (for :func:`stripped_region`).
    """
    ref = volumes[reference]
    if strip == "never":
        decision = stripped_decision(ref)
        mask = nib.Nifti1Image((np.asarray(ref.dataobj) != 0).astype(np.uint8), ref.affine)
        return mask, {"method": "not stripped (strip=never)", "decision": decision.reason,
                      "volume_ml": None, "seconds": 0.0}
    source = "t1" if "t1" in volumes else reference
    result = skull_strip(volumes[source], force=strip == "always")
    mask, volume_ml, mask_from = result.mask, result.volume_ml, source
    if result.method != "deepbet" and stripped_decision(own_reference).stripped:
        mask, mask_from = stripped_region(own_reference, ref), reference
        volume_ml = float(np.count_nonzero(np.asarray(mask.dataobj))) * float(
            np.prod(voxel_sizes(mask))) / 1000.0
        log.info("brain mask: the %s's non-background on its own grid, %.0f ml", reference,
                 volume_ml)
    inside = np.asarray(mask.dataobj) > 0
    for role, img in volumes.items():
        volumes[role] = nib.Nifti1Image(np.where(inside, np.asarray(img.dataobj), 0)
                                        .astype(np.float32), img.affine)
    return mask, {"method": result.method, "on": source, "mask_from": mask_from,
                  "decision": result.decision.reason,
                  "already_stripped": result.decision.stripped,
                  "background_fraction": result.decision.background_fraction,
                  "rim_ratio": result.decision.rim_ratio,
                  "volume_ml": volume_ml, "seconds": result.seconds}
