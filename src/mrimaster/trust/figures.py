"""Figures of the trust layer: reliability diagrams and risk-coverage curves.

Drawn on :class:`matplotlib.figure.Figure` objects (no pyplot, no global backend switch), so
importing or calling them never changes a notebook's plotting state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from mrimaster.trust.calibration import N_BINS


def plot_reliability(before: dict[str, Any], after: dict[str, Any], temperature: float,
                     path: Path, n_bins: int = N_BINS) -> None:
    """Reliability diagrams before and after temperature scaling, side by side."""
    fig = Figure(figsize=(10, 4.6))
    axes = fig.subplots(1, 2)
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


def plot_risk_coverage(curves: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    """Risk-coverage curves of one or more estimators."""
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
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
