"""The audit's picture of near-duplicate distances: how the grouping threshold was chosen.

Left: the distribution of each image's distance to its nearest other image (256-bit pHash,
dihedral variants included) with the threshold marked. Right: random example pairs from
distance bands around the threshold, so a reader can see from which distance on pairs stop
being the same patient.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from mrimaster.data.images import load_grayscale, prepare_slice

BANDS: tuple[tuple[int, int], ...] = ((30, 38), (39, 44), (45, 48), (49, 52), (53, 56),
                                      (57, 62))


def plot_pair_distances(paths: Sequence[Path], labels: Sequence[str], dist: np.ndarray,
                        threshold: int, path: Path, pairs_per_band: int = 4,
                        seed: int = 0) -> None:
    """Write the figure.

    Args:
        paths: Image files, in the order of ``dist``.
        labels: Class label per image.
        dist: ``(N, N)`` symmetric Hamming distances.
        threshold: The grouping threshold to mark.
        path: PNG to write.
    """
    rng = np.random.default_rng(seed)
    d = dist.astype(float).copy()
    np.fill_diagonal(d, np.inf)
    fig = Figure(figsize=(4 + 2.2 * 2 * pairs_per_band, 2.2 * len(BANDS)))
    grid = fig.add_gridspec(len(BANDS), 1 + 2 * pairs_per_band, width_ratios=[
        2.5 * pairs_per_band] + [1] * 2 * pairs_per_band)
    ax = fig.add_subplot(grid[:, 0])
    nearest = d.min(1)
    ax.hist(nearest[np.isfinite(nearest)], bins=list(range(0, 130, 2)), color="tab:blue")
    ax.axvline(threshold + 0.5, color="red", lw=2, label=f"threshold {threshold} bits")
    ax.set(xlabel="distance to the nearest other image (bits of 256)", ylabel="images",
           title="Nearest-neighbour distances")
    ax.legend()
    upper = np.triu(np.ones_like(d, dtype=bool), 1)
    for row, (lo, hi) in enumerate(BANDS):  # the first title of each row names its distance
        i, j = np.nonzero(upper & (d >= lo) & (d <= hi))
        pick: np.ndarray = rng.choice(len(i), min(pairs_per_band, len(i)), replace=False) \
            if len(i) else np.zeros(0, np.int64)
        for k in range(pairs_per_band):
            for m in range(2):
                a = fig.add_subplot(grid[row, 1 + 2 * k + m])
                a.axis("off")
                if k >= len(pick):
                    continue
                idx = (i[pick[k]], j[pick[k]])[m]
                a.imshow(prepare_slice(load_grayscale(paths[idx]), 96), cmap="gray")
                a.set_title(f"{int(d[i[pick[k]], j[pick[k]]])} bits, {labels[idx]}"
                            if m == 0 else labels[idx], fontsize=7)
    fig.suptitle(f"Near-duplicate pairs by distance (grouped at <= {threshold} bits)")
    fig.tight_layout()
    fig.savefig(path, dpi=70)
