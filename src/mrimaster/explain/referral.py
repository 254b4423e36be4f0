"""Uncertainty beyond the softmax, selective prediction and referral to a radiologist.

Three estimators, chosen per model by measurement on the validation split (lowest AURC):

- ``softmax``: 1 - max calibrated probability (the baseline).
- ``tta``: test-time augmentation, 1 - max of the mean calibrated probability over the
  image, its mirror and two zoomed crops (Ayhan & Berens, MIDL 2018).
- ``mc-dropout``: Monte-Carlo dropout, 1 - max of the mean probability over passes with dropout
  and stochastic depth left on (Gal & Ghahramani, ICML 2016).

The predicted class always comes from the single calibrated pass; the estimator only ranks how
far to trust it. The referral threshold is the largest uncertainty at which the validation error
of the accepted predictions stays within the target (selective classification, Geifman &
El-Yaniv, NeurIPS 2017); the risk-coverage curve and its area (AURC) summarise the ranking.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from mrimaster.errors import MRIMasterError  # noqa: E402
from mrimaster.inference.predict import (  # noqa: E402
    predict_logits,
    predict_logits_stochastic,
    softmax,
)


def _tta_views(images: np.ndarray) -> list[np.ndarray]:
    """The image, its left-right mirror, and 90% / 80% central crops resized back."""
    from PIL import Image

    size = images.shape[-1]
    views = [images, images[:, :, ::-1]]
    for frac in (0.9, 0.8):
        lo = int(round(size * (1 - frac) / 2))
        hi = size - lo
        views.append(np.stack([np.asarray(Image.fromarray(im[lo:hi, lo:hi]).resize(
            (size, size), Image.Resampling.BILINEAR)) for im in images]))
    return [np.ascontiguousarray(v) for v in views]


def _tta_probs(net: nn.Module, images: np.ndarray, temperature: float) -> np.ndarray:
    return np.mean([softmax(predict_logits(net, v), temperature) for v in _tta_views(images)],
                   axis=0)


def _mc_dropout_probs(net: nn.Module, images: np.ndarray, temperature: float,
                      passes: int = 8) -> np.ndarray:
    """Mean probability over ``passes`` with dropout and stochastic depth switched on.

    Only those modules' own ``training`` flags are set (not their children's), so batch-norm
    layers stay in eval mode and their running statistics are never touched.
    """
    stochastic = [m for m in net.modules() if isinstance(m, nn.Dropout)
                  or getattr(m, "drop_rate", 0) > 0]
    if not stochastic:
        raise MRIMasterError("this model has no dropout layers for MC dropout")
    net.eval()
    torch.manual_seed(0)
    try:
        for m in stochastic:
            m.training = True
        runs = [softmax(predict_logits_stochastic(net, images), temperature)
                for _ in range(passes)]
    finally:
        net.eval()
    return np.mean(runs, axis=0)


ProbsFn = Callable[[nn.Module, np.ndarray, float], np.ndarray]
UNCERTAINTY_METHODS: dict[str, ProbsFn | None] = {
    "softmax": None, "tta": _tta_probs, "mc-dropout": _mc_dropout_probs}


def uncertainty(method: str, net: nn.Module, images: np.ndarray, temperature: float,
                single_pass_probs: np.ndarray) -> np.ndarray:
    """``(N,)`` uncertainty in [0, 1): 1 - max probability under ``method``."""
    if method not in UNCERTAINTY_METHODS:
        raise MRIMasterError(f"unknown uncertainty method {method!r}",
                             f"choose one of: {', '.join(UNCERTAINTY_METHODS)}")
    fn = UNCERTAINTY_METHODS[method]
    probs = single_pass_probs if fn is None else fn(net, images, temperature)
    return 1.0 - probs.max(axis=1)


def risk_coverage(unc: np.ndarray, correct: np.ndarray) -> dict[str, Any]:
    """Risk (error rate of accepted predictions) at every coverage, most certain first.

    Returns:
        ``coverage`` and ``risk`` arrays (N,), ``aurc`` (mean risk over coverages, lower is
        better), ``error_at_80``/``error_at_90`` (risk at 80% / 90% coverage) and
        ``error_at_100``.
    """
    order = np.argsort(unc, kind="stable")
    errors = ~np.asarray(correct)[order]
    n = len(errors)
    accepted = np.arange(1, n + 1)
    risk = np.cumsum(errors) / accepted
    coverage = accepted / n

    def at(cov: float) -> float:
        return float(risk[max(int(np.ceil(cov * n)) - 1, 0)])

    return {"coverage": coverage, "risk": risk, "aurc": float(risk.mean()),
            "error_at_80": at(0.8), "error_at_90": at(0.9), "error_at_100": float(risk[-1])}


def choose_threshold(unc: np.ndarray, correct: np.ndarray, target_error: float) -> float:
    """Largest uncertainty threshold whose accepted set (``unc <= t``) has error <= target.

    Returns ``-1.0`` (refer everything) when even the most certain prediction is wrong.
    """
    order = np.argsort(unc, kind="stable")
    sorted_unc = unc[order]
    risk = np.cumsum(~np.asarray(correct)[order]) / np.arange(1, len(order) + 1)
    ok = np.flatnonzero(risk <= target_error)
    if ok.size == 0:
        return -1.0
    last = ok[-1]
    # ties: only accept up to a value whose whole tie group fits
    while last >= 0 and last + 1 < len(order) and sorted_unc[last + 1] == sorted_unc[last]:
        last -= 1
    return float(sorted_unc[last]) if last >= 0 else -1.0


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
