"""Gaussian-blended sliding-window inference in NumPy, for the torch-free segmentation path.

The PyTorch path uses MONAI's ``sliding_window_inference``; this module reproduces what it
computes for ``mode="gaussian"`` (patch grid of ``monai.data.utils.dense_patch_slices`` with
the interval of ``_get_scan_interval``; importance map of
``monai.data.utils.compute_importance_map``, sigma 0.125 of the patch; symmetric zero padding of
volumes smaller than the patch), so that an exported network gives the same labels without
importing torch or MONAI. ``tests/segmentation/test_sliding_window.py`` checks it against MONAI.
Blending follows nnU-Net (Isensee et al., Nature Methods 2021): patch outputs are weighted by a
Gaussian centred on the patch, which down-weights the less reliable patch borders.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from tqdm import tqdm

Predictor = Callable[[np.ndarray], np.ndarray]
"""``(B, C, *patch)`` float32 -> ``(B, K, *patch)`` float32."""


def scan_interval(image: Sequence[int], patch: Sequence[int], overlap: float) -> list[int]:
    """Step between patch starts per axis (the whole patch when it spans the axis)."""
    out = []
    for size, roi in zip(image, patch, strict=True):
        step = roi if roi == size else int(roi * (1 - overlap))
        out.append(step if step > 0 else 1)
    return out


def patch_starts(image: Sequence[int], patch: Sequence[int], interval: Sequence[int]
                 ) -> list[tuple[int, ...]]:
    """Start index of every patch (row-major), the last one per axis flush with the end."""
    per_axis = []
    for size, roi, step in zip(image, patch, interval, strict=True):
        count = next((d for d in range(math.ceil(size / step)) if d * step + roi >= size), 0)
        per_axis.append([i * step - max(i * step + roi - size, 0) for i in range(count + 1)])
    grids = np.meshgrid(*per_axis, indexing="ij")
    return [tuple(int(v) for v in row) for row in np.stack([g.ravel() for g in grids], 1)]


def gaussian_importance(patch: Sequence[int], sigma_scale: float = 0.125) -> np.ndarray:
    """``patch``-shaped float32 weights: a separable Gaussian ``exp(-x^2 / (2 sigma^2))`` per
    axis, ``x`` from the patch centre, ``sigma = sigma_scale * patch``, floored at 1e-3 so that
    no voxel has zero weight."""
    weights: np.ndarray | None = None
    for roi in patch:
        x = np.arange(-(roi - 1) / 2.0, (roi - 1) / 2.0 + 1, dtype=np.float32)
        g = np.exp(x ** 2 / np.float32(-2 * (roi * sigma_scale) ** 2)).astype(np.float32)
        weights = g if weights is None else np.multiply.outer(weights, g)
    assert weights is not None
    return np.maximum(weights, max(float(weights.min()), 1e-3)).astype(np.float32)


def sliding_window(image: np.ndarray, patch: Sequence[int], predictor: Predictor,
                   overlap: float = 0.25, batch_size: int = 2) -> np.ndarray:
    """Run ``predictor`` over overlapping patches of ``image`` and blend the outputs.

    Args:
        image: ``(C, *spatial)`` float32.
        patch: Patch size per spatial axis.
        predictor: The network (see :data:`Predictor`).
        overlap: Share of a patch shared with its neighbour, in [0, 1).
        batch_size: Patches per predictor call.

    Returns:
        ``(K, *spatial)`` float32 blended outputs.
    """
    spatial = image.shape[1:]
    pad = [max(roi - size, 0) for roi, size in zip(patch, spatial, strict=True)]
    padding = [(0, 0)] + [(p // 2, p - p // 2) for p in pad]
    padded = np.pad(image, padding) if any(pad) else image
    size = padded.shape[1:]
    starts = patch_starts(size, patch, scan_interval(size, patch, overlap))
    weights = gaussian_importance(patch)
    total: np.ndarray | None = None
    norm = np.zeros(size, np.float32)
    for first in tqdm(range(0, len(starts), batch_size), desc="sliding window", unit="batch",
                      leave=False, disable=None):
        group = starts[first:first + batch_size]
        boxes = [tuple(slice(s, s + roi) for s, roi in zip(start, patch, strict=True))
                 for start in group]
        out = predictor(np.stack([padded[(slice(None), *box)] for box in boxes]))
        if total is None:
            total = np.zeros((out.shape[1], *size), np.float32)
        for box, patch_out in zip(boxes, out, strict=True):
            total[(slice(None), *box)] += patch_out * weights
            norm[box] += weights
    assert total is not None
    result = total / norm
    crop = tuple(slice(lo, lo + s) for (lo, _), s in zip(padding[1:], spatial, strict=True))
    return result[(slice(None), *crop)]
