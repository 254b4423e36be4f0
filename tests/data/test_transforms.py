"""The contrast-reversing augmentation (``shift-contrast``)."""

import pytest
import torch

from mrimaster.data.transforms import RandomTissueContrast, train_transform
from tests.conftest import synthetic_slice


def test_tissue_contrast_keeps_black_black_and_can_reverse_the_order_of_intensities() -> None:
    torch.manual_seed(0)
    x = torch.linspace(0, 1, 201)[None, None]
    reversed_once = False
    for _ in range(50):
        y = RandomTissueContrast(dark=0.1)(x)[0, 0]
        assert y[0] == 0 and y.min() >= 0 and y.max() <= 1
        assert y[:5].max() <= 4 / 200 / 0.1 + 1e-6  # rises no faster than 1 / dark near 0
        reversed_once |= bool(y[100] > y[180] + 0.2)  # mid-grey brighter than near-white
    assert reversed_once


@pytest.mark.parametrize("preset", ["shift", "shift-contrast"])
def test_shift_presets_give_images_in_range(preset: str) -> None:
    torch.manual_seed(1)
    img = torch.from_numpy(synthetic_slice(3, 96))[None]
    t = train_transform(preset, 64)
    for _ in range(20):
        out = t(img)
        assert out.shape == (1, 64, 64) and out.dtype == torch.float32
        assert out.min() >= 0 and out.max() <= 1 + 1e-6
