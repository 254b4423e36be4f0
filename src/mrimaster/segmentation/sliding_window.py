"""Gaussian-blended sliding-window inference in NumPy, for the torch-free segmentation path.

On MONAI's grid the PyTorch path uses MONAI's ``sliding_window_inference``; this module
reproduces what it computes for ``mode="gaussian"`` (patch grid of
``monai.data.utils.dense_patch_slices`` with the interval of ``_get_scan_interval``; importance
map of ``monai.data.utils.compute_importance_map``, sigma 0.125 of the patch; symmetric zero
padding of volumes smaller than the patch), so that an exported network gives the same labels
without importing torch or MONAI. ``tests/segmentation/test_sliding_window.py`` checks it
against MONAI. Blending follows nnU-Net (Isensee et al., Nature Methods 2021): patch outputs
are weighted by a Gaussian centred on the patch, which down-weights the less reliable patch
borders.

Two patch grids (:data:`GRIDS`), recorded with each model (``SegInfo.grid``): ``monai``
(MONAI's: equal steps, the last patch pulled back flush with the end, which can leave two
patches nearly on top of each other: starts 0, 72, 88 on a 184-voxel axis) and ``even``
(MONAI's number of patches placed as nnU-Net's ``compute_steps_for_sliding_window`` places
them, spread evenly from one end to the other: 0, 44, 88; PyTorch then runs this module's
window too). They cost the same; on the 14 cross-validation cases, each by the fold model that
never saw it, ``even`` read the mean whole-tumour Dice 0.841 against 0.836 (7 cases better, 4
worse: within what 14 cases can tell apart; README, *Segmentation*).
"""

from __future__ import annotations

import functools
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


def _monai_axis(size: int, roi: int, step: int) -> list[int]:
    """MONAI's starts on one axis: every ``step``, the last one flush with the end."""
    count = next((d for d in range(math.ceil(size / step)) if d * step + roi >= size), 0)
    return [i * step - max(i * step + roi - size, 0) for i in range(count + 1)]


def _even_axis(size: int, roi: int, step: int) -> list[int]:
    """As many starts as :func:`_monai_axis`, spread evenly over ``[0, size - roi]`` (rounded
    to whole voxels, as nnU-Net)."""
    count = len(_monai_axis(size, roi, step))
    last = max(size - roi, 0)
    return [0] if count == 1 else [int(np.round(i * last / (count - 1))) for i in range(count)]


GRIDS: dict[str, Callable[[int, int, int], list[int]]] = {"monai": _monai_axis,
                                                          "even": _even_axis}
"""Patch grids by name: ``(axis size, patch size, step) -> starts`` (see the module
docstring)."""

GRID_WORDS = {"monai": "MONAI's patch grid", "even": "patches spread evenly, as nnU-Net"}
"""Each grid in a few words (for model cards)."""


def patch_starts(image: Sequence[int], patch: Sequence[int], interval: Sequence[int],
                 grid: str = "monai") -> list[tuple[int, ...]]:
    """Start index of every patch (row-major) on :data:`GRIDS` ``[grid]``: the first patch at
    0 and the last flush with the end of each axis.

    Raises:
        ValueError: ``grid`` is not in :data:`GRIDS`.
    """
    if grid not in GRIDS:
        raise ValueError(f"sliding-window grid {grid!r} unknown; use one of {', '.join(GRIDS)}")
    per_axis = [GRIDS[grid](size, roi, step)
                for size, roi, step in zip(image, patch, interval, strict=True)]
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


@functools.lru_cache(maxsize=4)
def _inverse_weight_sum(size: tuple[int, ...], patch: tuple[int, ...], overlap: float,
                        grid: str) -> np.ndarray:
    """``size``-shaped float32 ``1 / sum of the Gaussian weights`` of the patches covering
    each voxel (the same for every pass over one grid, so kept; read-only)."""
    weights = gaussian_importance(patch)
    norm = np.zeros(size, np.float32)
    for start in patch_starts(size, patch, scan_interval(size, patch, overlap), grid):
        norm[tuple(slice(s, s + roi) for s, roi in zip(start, patch, strict=True))] += weights
    inverse = np.reciprocal(norm)
    inverse.flags.writeable = False
    return inverse


def sliding_window(image: np.ndarray, patch: Sequence[int], predictor: Predictor,
                   overlap: float = 0.25, batch_size: int = 2, grid: str = "monai"
                   ) -> np.ndarray:
    """Run ``predictor`` over overlapping patches of ``image`` and blend the outputs.

    The batch buffer is filled in place and each output weighted in place: fresh arrays of
    this size cost more in page faults than the arithmetic (about a third of a pass's time
    beside the network, measured on 2 cores).

    Args:
        image: ``(C, *spatial)`` float32.
        patch: Patch size per spatial axis.
        predictor: The network (see :data:`Predictor`).
        overlap: Share of a patch shared with its neighbour, in [0, 1).
        batch_size: Patches per predictor call.
        grid: Where the patches lie (:data:`GRIDS`).

    Returns:
        ``(K, *spatial)`` float32 blended outputs.
    """
    patch = tuple(int(roi) for roi in patch)
    overlap = float(overlap)  # one step for the patches and the cached weights alike
    spatial = image.shape[1:]
    pad = [max(roi - size, 0) for roi, size in zip(patch, spatial, strict=True)]
    padding = [(0, 0)] + [(p // 2, p - p // 2) for p in pad]
    padded = np.pad(image, padding) if any(pad) else image
    size = tuple(int(v) for v in padded.shape[1:])
    starts = patch_starts(size, patch, scan_interval(size, patch, overlap), grid)
    weights = gaussian_importance(patch)
    total: np.ndarray | None = None
    batch = np.empty((min(batch_size, len(starts)), padded.shape[0], *patch), np.float32)
    for first in tqdm(range(0, len(starts), batch_size), desc="sliding window", unit="batch",
                      leave=False, disable=None):
        group = starts[first:first + batch_size]
        boxes = [tuple(slice(s, s + roi) for s, roi in zip(start, patch, strict=True))
                 for start in group]
        for i, box in enumerate(boxes):
            batch[i] = padded[(slice(None), *box)]
        out = np.asarray(predictor(batch[:len(boxes)]), np.float32)
        if not out.flags.writeable:
            out = out.copy()
        if total is None:
            total = np.zeros((out.shape[1], *size), np.float32)
        for box, patch_out in zip(boxes, out, strict=True):
            total[(slice(None), *box)] += np.multiply(patch_out, weights, out=patch_out)
    assert total is not None
    total *= _inverse_weight_sum(size, patch, overlap, grid)
    crop = tuple(slice(lo, lo + s) for (lo, _), s in zip(padding[1:], spatial, strict=True))
    return total[(slice(None), *crop)]
