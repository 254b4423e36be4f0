"""Uncertainty beyond the softmax, and selective prediction (risk-coverage, thresholds).

Four estimators, chosen per model by measurement on the validation split (lowest AURC among
those within the cost budget, see :mod:`mrimaster.training.fit_trust`). :data:`PASSES` gives
the cost of each in network passes, the single pass included:

- ``softmax``: 1 - max calibrated probability (the baseline); 1 pass.
- ``mc-dropout``: Monte-Carlo dropout (Gal & Ghahramani, ICML 2016) on the classifier head:
  1 - max of the mean calibrated probability over ``passes`` dropout masks applied to the
  penultimate features, at the rate of the network's own head dropout. The features come from
  the single forward pass, so it costs a few small matrix products, not extra passes. The
  masks of an image are drawn from a generator seeded by the image's own bytes: an image's
  uncertainty is reproducible and does not depend on the other images in the batch; 1 pass.
- ``flip``: test-time augmentation with the left-right mirror only (brains are nearly
  symmetric): 1 - max of the mean calibrated probability over the image and its mirror; 2 passes.
- ``tta``: test-time augmentation (Ayhan & Berens, MIDL 2018) over the image, its mirror and
  two zoomed crops; 4 passes.

The predicted class always comes from the single calibrated pass (which is also the first
augmented view); the estimator only ranks how far to trust it. The referral threshold is the
largest uncertainty at which the error of the accepted predictions (ties included) stays
within the target (selective classification, Geifman & El-Yaniv, NeurIPS 2017); the
risk-coverage curve and its area (AURC) summarise the ranking.

NumPy only: estimators run through a :class:`~mrimaster.inference.runtime.Runtime`.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from mrimaster.errors import MRIMasterError
from mrimaster.inference.runtime import Runtime, softmax

MC_PASSES = 32


def _zoomed(images: np.ndarray, frac: float) -> np.ndarray:
    """Central ``frac`` crop of each ``(S, S)`` image, resized back to ``S`` (bilinear)."""
    size = images.shape[-1]
    lo = int(round(size * (1 - frac) / 2))
    hi = size - lo
    return np.stack([np.asarray(Image.fromarray(im[lo:hi, lo:hi]).resize(
        (size, size), Image.Resampling.BILINEAR)) for im in images])


def _mirror(images: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(images[:, :, ::-1])


def _mean_probs(runtime: Runtime, views: list[np.ndarray], temperature: float,
                logits: np.ndarray) -> np.ndarray:
    """Mean calibrated probability over the single pass (``logits``) and ``views``."""
    probs = [softmax(logits, temperature)]
    probs += [softmax(runtime.forward(v)[0], temperature) for v in views]
    return np.mean(probs, axis=0)


def _flip_probs(runtime: Runtime, images: np.ndarray, temperature: float, logits: np.ndarray,
                features: np.ndarray) -> np.ndarray:
    return _mean_probs(runtime, [_mirror(images)], temperature, logits)


def _tta_probs(runtime: Runtime, images: np.ndarray, temperature: float, logits: np.ndarray,
               features: np.ndarray) -> np.ndarray:
    views = [_mirror(images), _zoomed(images, 0.9), _zoomed(images, 0.8)]
    return _mean_probs(runtime, views, temperature, logits)


def image_seed(image: np.ndarray) -> int:
    """A seed from an image's bytes (CRC-32), so its random draws depend on it alone."""
    return zlib.crc32(np.ascontiguousarray(image).tobytes())


def _mc_dropout_probs(runtime: Runtime, images: np.ndarray, temperature: float,
                      logits: np.ndarray, features: np.ndarray, passes: int = MC_PASSES
                      ) -> np.ndarray:
    """Mean calibrated probability over ``passes`` head-dropout masks per image.

    Args:
        features: ``(N, D)`` penultimate features of ``images`` (one forward pass).
    """
    head = runtime.head()
    rate, weight, bias = head.dropout, head.weight, head.bias
    if rate <= 0:
        raise MRIMasterError("this model has no dropout before its head for MC dropout")
    out = np.empty((len(images), weight.shape[0]))
    for i, (image, feat) in enumerate(zip(images, features, strict=True)):
        rng = np.random.default_rng(image_seed(image))
        masks = (rng.random((passes, feat.shape[0])) >= rate) / (1 - rate)
        out[i] = softmax((masks * feat) @ weight.T + bias, temperature).mean(0)
    return out


ProbsFn = Callable[[Runtime, np.ndarray, float, np.ndarray, np.ndarray], np.ndarray]
UNCERTAINTY_METHODS: dict[str, ProbsFn | None] = {
    "softmax": None, "mc-dropout": _mc_dropout_probs, "flip": _flip_probs, "tta": _tta_probs}
PASSES: dict[str, int] = {"softmax": 1, "mc-dropout": 1, "flip": 2, "tta": 4}
"""Network passes per image of each estimator, the single pass included."""


def uncertainty(method: str, runtime: Runtime, images: np.ndarray, temperature: float,
                logits: np.ndarray, features: np.ndarray) -> np.ndarray:
    """``(N,)`` uncertainty in [0, 1): 1 - max probability under ``method``.

    Args:
        runtime: The runtime that produced ``logits`` and ``features``.
        images: ``(N, S, S)`` uint8 preprocessed slices.
        logits: ``(N, C)`` logits of the single pass.
        features: ``(N, D)`` penultimate features of the single pass.
    """
    if method not in UNCERTAINTY_METHODS:
        raise MRIMasterError(f"unknown uncertainty method {method!r}",
                             f"choose one of: {', '.join(UNCERTAINTY_METHODS)}")
    fn = UNCERTAINTY_METHODS[method]
    probs = (softmax(logits, temperature) if fn is None
             else fn(runtime, images, temperature, logits, features))
    return 1.0 - probs.max(axis=1)


def risk_coverage(unc: np.ndarray, correct: np.ndarray) -> dict[str, Any]:
    """Risk (error rate of accepted predictions) at every coverage, most certain first.

    Returns:
        ``coverage`` and ``risk`` arrays (N,), ``aurc`` (mean risk over coverages, lower is
        better), ``error_at_60``/``error_at_80``/``error_at_90`` (risk at 60% / 80% / 90%
        coverage) and ``error_at_100``.
    """
    if len(unc) == 0:
        raise MRIMasterError("no predictions to build a risk-coverage curve from")
    order = np.argsort(unc, kind="stable")
    errors = ~np.asarray(correct, dtype=bool)[order]
    n = len(errors)
    accepted = np.arange(1, n + 1)
    risk = np.cumsum(errors) / accepted
    coverage = accepted / n

    def at(cov: float) -> float:
        return float(risk[max(int(np.ceil(cov * n)) - 1, 0)])

    return {"coverage": coverage, "risk": risk, "aurc": float(risk.mean()),
            "error_at_60": at(0.6), "error_at_80": at(0.8), "error_at_90": at(0.9),
            "error_at_100": float(risk[-1])}


def accepted_counts(unc: np.ndarray, correct: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each distinct uncertainty ``t`` (ascending), how many images ``{unc <= t}`` would
    accept and how many of those are wrong: ``(values, accepted, errors)``, each ``(k,)``."""
    values, inverse = np.unique(np.asarray(unc, dtype=np.float64), return_inverse=True)
    wrong = ~np.asarray(correct, dtype=bool)
    accepted = np.cumsum(np.bincount(inverse, minlength=len(values)))
    errors = np.cumsum(np.bincount(inverse, weights=wrong, minlength=len(values)))
    return values, accepted, errors


def choose_threshold(unc: np.ndarray, correct: np.ndarray, target_error: float) -> float:
    """Largest threshold ``t`` whose accepted set ``{unc <= t}`` has error <= ``target_error``.

    Candidate thresholds are the distinct uncertainty values, so images with equal uncertainty
    are always accepted or referred together and the error is that of the whole accepted set.

    Returns ``-1.0`` (refer everything) when no threshold meets the target.
    """
    values, accepted, errors = accepted_counts(unc, correct)
    ok = np.flatnonzero(errors / accepted <= target_error + 1e-12)
    return float(values[ok[-1]]) if ok.size else -1.0
