"""Overlay pictures of a segmentation: three planes through the tumour and an axial mosaic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from mrimaster.imaging.figures import compact_layout, display_window, plane, windowed
from mrimaster.segmentation.labels import regions_to_brats2021
from mrimaster.segmentation.volumes import Volume

# edema green, NCR/NET red, enhancing yellow (index = BraTS 2021 label)
_COLOURS = ListedColormap([(0, 0, 0, 0), (0.9, 0.1, 0.1, 0.6), (0.1, 0.8, 0.2, 0.45),
                           (0, 0, 0, 0), (1.0, 0.9, 0.1, 0.7)])
# whole tumour only (no T1-Gd): one colour, index 1
_WHOLE = ListedColormap([(0, 0, 0, 0), (0.2, 0.6, 1.0, 0.5), (0, 0, 0, 0), (0, 0, 0, 0),
                         (0, 0, 0, 0)])
_LEGEND = "edema green, necrotic/non-enhancing core red, enhancing yellow"
_LEGEND_WHOLE = "whole tumour blue (core and enhancing tumour not assessable without T1-Gd)"


def save_overlays(volume: Volume, regions: np.ndarray, out_dir: Path, title: str,
                  shown: list[str] | None = None, whole_only: bool = False) -> list[Path]:
    """``overlay_planes.png`` (axial, coronal, sagittal through the tumour's centre, one row per
    modality in ``shown``: those the case has and the network used) and ``overlay_mosaic.png``
    (axial slices through the tumour, first shown modality). With ``whole_only`` the whole
    tumour is drawn in one colour. Each modality is shown in one grey-level window
    (:func:`mrimaster.imaging.figures.display_window`) in every panel, outside the brain black."""
    labels = regions[0].astype(np.uint8) if whole_only else regions_to_brats2021(regions)
    cmap, legend = (_WHOLE, _LEGEND_WHOLE) if whole_only else (_COLOURS, _LEGEND)
    rows = [volume.modalities.index(m) for m in (shown or volume.modalities)]
    tumour = np.argwhere(labels > 0)
    centre = tumour.mean(axis=0).round().astype(int) if len(tumour) else \
        (np.array(labels.shape) // 2)
    fig = Figure(figsize=(10, 3.4 * len(rows)))
    axes = fig.subplots(len(rows), 3, squeeze=False)
    windows = {channel: display_window(volume.image[channel]) for channel in rows}
    for row, channel in enumerate(rows):
        img = volume.image[channel]
        for col, (axis, name) in enumerate(((2, "axial"), (1, "coronal"), (0, "sagittal"))):
            ax = axes[row, col]
            ax.imshow(windowed(plane(img, axis, centre[axis]), windows[channel]), cmap="gray",
                      vmin=0, vmax=1)
            ax.imshow(plane(labels, axis, centre[axis]), cmap=cmap, vmin=0, vmax=4,
                      interpolation="nearest")
            ax.set_title(f"{volume.modalities[channel]} {name}", fontsize=9, y=1.0)
            ax.axis("off")
    fig.suptitle(f"{title}: {legend}", fontsize=10)
    compact_layout(fig)
    planes = out_dir / "overlay_planes.png"
    fig.savefig(planes, dpi=90)

    zs = np.unique(tumour[:, 2]) if len(tumour) else np.arange(labels.shape[2])
    picks = np.linspace(zs.min(), zs.max(), num=min(12, len(zs))).round().astype(int)
    fig = Figure(figsize=(15, 5.5))
    axes = fig.subplots(2, 6, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, z in zip(axes.ravel(), picks, strict=False):
        ax.imshow(windowed(plane(volume.image[rows[0]], 2, z), windows[rows[0]]), cmap="gray",
                  vmin=0, vmax=1)
        ax.imshow(plane(labels, 2, z), cmap=cmap, vmin=0, vmax=4, interpolation="nearest")
        ax.set_title(f"axial {z}", fontsize=8, y=1.0)
    fig.suptitle(f"{title}: axial slices through the tumour ({volume.modalities[rows[0]]})")
    compact_layout(fig, hspace=0.1)
    mosaic = out_dir / "overlay_mosaic.png"
    fig.savefig(mosaic, dpi=80)
    return [planes, mosaic]
