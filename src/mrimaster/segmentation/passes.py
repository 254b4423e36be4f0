"""The network passes of one segmentation: the mask, its uncertainty and the trust figures.

One model runs once on the image (with ``tta``: on the image and its 7 mirrorings, nnU-Net's
test-time augmentation) and once more mirrored left-right, a pass that only measures. The fold
ensemble (:class:`mrimaster.segmentation.ensemble.SegEnsemble`) runs each member the same way
and averages their probabilities; its first member's left-right pass gives the trust figures.
Either way :func:`run_passes` returns the raw mask, a case-level disagreement figure, a
per-voxel uncertainty map (mutual information between the passes or members) and
:func:`mrimaster.segmentation.case_trust.trust_features`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from mrimaster.segmentation.case_trust import mask_dice, trust_features
from mrimaster.segmentation.ensemble import SegEnsemble, mutual_information, sigmoid
from mrimaster.segmentation.postprocess import clean_regions
from mrimaster.segmentation.runtime import SegModel

MIRRORS: tuple[tuple[int, ...], ...] = tuple(
    axes for k in range(4) for axes in itertools.combinations((1, 2, 3), k))
"""Test-time augmentation: the image as it is and mirrored along every combination of the
three spatial axes (8 passes, as nnU-Net)."""

LEFT_RIGHT: tuple[int, ...] = (1,)
"""The left-right axis of the network's input (canonical RAS: the first spatial axis)."""

UNCERTAINTY_2_PASSES = "test-time mirroring disagreement (2 passes)"
UNCERTAINTY_8_PASSES = "test-time mirroring disagreement (8 passes)"


def predict_raw(seg: SegModel, image: np.ndarray, tta: bool = False) -> np.ndarray:
    """``(C, D, H, W)`` float32 -> ``(3, D, H, W)`` bool WT/TC/ET before any clean-up.

    With ``tta``, the sigmoid probabilities of the :data:`MIRRORS` passes are averaged (each
    mirrored back) and thresholded at 0.5.
    """
    if not tta:
        return seg.logits(image) > 0
    total = np.zeros((3, *image.shape[1:]), np.float32)
    for axes in MIRRORS:
        total += _probabilities(seg, image, axes)
    return total / len(MIRRORS) > 0.5


def predict_regions(seg: SegModel, image: np.ndarray) -> np.ndarray:
    """``(C, D, H, W)`` float32 -> ``(3, D, H, W)`` bool WT/TC/ET, the model's post-processing
    applied (hierarchy enforced)."""
    return clean_regions(predict_raw(seg, image), seg.postprocess)


def _probabilities(seg: SegModel, image: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """``(3, D, H, W)`` float32 probabilities of ``image`` mirrored along ``axes``, mirrored
    back."""
    if not axes:
        return sigmoid(seg.logits(image), in_place=True)
    prob = sigmoid(seg.logits(np.ascontiguousarray(np.flip(image, axes))), in_place=True)
    return np.ascontiguousarray(np.flip(prob, axes))


def mirroring_disagreement(passes: list[np.ndarray], voxel_ml: float, method: str
                           ) -> dict[str, Any]:
    """How much passes (or ensemble members) disagree on the whole tumour, for one case.

    Args:
        passes: Two or more ``(D, H, W)`` bool whole-tumour masks, one per pass (each mirrored
            back onto the same grid).
        voxel_ml: Volume of one voxel of these masks in millilitres.
        method: What the passes were (written as ``method``).

    Returns:
        ``{"method", "wt_dice_between_passes", "wt_volume_change_ml", "score"}``: the mean
        Dice over every pair of passes (two masks that are both empty agree: 1), the largest
        minus the smallest pass's whole-tumour volume, and ``score = 1 - Dice`` (0: the passes
        agree, 1: they share no voxel).
    """
    if len(passes) < 2:
        raise ValueError("the disagreement needs at least two passes")
    pairs = [mask_dice(a, b) for a, b in itertools.combinations(passes, 2)]
    d = float(np.mean(pairs))
    vols = [float(p.sum()) * voxel_ml for p in passes]
    return {"method": method, "wt_dice_between_passes": round(d, 4),
            "wt_volume_change_ml": round(max(vols) - min(vols), 3),
            "score": round(1.0 - d, 4)}


@dataclass
class Passes:
    """What :func:`run_passes` measured.

    Attributes:
        raw: ``(3, D, H, W)`` bool WT/TC/ET before clean-up (working grid).
        uncertainty: :func:`mirroring_disagreement` of the passes or members.
        voxel_map: ``(D, H, W)`` float32 in [0, 1]: whole-tumour mutual information between
            the passes or members, in bits (0: they agree).
        features: The trust figures of the first network's plain and left-right passes.
        members: Number of networks that voted (1 without the ensemble).
    """

    raw: np.ndarray
    uncertainty: dict[str, Any]
    voxel_map: np.ndarray
    features: dict[str, float]
    members: int


def run_passes(seg: SegModel, image: np.ndarray, voxel_ml: float, tta: bool = False
               ) -> Passes:
    """Segment ``image`` (``(C, D, H, W)`` float32) and measure it (see the module docstring).

    The mask is the same as :func:`predict_raw`'s (for the ensemble: its mean probability
    above 0.5). Without ``tta`` a single model's left-right pass only measures; with ``tta``
    it is one of the 8 averaged passes. The uncertainty compares the passes (one model) or
    the members (ensemble).
    """
    members = list(seg.members) if isinstance(seg, SegEnsemble) else [seg]
    mirrors = MIRRORS if tta else ((),)
    total = np.zeros((3, *image.shape[1:]), np.float32)
    member_wt, mirror_wt = [], []
    plain = left_right = None
    plain_logits = None
    for i, member in enumerate(members):
        acc = np.zeros_like(total)
        for axes in mirrors:
            if i == 0 and not axes and not tta and len(members) == 1:
                plain_logits = member.logits(image)
                prob = sigmoid(plain_logits)
            else:
                prob = _probabilities(member, image, axes)
            acc += prob
            if i == 0:
                mirror_wt.append(prob[0])
                plain = prob[0] if not axes else plain
                left_right = prob[0] if axes == LEFT_RIGHT else left_right
        acc /= len(mirrors)
        total += acc
        member_wt.append(acc[0])
    if left_right is None:  # the measuring pass
        left_right = _probabilities(members[0], image, LEFT_RIGHT)[0]
        mirror_wt.append(left_right)
    assert plain is not None
    raw = plain_logits > 0 if plain_logits is not None else total / len(members) > 0.5
    if len(members) > 1:
        maps, method = member_wt, f"fold ensemble disagreement ({len(members)} members)"
    else:
        maps = mirror_wt
        method = UNCERTAINTY_8_PASSES if tta else UNCERTAINTY_2_PASSES
    return Passes(raw, mirroring_disagreement([m > 0.5 for m in maps], voxel_ml, method),
                  mutual_information(maps), trust_features(plain, left_right), len(members))
