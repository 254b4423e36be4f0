"""Dice and HD95 per region, as BraTS reports them (MONAI metrics underneath).

Conventions for empty masks follow the BraTS challenge: both empty -> Dice 1, HD95 0; one
empty -> Dice 0, HD95 = the image diagonal in mm (a bounded worst case, 373.13 mm for
240x240x155 at 1 mm).
"""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance

from mrimaster.segmentation.labels import REGIONS


def region_scores(pred: np.ndarray, truth: np.ndarray, known: np.ndarray,
                  spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
                  ) -> dict[str, dict[str, float]]:
    """Dice and HD95 for each known region.

    Args:
        pred: ``(3, D, H, W)`` bool predicted WT/TC/ET.
        truth: ``(3, D, H, W)`` bool reference.
        known: ``(3,)`` bool, regions the reference defines (others are skipped).
        spacing: Voxel size in mm, for HD95.

    Returns:
        ``{region: {"dice", "hd95"}}``.
    """
    worst = float(np.sqrt(sum((s * n) ** 2 for s, n in zip(spacing, pred.shape[1:],
                                                               strict=True))))
    out: dict[str, dict[str, float]] = {}
    for i, name in enumerate(REGIONS):
        if not known[i]:
            continue
        p, t = pred[i], truth[i]
        if not p.any() and not t.any():
            out[name] = {"dice": 1.0, "hd95": 0.0}
            continue
        if not p.any() or not t.any():
            out[name] = {"dice": 0.0, "hd95": worst}
            continue
        pt = torch.from_numpy(p)[None, None].float()
        tt = torch.from_numpy(t)[None, None].float()
        dice = float(compute_dice(pt, tt, include_background=True).item())
        hd = float(compute_hausdorff_distance(pt, tt, include_background=True, percentile=95,
                                              spacing=list(spacing)).item())
        out[name] = {"dice": dice, "hd95": hd}
    return out


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice overlap of two bool masks of one shape, in [0, 1]; 1.0 when both are empty (for
    comparing two predictions; :func:`region_scores` scores against a reference by BraTS
    conventions)."""
    total = int(pred.sum()) + int(ref.sum())
    return 1.0 if total == 0 else 2.0 * int((pred & ref).sum()) / total


def mean_scores(per_case: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Mean Dice / HD95 per region over the cases that define it (with the case count)."""
    out: dict[str, dict[str, float]] = {}
    for name in REGIONS:
        rows = [c[name] for c in per_case.values() if name in c]
        if rows:
            out[name] = {"dice": float(np.mean([r["dice"] for r in rows])),
                         "hd95": float(np.mean([r["hd95"] for r in rows])), "cases": len(rows)}
    return out
