"""Pictures made of image panels in a grid, each with a title, drawn with Pillow.

The pictures of a segmentation (overlays, registration checks, the brain mask) are grids of
slices with coloured layers over them. Drawn with matplotlib they cost about 1.5 s of an 11 s
``seg predict`` on 2 cores (its import, its axes and its PNG writer) for what is array
arithmetic and a line of text per panel. Here a panel is resized to its cell (grey levels
bilinearly, label layers nearest-neighbour: a label is never blended into a colour that is not
one of its own), its layers laid over it by their colour's alpha, and the grid written as one
PNG on a white background.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

Colours = tuple[tuple[float, float, float, float], ...]
"""RGBA in [0, 1] per label value (index 0 is usually fully transparent)."""


@dataclass
class Layer:
    """Labels drawn over a panel.

    Attributes:
        labels: ``(H, W)`` integer label map (or bool), the panel's shape.
        colours: The colour of each label value (:data:`Colours`, at most 255); negative
            values and values past its end are not drawn.
    """

    labels: np.ndarray
    colours: Colours


@dataclass
class Panel:
    """One image of a grid.

    Attributes:
        grey: ``(H, W)`` float grey levels in [0, 1] (rows top to bottom).
        title: The line above the panel.
        layers: Labels drawn over the grey image, in order.
        aspect: Height of a row over width of a column (their voxel sizes' ratio).
    """

    grey: np.ndarray
    title: str
    layers: list[Layer] = field(default_factory=list)
    aspect: float = 1.0


def default_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's default font at ``size`` points (its bitmap font where it has no other)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without a scalable default font
        return ImageFont.load_default()


def _fitted(panel: Panel, cell: int) -> tuple[int, int]:
    """``(width, height)`` in pixels of ``panel`` shown at its aspect inside a square cell."""
    height, width = panel.grey.shape
    shown_h = height * panel.aspect
    scale = cell / max(shown_h, width)
    return max(1, round(width * scale)), max(1, round(shown_h * scale))


def render(panel: Panel, size: tuple[int, int]) -> np.ndarray:
    """``panel`` resized to ``size`` (width, height) with its layers: ``(h, w, 3)`` uint8.

    Raises:
        ValueError: a layer whose shape is not the panel's.
    """
    grey = np.clip(np.nan_to_num(panel.grey), 0.0, 1.0)
    shown = Image.fromarray(np.round(grey * 255).astype(np.uint8)).resize(
        size, Image.Resampling.BILINEAR)
    out = np.repeat(np.asarray(shown, np.float32)[:, :, None], 3, axis=2)
    for layer in panel.layers:
        labels = np.asarray(layer.labels)
        if labels.shape != panel.grey.shape:
            raise ValueError(f"a layer of shape {labels.shape} over a panel of shape "
                             f"{panel.grey.shape}")
        table = np.zeros((256, 4), np.float32)  # 255 and past the colours: transparent
        colours = np.asarray(layer.colours, np.float32).reshape(-1, 4)[:255]
        table[:len(colours)] = colours
        drawn = (labels >= 0) & (labels < len(colours))
        values = np.where(drawn, labels, 255).astype(np.uint8)
        index = np.asarray(Image.fromarray(values).resize(size, Image.Resampling.NEAREST))
        rgba = table[index]
        alpha = rgba[:, :, 3:]
        out = out * (1 - alpha) + rgba[:, :, :3] * 255 * alpha
    return np.round(out).astype(np.uint8)


def save_grid(panels: list[Panel], columns: int, path: Path, title: str, cell: int = 300,
              rows: int | None = None) -> Path:
    """Write ``panels`` row by row, ``columns`` to a row, under ``title``, as a PNG.

    Args:
        panels: The panels in reading order.
        columns: Panels per row.
        path: The PNG to write.
        title: The picture's title (wrapped to its width).
        cell: Side in pixels of each panel's square cell.
        rows: Rows of the grid (default: as many as ``panels`` need); cells past the last
            panel stay empty, panels past the last cell are left out.

    Returns:
        ``path``.

    Raises:
        ValueError: fewer than one column.
    """
    if columns < 1:
        raise ValueError("a grid needs at least one column")
    rows = rows or max(1, -(-len(panels) // columns))
    small, large = default_font(12), default_font(14)
    gap, title_h = 6, 18
    width = columns * cell + (columns + 1) * gap
    lines = textwrap.wrap(title, width=max(20, int(width / 7.5))) or [""]
    top = 8 + 18 * len(lines) + 4
    height = top + rows * (cell + title_h + gap)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for k, line in enumerate(lines):
        draw.text((width / 2, 8 + 18 * k), line, fill="black", font=large, anchor="ma")
    for k, panel in enumerate(panels[:rows * columns]):
        row, col = divmod(k, columns)
        x0 = gap + col * (cell + gap)
        y0 = top + row * (cell + title_h + gap)
        draw.text((x0 + cell / 2, y0 + 2), panel.title, fill="black", font=small, anchor="ma")
        if panel.grey.size == 0:
            continue
        size = _fitted(panel, cell)
        image = Image.fromarray(render(panel, size))
        canvas.paste(image, (x0 + (cell - size[0]) // 2, y0 + title_h + (cell - size[1]) // 2))
    canvas.save(path, optimize=False, compress_level=6)
    return path
