"""Temperature scaling and calibration metrics.

Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017, Sec. 4.2):
one scalar ``T > 0`` divides the logits, ``q = softmax(z / T)``; ``T`` minimises the negative
log-likelihood on the validation split. It changes confidence, never the predicted class.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

N_BINS = 15


def fit_temperature(logits: np.ndarray, labels: np.ndarray, max_iter: int = 200) -> float:
    """The ``T`` minimising NLL of ``softmax(logits / T)`` (optimised over ``log T``, L-BFGS).

    Args:
        logits: ``(N, C)`` float.
        labels: ``(N,)`` int.

    Returns:
        ``T`` in ``[0.05, 20]``.
    """
    z = torch.as_tensor(logits, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.long)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    return float(np.clip(log_t.exp().item(), 0.05, 20.0))


def _bins(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin index of each confidence in equal-width bins ``(i/n, (i+1)/n]``."""
    return np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)


def calibration_metrics(probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS
                        ) -> dict[str, Any]:
    """ECE and MCE (``n_bins`` equal-width bins of top-1 confidence), NLL, Brier score, and the
    number of wrong predictions made with confidence above 0.95.

    Args:
        probs: ``(N, C)`` probabilities.
        labels: ``(N,)`` int.
    """
    labels = np.asarray(labels)
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    bins = _bins(conf, n_bins)
    ece, mce = 0.0, 0.0
    per_bin: list[dict[str, float] | None] = []
    for b in range(n_bins):
        mask = bins == b
        if not mask.any():
            per_bin.append(None)
            continue
        gap = abs(correct[mask].mean() - conf[mask].mean())
        ece += mask.mean() * gap
        mce = max(mce, gap)
        per_bin.append({"count": int(mask.sum()), "accuracy": float(correct[mask].mean()),
                        "confidence": float(conf[mask].mean())})
    onehot = np.eye(probs.shape[1])[labels]
    return {
        "ece": float(ece), "mce": float(mce),
        "nll": float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1)).mean()),
        "brier": float(((probs - onehot) ** 2).sum(axis=1).mean()),
        "wrong_over_0.95": int(((conf > 0.95) & ~correct).sum()),
        "accuracy": float(correct.mean()), "bins": per_bin,
    }
