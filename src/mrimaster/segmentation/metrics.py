"""Dice, HD95 and volume difference per region, as BraTS reports them (MONAI metrics
underneath).

Conventions for empty masks follow the BraTS challenge: both empty -> Dice 1, HD95 0; one
empty -> Dice 0, HD95 = the diagonal of the whole input grid in mm (a bounded worst case,
373.13 mm for 240 x 240 x 155 at 1 mm), whatever crop the masks are given on.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance

from mrimaster.segmentation.labels import REGIONS


def region_scores(pred: np.ndarray, truth: np.ndarray, known: np.ndarray,
                  spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
                  grid_shape: tuple[int, ...] | None = None
                  ) -> dict[str, dict[str, float]]:
    """Dice, HD95 and volume difference for each scored region.

    Args:
        pred: ``(3, D, H, W)`` bool predicted WT/TC/ET.
        truth: ``(3, D, H, W)`` bool reference.
        known: ``(3,)`` bool, regions to score (others are skipped).
        spacing: Voxel size in mm, for HD95 and volumes.
        grid_shape: Shape of the whole input grid, for the empty-mask HD95 (default: the
            masks' shape, when they are given on the whole grid).

    Returns:
        ``{region: {"dice", "hd95", "volume_ml", "reference_ml", "volume_diff_ml"}}``
        (difference = predicted - reference).
    """
    shape = tuple(grid_shape or pred.shape[1:])
    worst = float(np.sqrt(sum((s * n) ** 2 for s, n in zip(spacing, shape, strict=True))))
    voxel_ml = float(np.prod(spacing)) / 1000.0
    out: dict[str, dict[str, float]] = {}
    for i, name in enumerate(REGIONS):
        if not known[i]:
            continue
        p, t = pred[i], truth[i]
        vols = {"volume_ml": float(p.sum()) * voxel_ml, "reference_ml": float(t.sum()) * voxel_ml}
        vols["volume_diff_ml"] = vols["volume_ml"] - vols["reference_ml"]
        if not p.any() and not t.any():
            out[name] = {"dice": 1.0, "hd95": 0.0, **vols}
            continue
        if not p.any() or not t.any():
            out[name] = {"dice": 0.0, "hd95": worst, **vols}
            continue
        pt = torch.from_numpy(p)[None, None].float()
        tt = torch.from_numpy(t)[None, None].float()
        dice = float(compute_dice(pt, tt, include_background=True).item())
        hd = float(compute_hausdorff_distance(pt, tt, include_background=True, percentile=95,
                                              spacing=list(spacing)).item())
        out[name] = {"dice": dice, "hd95": hd, **vols}
    return out


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice overlap of two bool masks of one shape, in [0, 1]; 1.0 when both are empty (for
    comparing two predictions; :func:`region_scores` scores against a reference by BraTS
    conventions)."""
    total = int(pred.sum()) + int(ref.sum())
    return 1.0 if total == 0 else 2.0 * int((pred & ref).sum()) / total


def mean_scores(per_case: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Mean of each score per region over the cases scored on it (with the case count and
    the lowest Dice)."""
    out: dict[str, dict[str, float]] = {}
    for name in REGIONS:
        rows = [c[name] for c in per_case.values() if name in c]
        if rows:
            out[name] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
            out[name].update({"cases": len(rows),
                              "min_dice": float(min(r["dice"] for r in rows))})
    return out
