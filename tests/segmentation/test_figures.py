"""The segmentation's overlay pictures (drawn with Pillow): each region in its colour where
the mask is, the whole-tumour-only result in one colour, one picture per kind."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from mrimaster.segmentation.figures import save_overlays
from mrimaster.segmentation.volumes import Volume


def _volume() -> tuple[Volume, np.ndarray]:
    shape = (40, 44, 36)
    grid = np.indices(shape)
    r = np.sqrt(((grid - np.array(shape)[:, None, None, None] / 2) ** 2).sum(axis=0))
    brain = r < 16
    rng = np.random.default_rng(0)
    image = np.where(brain, rng.normal(0.0, 1.0, (2, *shape)), 0.0).astype(np.float32)
    regions = np.stack([r < 9, r < 6, (r >= 4) & (r < 6)])  # WT, TC, ET (a rim)
    ref = nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4))
    volume = Volume(image, ["flair", "t1ce"], brain, None, np.ones(3, bool),
                    np.array([[0, s] for s in shape]), shape, ref, 0.001)
    return volume, regions


def _count(image: np.ndarray, hue: str) -> int:
    """Pixels whose colour is clearly ``hue`` (grey pixels have R = G = B)."""
    r, g, b = (image[:, :, k].astype(int) for k in range(3))
    test = {"green": (g > r + 40) & (g > b + 40), "red": (r > g + 60) & (r > b + 60),
            "yellow": (r > b + 80) & (g > b + 80) & (abs(r - g) < 60),
            "blue": (b > r + 60) & (b > g + 20)}[hue]
    return int(test.sum())


@pytest.mark.parametrize("whole_only", [False, True])
def test_overlays_show_each_region_in_its_colour(tmp_path: Path, whole_only: bool) -> None:
    volume, regions = _volume()
    written = save_overlays(volume, regions, tmp_path, "case", whole_only=whole_only)
    assert [p.name for p in written] == ["overlay_planes.png", "overlay_mosaic.png"]
    planes = np.asarray(Image.open(written[0]).convert("RGB"))
    # edema green, core red, enhancing yellow; whole tumour only: blue, nothing else
    if whole_only:
        assert _count(planes, "blue") > 100
        assert _count(planes, "red") == _count(planes, "green") == 0
    else:
        assert min(_count(planes, hue) for hue in ("green", "red", "yellow")) > 100
        assert _count(planes, "blue") == 0
    assert np.asarray(Image.open(written[1])).shape[0] > 2 * 220  # two rows of slices
