"""The grey-level window of the pictures: one per volume, the same in every panel, outside
the brain black."""

from __future__ import annotations

import numpy as np
import pytest

from mrimaster.imaging.figures import display_window, windowed


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
