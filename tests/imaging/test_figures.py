"""The grey-level window of the pictures: one per volume, the same in every panel, outside
the brain black."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from mrimaster.imaging.figures import (
    brain_mask_figure,
    display_window,
    registration_figures,
    windowed,
)


def test_window_is_the_1st_to_99th_percentile_of_the_non_zero_voxels() -> None:
    rng = np.random.default_rng(0)
    data = np.zeros((40, 40, 40), np.float32)
    data[5:35, 5:35, 5:35] = rng.normal(100.0, 10.0, (30, 30, 30))
    lo, hi = display_window(data)
    inside = data[data != 0]
    assert lo == pytest.approx(float(np.percentile(inside, 1)), abs=2.0)
    assert hi == pytest.approx(float(np.percentile(inside, 99)), abs=2.0)
    assert display_window(np.zeros((8, 8, 8), np.float32)) == (0.0, 1.0)


def test_one_window_shows_the_same_tissue_alike_in_every_slice() -> None:
    """A slice holding only ordinary tissue is not stretched to white because it lacks the
    bright lesion of another slice (what each panel's own autoscale did)."""
    rng = np.random.default_rng(2)
    data = np.zeros((40, 40, 2), np.float32)
    data[4:36, 4:36, :] = rng.normal(1.0, 0.1, (32, 32, 2))
    data[16:24, 16:24, 0] = 3.0  # a bright lesion in the first slice only
    window = display_window(data)
    first, second = windowed(data[:, :, 0], window), windowed(data[:, :, 1], window)
    tissue = np.zeros((40, 40), bool)
    tissue[4:36, 4:36] = True
    tissue[16:24, 16:24] = False
    assert abs(float(first[tissue].mean()) - float(second[tissue].mean())) < 0.02
    assert float(second[tissue].mean()) < 0.6  # not stretched to fill the grey range
    assert np.all(first[16:24, 16:24] == 1.0)


def test_outside_the_brain_is_black_even_when_zero_is_mid_window() -> None:
    """A z-scored network input has brain values on both sides of 0 and 0 outside."""
    rng = np.random.default_rng(1)
    data = np.zeros((30, 30, 30), np.float32)
    data[5:25, 5:25, 5:25] = rng.normal(0.0, 1.0, (20, 20, 20))
    shown = windowed(data, display_window(data))
    assert shown.dtype == np.float32
    assert shown.min() >= 0.0 and shown.max() <= 1.0
    assert np.all(shown[data == 0] == 0.0)
    assert 0.3 < float(shown[data != 0].mean()) < 0.7


def _head(shape: tuple[int, int, int] = (40, 44, 36)) -> nib.Nifti1Image:
    grid = np.indices(shape)
    r = np.sqrt(((grid - np.array(shape)[:, None, None, None] / 2) ** 2).sum(axis=0))
    rng = np.random.default_rng(3)
    data = np.where(r < 16, 100 + 20 * np.cos(r) + rng.normal(0, 2, shape), 0)
    return nib.Nifti1Image(data.astype(np.float32), np.diag([1.0, 1.0, 2.0, 1.0]))


def test_brain_mask_picture_draws_the_outline_in_magenta(tmp_path: Path) -> None:
    head = _head()
    inside = (np.asarray(head.dataobj) > 0).astype(np.uint8)
    path = brain_mask_figure(head, nib.Nifti1Image(inside, head.affine), tmp_path)
    image = np.asarray(Image.open(path).convert("RGB")).astype(int)
    r, g, b = image[:, :, 0], image[:, :, 1], image[:, :, 2]
    assert path.name == "brain_mask.png"
    assert int(((r > 200) & (b > 200) & (g < 80)).sum()) > 50  # the outline


def test_registration_picture_per_sequence_with_edges_in_yellow(tmp_path: Path) -> None:
    head = _head()
    written = registration_figures({"t1ce": head, "flair": head}, "t1ce", tmp_path)
    assert [p.name for p in written] == ["registration_flair.png"]
    image = np.asarray(Image.open(written[0]).convert("RGB")).astype(int)
    r, g, b = image[:, :, 0], image[:, :, 1], image[:, :, 2]
    assert int(((r > 200) & (g > 200) & (b < 100)).sum()) > 50  # the moving image's edges
