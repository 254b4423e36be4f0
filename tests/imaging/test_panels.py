"""Pictures drawn with Pillow: a grid of titled panels with label layers over grey levels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mrimaster.imaging.panels import Layer, Panel, render, save_grid

RED = ((0.0, 0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 1.0), (0.0, 0.0, 1.0, 0.5))


def test_layers_blend_by_alpha_and_labels_stay_their_own_colours() -> None:
    grey = np.full((20, 20), 0.5, np.float32)
    labels = np.zeros((20, 20), np.uint8)
    labels[:, :10] = 1  # opaque red on the left
    labels[:, 10:] = 2  # half-transparent blue on the right
    out = render(Panel(grey, "t", [Layer(labels, RED)]), (60, 60))
    assert out.shape == (60, 60, 3) and out.dtype == np.uint8
    assert np.all(out[:, :29] == [255, 0, 0])
    assert np.all(out[:, 31:] == [64, 64, 192])  # 0.5 * 128 + 0.5 * (0, 0, 255)
    # nearest-neighbour labels: no column holds a colour between the two
    colours = {tuple(c) for c in out.reshape(-1, 3)}
    assert colours == {(255, 0, 0), (64, 64, 192)}


def test_no_layer_is_the_grey_image_and_unknown_labels_are_not_drawn() -> None:
    grey = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    plain = render(Panel(grey, "t"), (4, 4))
    assert np.array_equal(plain[:, :, 0], np.round(grey * 255).astype(np.uint8))
    assert np.array_equal(plain[:, :, 0], plain[:, :, 2])
    labels = np.full((4, 4), 7, np.int16)  # past the colour table: transparent
    assert np.array_equal(render(Panel(grey, "t", [Layer(labels, RED)]), (4, 4)), plain)


def test_grid_is_written_as_a_png_with_every_panel_at_its_aspect(tmp_path: Path) -> None:
    panels = [Panel(np.full((30, 40), v, np.float32), f"panel {k}", aspect=2.0)
              for k, v in enumerate((0.0, 0.5, 0.0))]
    path = save_grid(panels, 2, tmp_path / "grid.png", "a title " * 30, cell=100)
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape[1] == 2 * 100 + 3 * 6
    # rows twice as tall as columns are wide: 30 x 40 voxels shown 60 x 40, fitted into
    # the 100 x 100 cell -> 100 tall, 67 wide
    rows, cols = np.nonzero(np.all(image == 128, axis=2))
    assert rows.max() - rows.min() + 1 == 100 and cols.max() - cols.min() + 1 == 67
    black = np.all(image == 0, axis=2)
    assert black.sum() >= 2 * 100 * 67  # the two black panels, the second on a second row
    assert image.shape[0] > 2 * 100


def test_negative_labels_are_not_drawn_and_a_misshapen_layer_is_refused() -> None:
    grey = np.full((4, 4), 0.5, np.float32)
    plain = render(Panel(grey, "t"), (4, 4))
    negative = np.full((4, 4), -1, np.int16)
    opaque = ((1.0, 0.0, 0.0, 1.0),)  # even a colour for 0 is not given to -1
    assert np.array_equal(render(Panel(grey, "t", [Layer(negative, opaque)]), (4, 4)), plain)
    with pytest.raises(ValueError, match="shape"):
        render(Panel(grey, "t", [Layer(np.zeros((3, 4), np.uint8), RED)]), (4, 4))
