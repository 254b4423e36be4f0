"""Acquisition style of a slice, and clusters of styles (proxy for "which source / scanner").

The classes of the Sartaj folder are confounded with the sources they were collected from, so
an in-source split measures how well a model recognises those sources. To estimate what happens
on a *new* source, whole clusters of acquisition style are held out (see
:func:`mrimaster.data.splits.make_split`).

The style of a raw slice (before any cropping) is described by 10 numbers, none of which looks
at the anatomy or the tumour:

- ``log2`` height and width and the aspect ratio (export resolution differs between sources),
- the share of near-black background pixels and of the image covered by the head's box
  (field of view and padding conventions),
- five quantiles (10, 25, 50, 75, 90%) of the head's intensities (sequence and windowing).

Features are z-scored and clustered with k-means (Lloyd's algorithm, k-means++ seeding;
Arthur & Vassilvitskii, SODA 2007), seeded, so the clusters are reproducible.
"""

from __future__ import annotations

import numpy as np

from mrimaster.data.images import foreground_box

STYLE_FEATURES: tuple[str, ...] = (
    "log2_height", "log2_width", "aspect", "background_share", "box_share",
    "q10", "q25", "q50", "q75", "q90")


def style_features(gray: np.ndarray, threshold: int = 15) -> np.ndarray:
    """Acquisition-style features of one raw slice.

    Args:
        gray: ``(H, W)`` uint8 slice as decoded (not cropped or resized).
        threshold: Intensity below which a pixel counts as background.

    Returns:
        ``(10,)`` float64 in the order of :data:`STYLE_FEATURES`.
    """
    h, w = gray.shape
    top, bottom, left, right = foreground_box(gray, threshold)
    fg = gray[gray > threshold]
    quantiles = np.percentile(fg, [10, 25, 50, 75, 90]) / 255.0 if fg.size else np.zeros(5)
    return np.array([np.log2(h), np.log2(w), w / h, float((gray <= threshold).mean()),
                     (bottom - top) * (right - left) / (h * w), *quantiles], dtype=np.float64)


def kmeans(x: np.ndarray, k: int, seed: int = 0, iterations: int = 100) -> np.ndarray:
    """Cluster rows of ``x`` (z-scored first) into ``k`` clusters.

    Args:
        x: ``(N, F)`` float features.
        k: Number of clusters (``<= N``).
        seed: Seed of the k-means++ initialisation.

    Returns:
        ``(N,)`` int64 cluster index in ``[0, k)``, clusters numbered by decreasing size.
    """
    x = np.asarray(x, dtype=np.float64)
    x = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
    rng = np.random.default_rng(seed)
    centres = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        d2 = np.min([((x - c) ** 2).sum(1) for c in centres], axis=0)
        centres.append(x[rng.choice(len(x), p=d2 / d2.sum())] if d2.sum() > 0
                       else x[rng.integers(len(x))])
    c = np.stack(centres)
    assign = np.zeros(len(x), dtype=np.int64)
    for _ in range(iterations):
        new = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
        if np.array_equal(new, assign) and _ > 0:
            break
        assign = new
        for j in range(k):
            if (assign == j).any():
                c[j] = x[assign == j].mean(0)
    order = np.argsort(-np.bincount(assign, minlength=k), kind="stable")
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)
    return rank[assign]
