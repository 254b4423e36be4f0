"""Overlay pictures of a segmentation: three planes through the tumour and an axial mosaic
(drawn with Pillow: :mod:`mrimaster.imaging.panels`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mrimaster.imaging.figures import PLANES, display_window, plane, windowed
from mrimaster.imaging.panels import Layer, Panel, save_grid
from mrimaster.segmentation.labels import REGIONS, regions_to_brats2021
from mrimaster.segmentation.volumes import Volume

COLOURS = ((0.0, 0.0, 0.0, 0.0), (0.9, 0.1, 0.1, 0.6), (0.1, 0.8, 0.2, 0.45),
           (0.0, 0.0, 0.0, 0.0), (1.0, 0.9, 0.1, 0.7))
"""Per BraTS 2021 label: necrotic/non-enhancing core red, edema green, enhancing yellow."""
WHOLE_COLOURS = ((0.0, 0.0, 0.0, 0.0), (0.2, 0.6, 1.0, 0.5))
"""Whole tumour only (no T1-Gd): label 1 blue."""
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
    colours, legend = (WHOLE_COLOURS, _LEGEND_WHOLE) if whole_only else (COLOURS, _LEGEND)
    rows = [volume.modalities.index(m) for m in (shown or volume.modalities)]
    tumour = np.argwhere(labels > 0)
    centre = tumour.mean(axis=0).round().astype(int) if len(tumour) else \
        (np.array(labels.shape) // 2)
    windows = {channel: display_window(volume.image[channel]) for channel in rows}
    panels = [Panel(windowed(plane(volume.image[channel], axis, centre[axis]), windows[channel]),
                    f"{volume.modalities[channel]} {name}",
                    [Layer(plane(labels, axis, centre[axis]), colours)])
              for channel in rows for axis, name in PLANES]
    planes = save_grid(panels, 3, out_dir / "overlay_planes.png", f"{title}: {legend}")

    zs = np.unique(tumour[:, 2]) if len(tumour) else np.arange(labels.shape[2])
    picks = np.linspace(zs.min(), zs.max(), num=min(12, len(zs))).round().astype(int)
    first = rows[0]
    slices = [Panel(windowed(plane(volume.image[first], 2, z), windows[first]), f"axial {z}",
                    [Layer(plane(labels, 2, z), colours)]) for z in picks]
    mosaic = save_grid(slices, 6, out_dir / "overlay_mosaic.png",
                       f"{title}: axial slices through the tumour "
                       f"({volume.modalities[first]})", cell=220, rows=2)
    return [planes, mosaic]


def plot_cross_validation(results: dict[str, Any], path: Path) -> None:
    """``cv.png`` of ``mrimaster seg cv``: per-case Dice bars, WT / TC / ET from every
    modality and WT from FLAIR alone."""
    from matplotlib.figure import Figure

    names = list(results["all"]["per_case"])
    fig = Figure(figsize=(max(8, 0.7 * len(names)), 4.5))
    ax = fig.subplots()
    x = np.arange(len(names))
    series = [("all", r) for r in REGIONS] + [("flair", "WT")]
    width = 0.8 / len(series)
    for j, (setting, region) in enumerate(series):
        vals = [results[setting]["per_case"][n].get(region, {}).get("dice", np.nan)
                for n in names]
        ax.bar(x + j * width, vals, width, label=f"{region} ({setting})")
    ax.set_xticks(x + 0.4 - width / 2, [n.split("_")[-2] if n.startswith("brats") else n
                                        for n in names], rotation=45, fontsize=8)
    ax.set(ylabel="Dice", ylim=(0, 1), title="Cross-validation: held-out Dice per case")
    ax.axhline(0.6, color="grey", lw=0.8, ls="--")
    ax.legend(fontsize=8, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
