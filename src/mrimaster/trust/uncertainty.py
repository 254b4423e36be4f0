"""Uncertainty beyond the softmax, and selective prediction (risk-coverage, thresholds).

Three estimators, chosen per model by measurement on the validation split (lowest AURC):

- ``softmax``: 1 - max calibrated probability (the baseline).
- ``tta``: test-time augmentation, 1 - max of the mean calibrated probability over the
  image, its mirror and two zoomed crops (Ayhan & Berens, MIDL 2018); 4 forward passes.
- ``mc-dropout``: Monte-Carlo dropout (Gal & Ghahramani, ICML 2016) on the classifier head:
  1 - max of the mean calibrated probability over ``passes`` dropout masks applied to the
  penultimate features, at the rate of the network's own head dropout. The features come from
  the single forward pass, so it costs a few small matrix products, not extra passes. The
  masks of an image are drawn from a generator seeded by the image's own bytes: an image's
  uncertainty is reproducible and does not depend on the other images in the batch.

The predicted class always comes from the single calibrated pass; the estimator only ranks how
far to trust it. The referral threshold is the largest uncertainty at which the error of the
accepted predictions (ties included) stays within the target (selective classification,
Geifman & El-Yaniv, NeurIPS 2017); the risk-coverage curve and its area (AURC) summarise the
ranking.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

from mrimaster.errors import MRIMasterError  # noqa: E402
from mrimaster.inference.forward import head_layer, predict_logits, softmax  # noqa: E402

MC_PASSES = 32


def _tta_views(images: np.ndarray) -> list[np.ndarray]:
    """The image, its left-right mirror, and 90% / 80% central crops resized back."""
    size = images.shape[-1]
    views = [images, images[:, :, ::-1]]
    for frac in (0.9, 0.8):
        lo = int(round(size * (1 - frac) / 2))
        hi = size - lo
        views.append(np.stack([np.asarray(Image.fromarray(im[lo:hi, lo:hi]).resize(
            (size, size), Image.Resampling.BILINEAR)) for im in images]))
    return [np.ascontiguousarray(v) for v in views]


def _tta_probs(net: nn.Module, images: np.ndarray, temperature: float,
               features: np.ndarray) -> np.ndarray:
    return np.mean([softmax(predict_logits(net, v), temperature) for v in _tta_views(images)],
                   axis=0)


def image_seed(image: np.ndarray) -> int:
    """A seed from an image's bytes (CRC-32), so its random draws depend on it alone."""
    return zlib.crc32(np.ascontiguousarray(image).tobytes())


def head_dropout_rate(net: nn.Module) -> float:
    """Rate of the last ``nn.Dropout`` of the network (the one before its head), or 0."""
    rates = [m.p for m in net.modules() if isinstance(m, nn.Dropout)]
    return float(rates[-1]) if rates else 0.0


def _mc_dropout_probs(net: nn.Module, images: np.ndarray, temperature: float,
                      features: np.ndarray, passes: int = MC_PASSES) -> np.ndarray:
    """Mean calibrated probability over ``passes`` head-dropout masks per image.

    Args:
        features: ``(N, D)`` penultimate features of ``images`` (one forward pass).
    """
    rate = head_dropout_rate(net)
    if rate <= 0:
        raise MRIMasterError("this model has no dropout before its head for MC dropout")
    head = head_layer(net)
    weight = head.weight.detach().float().cpu().numpy()
    bias = head.bias.detach().float().cpu().numpy() if head.bias is not None else 0.0
    out = np.empty((len(images), weight.shape[0]))
    for i, (image, feat) in enumerate(zip(images, features, strict=True)):
        rng = np.random.default_rng(image_seed(image))
        masks = (rng.random((passes, feat.shape[0])) >= rate) / (1 - rate)
        out[i] = softmax((masks * feat) @ weight.T + bias, temperature).mean(0)
    return out


ProbsFn = Callable[[nn.Module, np.ndarray, float, np.ndarray], np.ndarray]
UNCERTAINTY_METHODS: dict[str, ProbsFn | None] = {
    "softmax": None, "tta": _tta_probs, "mc-dropout": _mc_dropout_probs}


def uncertainty(method: str, net: nn.Module, images: np.ndarray, temperature: float,
                single_pass_probs: np.ndarray, features: np.ndarray) -> np.ndarray:
    """``(N,)`` uncertainty in [0, 1): 1 - max probability under ``method``.

    Args:
        images: ``(N, S, S)`` uint8 preprocessed slices.
        single_pass_probs: ``(N, C)`` calibrated probabilities of the single pass.
        features: ``(N, D)`` penultimate features of the single pass.
    """
    if method not in UNCERTAINTY_METHODS:
        raise MRIMasterError(f"unknown uncertainty method {method!r}",
                             f"choose one of: {', '.join(UNCERTAINTY_METHODS)}")
    fn = UNCERTAINTY_METHODS[method]
    probs = single_pass_probs if fn is None else fn(net, images, temperature, features)
    return 1.0 - probs.max(axis=1)


def risk_coverage(unc: np.ndarray, correct: np.ndarray) -> dict[str, Any]:
    """Risk (error rate of accepted predictions) at every coverage, most certain first.

    Returns:
        ``coverage`` and ``risk`` arrays (N,), ``aurc`` (mean risk over coverages, lower is
        better), ``error_at_80``/``error_at_90`` (risk at 80% / 90% coverage) and
        ``error_at_100``.
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
            "error_at_80": at(0.8), "error_at_90": at(0.9), "error_at_100": float(risk[-1])}


def choose_threshold(unc: np.ndarray, correct: np.ndarray, target_error: float) -> float:
    """Largest threshold ``t`` whose accepted set ``{unc <= t}`` has error <= ``target_error``.

    Candidate thresholds are the distinct uncertainty values, so images with equal uncertainty
    are always accepted or referred together and the error is that of the whole accepted set.

    Returns ``-1.0`` (refer everything) when no threshold meets the target.
    """
    unc = np.asarray(unc, dtype=np.float64)
    wrong = ~np.asarray(correct, dtype=bool)
    values, inverse = np.unique(unc, return_inverse=True)
    accepted = np.cumsum(np.bincount(inverse, minlength=len(values)))
    errors = np.cumsum(np.bincount(inverse, weights=wrong, minlength=len(values)))
    ok = np.flatnonzero(errors / accepted <= target_error + 1e-12)
    return float(values[ok[-1]]) if ok.size else -1.0


def plot_risk_coverage(curves: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    """Risk-coverage curves of one or more estimators."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, rc in curves.items():
        ax.plot(rc["coverage"], rc["risk"], label=f"{name} (AURC {rc['aurc']:.4f})")
    for cov in (0.8, 0.9):
        ax.axvline(cov, color="grey", ls=":", lw=1)
    ax.set(xlabel="coverage (share of images not referred)", ylabel="error of accepted",
           title=title, xlim=(0, 1), ylim=(0, None))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
