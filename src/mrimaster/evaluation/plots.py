"""Figures people look at: training curves, confusion matrix, misclassified gallery."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure


def plot_curves(history: Sequence[dict[str, Any]], path: Path) -> None:
    """Loss and accuracy per epoch, training and validation, side by side."""
    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(10, 4))
    (ax_loss, ax_acc) = fig.subplots(1, 2)
    ax_loss.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], "o-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="Loss")
    ax_acc.plot(epochs, [r["train_accuracy"] for r in history], "o-", label="train accuracy")
    ax_acc.plot(epochs, [r["val_accuracy"] for r in history], "o-", label="val accuracy")
    ax_acc.plot(epochs, [r["val_macro_f1"] for r in history], "s--", label="val macro F1")
    ax_acc.set(xlabel="epoch", ylabel="score", title="Accuracy", ylim=(0, 1.02))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_confusion(cm: np.ndarray, labels: Sequence[str], path: Path, title: str) -> None:
    """Counts and row-normalised colours; rows are true classes."""
    cm = np.asarray(cm)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig = Figure(figsize=(5.5, 5))
    ax = fig.subplots()
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{cm[i, j]}\n{norm[i, j]:.0%}", ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black", fontsize=9)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def gallery_grid(n: int, columns: int, empty_note: str) -> tuple[Any, np.ndarray]:
    """A figure with room for ``n`` captioned tiles, axes off; a note when ``n`` is 0."""
    rows = max(1, int(np.ceil(n / columns)))
    cols = columns if n >= columns else max(n, 1)
    fig = Figure(figsize=(2.4 * cols, 2.7 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    if n == 0:
        axes[0, 0].text(0.5, 0.5, empty_note, ha="center", va="center")
    return fig, axes


def plot_gallery(images: Sequence[np.ndarray], captions: Sequence[str], path: Path,
                 title: str, columns: int = 6) -> None:
    """A grid of grayscale slices with a caption under each (an empty note when none)."""
    fig, axes = gallery_grid(len(images), columns, "nothing to show")
    for ax, img, cap in zip(axes.ravel(), images, captions, strict=False):
        ax.imshow(img, cmap="gray", vmin=0, vmax=255)
        ax.set_title(cap, fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
