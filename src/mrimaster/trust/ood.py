"""Out-of-distribution checks: is this input a brain MRI slice of the kind the model knows?

Two layers, cheapest first:

1. **Input checks** on the decoded file, before the network (:func:`input_problem`): too small,
   blank or constant, or a colour image (MRI slices are grayscale; every image of the training
   folders has identical R, G and B).
2. **Feature distance** (:class:`FeatureDistance`): the Mahalanobis distance of the network's
   penultimate features to the nearest class mean under a covariance shared by all classes
   (Lee et al., "A Simple Unified Framework for Detecting Out-of-Distribution Samples and
   Adversarial Attacks", NeurIPS 2018, Eq. 2):

       M(x) = min_c (f(x) - mu_c)^T Sigma^-1 (f(x) - mu_c).

   To keep the model file small, ``Sigma`` is stored as its top ``rank`` eigenvectors and a
   single variance for the remaining directions (probabilistic PCA; Tipping & Bishop 1999):
   ``(f - mu)^T Sigma^-1 (f - mu) ~= sum_i<=k (v_i . d)^2 / l_i + |d_rest|^2 / l_rest``.
   Distances are reported per feature dimension (``M / D``), so 1 is typical of training data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mrimaster.data.images import RawStats

MIN_SIDE = 64
"""Images with a side shorter than this many pixels are rejected."""
MIN_STD = 4.0
"""Grayscale standard deviation (0-255) below which an image is blank or constant."""
MIN_FOREGROUND = 0.03
"""Share of pixels brighter than the background threshold below which an image is blank."""
MAX_COLOURFULNESS = 8.0
"""Mean absolute difference between colour channels (0-255) above which an image is a colour
picture, not an MRI slice (0.0 on every image of the shared MRI folders)."""


def input_problem(stats: RawStats) -> str | None:
    """Why an image cannot be a brain MRI slice, or ``None`` when it might be one."""
    if min(stats.height, stats.width) < MIN_SIDE:
        return (f"image too small ({stats.width}x{stats.height} px; MRI slices are at least "
                f"{MIN_SIDE} px a side)")
    if stats.std < MIN_STD or stats.foreground < MIN_FOREGROUND:
        return "image is blank or nearly constant"
    if stats.colourfulness > MAX_COLOURFULNESS:
        return "colour image (MRI slices are grayscale): not a brain MRI slice"
    return None


@dataclass
class FeatureDistance:
    """Class-conditional Mahalanobis distance with a shared, low-rank-plus-isotropic covariance.

    Attributes:
        means: ``(C, D)`` float32 class means of the training features.
        basis: ``(k, D)`` float32 top eigenvectors of the shared covariance.
        variances: ``(k,)`` float32 their eigenvalues.
        rest_variance: Mean eigenvalue of the remaining ``D - k`` directions.
    """

    means: np.ndarray
    basis: np.ndarray
    variances: np.ndarray
    rest_variance: float

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, rank: int = 256,
            shrinkage: float = 1e-3) -> FeatureDistance:
        """Fit on training features.

        Args:
            features: ``(N, D)`` float penultimate features.
            labels: ``(N,)`` int class per row (classes with no row are left out).
            rank: Eigenvectors kept (at most ``D``).
            shrinkage: Added to every eigenvalue, relative to their mean (keeps it invertible).
        """
        feats = np.asarray(features, dtype=np.float64)
        classes = np.unique(labels)
        means = np.stack([feats[labels == c].mean(0) for c in classes])
        resid = feats - means[np.searchsorted(classes, labels)]
        cov = resid.T @ resid / len(feats)
        eigval, eigvec = np.linalg.eigh(cov)
        eigval, eigvec = eigval[::-1], eigvec[:, ::-1]
        eigval = np.clip(eigval, 0, None) + shrinkage * max(eigval.mean(), 1e-12)
        k = min(rank, feats.shape[1] - 1)
        return cls(means.astype(np.float32), eigvec[:, :k].T.astype(np.float32),
                   eigval[:k].astype(np.float32), float(eigval[k:].mean()))

    def distance(self, features: np.ndarray) -> np.ndarray:
        """``(N,)`` float64 min over classes of the Mahalanobis distance, per dimension."""
        feats = np.asarray(features, dtype=np.float64)
        basis = self.basis.astype(np.float64)
        best = np.full(len(feats), np.inf)
        for mean in self.means.astype(np.float64):
            d = feats - mean
            proj = d @ basis.T
            inside = (proj ** 2 / self.variances).sum(1)
            rest = np.maximum((d ** 2).sum(1) - (proj ** 2).sum(1), 0) / self.rest_variance
            best = np.minimum(best, inside + rest)
        return best / feats.shape[1]

    def to_dict(self) -> dict[str, Any]:
        """Arrays and a float, for the model file."""
        return {"means": self.means, "basis": self.basis, "variances": self.variances,
                "rest_variance": self.rest_variance}

    @classmethod
    def from_dict(cls, blob: dict[str, Any]) -> FeatureDistance:
        return cls(np.asarray(blob["means"], np.float32), np.asarray(blob["basis"], np.float32),
                   np.asarray(blob["variances"], np.float32), float(blob["rest_variance"]))
