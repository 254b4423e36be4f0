"""Refuse a volume that is not a brain MRI before segmenting it: the 2D brain-MRI check on
slices across each sequence (:mod:`mrimaster.trust.volume_check`), with the model's
``brain_check`` (set by :mod:`mrimaster.segmentation.loading`).

Two places run it: :func:`mrimaster.segmentation.study.segment_study` on every series of a
study as imported (before bias correction and skull stripping, which can carve a brain-shaped
region out of anything), and :func:`mrimaster.segmentation.infer.segment_case` on the channels
of a case given as volumes (as the network gets them: z-scored, not stripped).
"""

from __future__ import annotations

from typing import Any

import nibabel as nib
import numpy as np

from mrimaster.errors import DataError
from mrimaster.segmentation.runtime import SegModel
from mrimaster.segmentation.volumes import Volume
from mrimaster.trust.volume_check import (
    PER_AXIS,
    REFUSE_SHARE,
    VolumeVerdict,
    check_nifti,
    check_volume,
)

RULE = (f"{PER_AXIS} slices per axis; a sequence is refused when more than "
        f"{REFUSE_SHARE:.0%} of them are judged not brain MRI")
NOT_RUN = "switched off or not installed (the results' warnings say which)"


class NotBrainMRI(DataError):
    """A volume the check refuses; ``figures`` are its verdict's (for the outputs of a study
    that leaves the series out and goes on)."""

    def __init__(self, message: str, hint: str, figures: dict[str, Any]) -> None:
        super().__init__(message, hint)
        self.figures = figures


def _checked(what: str, verdict: VolumeVerdict) -> dict[str, Any]:
    """The figures for the outputs, or the refusal."""
    figures = {"run": True, "rule": RULE, **verdict.as_dict()}
    if verdict.refused:
        raise NotBrainMRI(
            f"{what} does not look like a brain MRI: {verdict.describe()}",
            "nothing was segmented: check that the file is this patient's brain MRI of that "
            "sequence (a phantom, a CT, another body part or a derived map cannot be "
            "segmented); MRIMASTER_CHECK_BRAIN_MRI=off skips the check for a volume known to "
            "be brain MRI", figures)
    return figures


def check_image(seg: SegModel, what: str, image: nib.Nifti1Image) -> dict[str, Any]:
    """The check's figures for one 3D image as loaded, for the outputs.

    Args:
        seg: The model (its ``brain_check``; ``None``: not checked).
        what: The volume as the message names it (e.g. "the FLAIR (AX FLAIR, series 3)").
        image: The sequence on its own grid.

    Raises:
        DataError: more than half of its slices judged not brain MRI: nothing is segmented.
    """
    if seg.brain_check is None:
        return {"run": False, "why": NOT_RUN}
    if not np.isfinite(np.asarray(image.dataobj)).all():
        raise DataError(f"{what} holds NaN or infinite values",
                        "export the volume again from the scanner or the viewer")
    return _checked(what, check_nifti(seg.brain_check, image))


def check_channels(seg: SegModel, volume: Volume, used: list[str], name: str
                   ) -> dict[str, Any]:
    """The check on each used channel of ``volume`` (case ``name``) as the network gets it:
    ``{"run", "rule", "sequences": {modality: figures}}``.

    Raises:
        DataError: as :func:`check_image`.
    """
    if seg.brain_check is None:
        return {"run": False, "why": NOT_RUN}
    figures = {}
    spacing = seg.spacing if volume.resampled else volume.input_spacing
    for channel, modality in enumerate(volume.modalities):
        if modality in used:
            found = _checked(f"case {name}: the {modality} volume", check_volume(
                seg.brain_check, volume.image[channel], spacing))
            figures[modality] = {k: found[k] for k in ("slices", "rejected", "median_p")}
    return {"run": True, "rule": RULE, "sequences": figures}
