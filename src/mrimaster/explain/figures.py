"""Pictures of class activation maps: overlays, the layer-by-layer figure, galleries."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from mrimaster.data.transforms import eval_batch
from mrimaster.evaluation.plots import gallery_grid
from mrimaster.explain.cam import GradCAM
from mrimaster.models.checkpoint import Classifier


def _show_overlay(ax: Axes, image: np.ndarray, cam: np.ndarray) -> None:
    ax.imshow(image, cmap="gray", vmin=0, vmax=255)
    peak = cam.max()
    ax.imshow(cam / peak if peak > 0 else cam, cmap="jet", alpha=0.45, vmin=0, vmax=1)
    ax.axis("off")


def save_overlay(image: np.ndarray, cam: np.ndarray, path: Path, title: str) -> None:
    """One slice with its input-size map on top. ``image`` (S, S) uint8, ``cam`` (S, S) >= 0."""
    fig = Figure(figsize=(8, 4.3))
    axes = fig.subplots(1, 2)
    axes[0].imshow(image, cmap="gray", vmin=0, vmax=255)
    axes[0].axis("off")
    axes[0].set_title("input")
    _show_overlay(axes[1], image, cam)
    axes[1].set_title("Grad-CAM overlay")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def save_layer_figure(image: np.ndarray, layers: Sequence[str], maps: Sequence[np.ndarray],
                      upsampled: Sequence[np.ndarray], path: Path, title: str,
                      columns: int = 8) -> None:
    """The seed's layer-by-layer figure: per layer, in forward order, the map at the layer's own
    resolution (upper row) and upsampled onto the image (lower row); wraps every ``columns``."""
    n = len(layers)
    blocks = int(np.ceil(n / columns))
    cols = min(n, columns)
    fig = Figure(figsize=(max(2.2 * cols, 6.5), 4.6 * blocks))
    axes = fig.subplots(2 * blocks, cols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, (name, small, big) in enumerate(zip(layers, maps, upsampled, strict=True)):
        row, col = 2 * (i // columns), i % columns
        axes[row, col].imshow(small, cmap="jet")
        axes[row, col].set_title(f"{name}\n{small.shape[0]}x{small.shape[1]}", fontsize=7)
        _show_overlay(axes[row + 1, col], image, big)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def cam_gallery(clf: Classifier, images: np.ndarray, labels: np.ndarray, probs: np.ndarray,
                path: Path, columns: int = 6) -> None:
    """Grad-CAM (last conv layer, predicted class) over each image, captioned true/predicted."""
    fig, axes = gallery_grid(len(images), columns, "no misclassified images")
    if len(images):
        with GradCAM(clf.net) as cam:
            result = cam(eval_batch(images))
        for ax, img, up, y, p in zip(axes.ravel(), images, result.upsampled, labels, probs,
                                     strict=False):
            _show_overlay(ax, img, up)
            ax.set_title(f"true {clf.classes[y]}\npred {clf.classes[int(p.argmax())]} "
                         f"({p.max():.2f})", fontsize=7)
    fig.suptitle("Misclassified, with Grad-CAM of the predicted class")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
