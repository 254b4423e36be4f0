"""Post-processing of predicted region masks, and choosing it by cross-validation.

As in nnU-Net (Isensee et al. 2021, "Postprocessing"), removing small connected components is
not assumed to help: for each region it is applied only when it raised the mean Dice of the
cross-validation predictions. Candidates: off, or drop every component smaller than a fraction
of the region's largest one (1.0 keeps only the largest).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mrimaster.segmentation.labels import REGIONS

CANDIDATES: tuple[float | None, ...] = (None, 0.05, 0.1, 0.25, 1.0)
"""Clean-up settings tried per region: off, or the smallest kept size relative to the
largest component."""


def describe(keep_fraction: float | None) -> str:
    """A clean-up setting in words."""
    if keep_fraction is None:
        return "off"
    if keep_fraction >= 1.0:
        return "only the largest component kept"
    return f"components under {keep_fraction:g} of the largest removed"


def drop_small_components(mask: np.ndarray, keep_fraction: float | None) -> np.ndarray:
    """``(D, H, W)`` bool -> the mask without components (26-connected) smaller than
    ``keep_fraction`` of its largest; unchanged when ``keep_fraction`` is ``None``."""
    if keep_fraction is None or not mask.any():
        return mask
    from scipy import ndimage

    components, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    if n <= 1:
        return mask
    sizes = np.bincount(components.ravel())[1:]
    keep = np.flatnonzero(sizes >= keep_fraction * sizes.max()) + 1
    return np.isin(components, keep)


def clean_regions(regions: np.ndarray, postprocess: dict[str, float | None]) -> np.ndarray:
    """Apply the per-region clean-up, then nest the regions (ET inside TC inside WT).

    Args:
        regions: ``(3, D, H, W)`` bool WT/TC/ET.
        postprocess: ``{region: keep_fraction or None}``; regions not named are left as they
            are.

    Returns:
        ``(3, D, H, W)`` bool, hierarchy enforced.
    """
    out = regions.copy()
    for i, name in enumerate(REGIONS):
        out[i] = drop_small_components(out[i], postprocess.get(name))
    out[1] &= out[0]
    out[2] &= out[1]
    return out


def choose_postprocessing(
    raw: list[np.ndarray], score: Callable[[int, int, np.ndarray], float | None],
) -> tuple[dict[str, float | None], dict[str, dict[str, float]]]:
    """Pick, region by region (WT first, as later regions are nested in it), the candidate
    with the highest mean score over the cases; off unless a candidate beats it.

    Args:
        raw: Per case, ``(3, D, H, W)`` bool predictions before clean-up.
        score: ``score(case_index, region_index, cleaned_mask)`` -> the Dice of that region
            in that case, or ``None`` when the case is not scored on the region.

    Returns:
        ``(chosen, table)``: ``{region: keep_fraction or None}`` and
        ``{region: {candidate label: mean score}}``.
    """
    chosen: dict[str, float | None] = {}
    table: dict[str, dict[str, float]] = {}
    for i, name in enumerate(REGIONS):
        means: dict[float | None, float] = {}
        for candidate in CANDIDATES:
            trial = {**chosen, name: candidate}
            scores = []
            for k, pred in enumerate(raw):
                cleaned = clean_regions(pred, trial)
                s = score(k, i, cleaned[i])
                if s is not None:
                    scores.append(s)
            if scores:
                means[candidate] = float(np.mean(scores))
        if not means:
            chosen[name] = None
            continue
        best = max(means, key=lambda c: (means[c], c is None))
        chosen[name] = best if means[best] > means.get(None, -1.0) else None
        table[name] = {("off" if c is None else f"{c:g}"): v for c, v in means.items()}
    return chosen, table
