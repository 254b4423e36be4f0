"""Temperature scaling and calibration metrics.

Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017, Sec. 4.2):
one scalar ``T > 0`` divides the logits, ``q = softmax(z / T)``; ``T`` minimises the negative
log-likelihood on the validation split. It changes confidence, never the predicted class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

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


def plot_reliability(before: dict[str, Any], after: dict[str, Any], temperature: float,
                     path: Path, n_bins: int = N_BINS) -> None:
    """Reliability diagrams before and after temperature scaling, side by side."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    edges = np.linspace(0, 1, n_bins + 1)
    for ax, metrics, title in ((axes[0], before, "before (T = 1)"),
                               (axes[1], after, f"after (T = {temperature:.3f})")):
        for b, info in enumerate(metrics["bins"]):
            if info is None:
                continue
            ax.bar(edges[b], info["accuracy"], width=1 / n_bins, align="edge",
                   color="tab:blue", edgecolor="black", alpha=0.8)
            ax.bar(edges[b], info["confidence"] - info["accuracy"], bottom=info["accuracy"],
                   width=1 / n_bins, align="edge", color="tab:red", alpha=0.3)
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
        ax.bar([], [], color="tab:blue", label="accuracy per bin")
        ax.bar([], [], color="tab:red", alpha=0.3, label="gap to mean confidence")
        ax.legend(loc="upper left", fontsize=8)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy",
               title=f"{title}: ECE {metrics['ece']:.3f}, MCE {metrics['mce']:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
