"""N4 bias correction (:mod:`mrimaster.imaging.bias`) on a synthetic head: a known smooth
field removed, a tumour-sized bright lesion kept, the grid untouched, normalised volumes left
alone."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from mrimaster.imaging.bias import correct_bias
from mrimaster.imaging.scanner_grid import bias_field

SHAPE = (96, 112, 48)


def _oblique_affine() -> np.ndarray:
    """2 x 2 x 3.5 mm voxels, tilted 7 degrees about x, off-centre."""
    a = np.radians(7.0)
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([2.0, 2.0, 3.5])
    affine[:3, 3] = [-95.0, -110.0, -60.0]
    return affine


def _head(lesion: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An ellipsoidal "brain" of two tissues (an inner core at 600, the rest at 1000) in air
    (0), optionally a bright lesion (1800) of about 40 mL. Returns (image, outer tissue mask,
    lesion mask)."""
    idx = np.indices(SHAPE, dtype=np.float32)
    centre = (np.asarray(SHAPE, np.float32) - 1) / 2
    r = np.sqrt(sum(((idx[k] - centre[k]) / (0.42 * SHAPE[k])) ** 2 for k in range(3)))
    brain, core = r < 1.0, r < 0.45
    image = np.where(brain, 1000.0, 0.0).astype(np.float32)
    image[core] = 600.0
    spot = np.zeros(SHAPE, bool)
    if lesion:
        d = np.sqrt(((idx[0] - 62) * 2) ** 2 + ((idx[1] - 60) * 2) ** 2
                    + ((idx[2] - 24) * 3.5) ** 2)
        spot = (d < 21.0) & brain
        image[spot] = 1800.0
    rng = np.random.default_rng(0)
    image[brain] += rng.normal(0, 20, int(brain.sum())).astype(np.float32)
    return image, brain & ~core & ~spot, spot


def _spread(values: np.ndarray) -> float:
    """Ratio of the 95th to the 5th percentile: 1.0 for a flat tissue."""
    low, high = np.percentile(values, [5, 95])
    return float(high / low)


def test_a_known_smooth_field_is_removed() -> None:
    image, tissue, _ = _head(lesion=False)
    affine = _oblique_affine()
    field = bias_field(affine, SHAPE, 0.4, seed=4)  # exp(p), p spanning [-0.4, 0.4]
    corrected, info = correct_bias(nib.Nifti1Image(image * field, affine))
    before = _spread((image * field)[tissue])
    after = _spread(np.asarray(corrected.dataobj)[tissue])
    flat = _spread(image[tissue])  # the noise alone: 1.07
    assert before > flat + 0.2, (before, flat)
    assert after < flat + 0.03, (before, after, flat)
    assert info["method"].startswith("N4")
    low, high = info["field_range"]
    assert high / low > 1.25  # the report shows the field it found
    # the grid is the input's
    assert corrected.shape == SHAPE
    assert np.allclose(corrected.affine, affine, atol=1e-4)
    assert corrected.get_data_dtype() == np.float32


def test_a_tumour_sized_lesion_is_not_flattened() -> None:
    """The coarse field's reason: a finer one bends inside a lesion's extent. Without any
    bias, the lesion's contrast to the tissue around it stays within 5 %."""
    image, tissue, spot = _head(lesion=True)
    corrected = np.asarray(correct_bias(nib.Nifti1Image(image, _oblique_affine()))[0].dataobj)
    contrast_before = np.median(image[spot]) / np.median(image[tissue])
    contrast_after = np.median(corrected[spot]) / np.median(corrected[tissue])
    assert contrast_after == pytest.approx(contrast_before, rel=0.05)


@pytest.mark.parametrize("data, reason", [
    (np.full(SHAPE, -0.5, np.float32), "negative intensities"),
    (np.zeros(SHAPE, np.float32), "too few voxels"),
])
def test_volumes_it_cannot_correct_are_left_alone(data: np.ndarray, reason: str) -> None:
    if reason.startswith("negative"):
        data[20:70, 20:90, 10:40] = np.linspace(-1, 3, 50)[:, None, None]
    image = nib.Nifti1Image(data, _oblique_affine())
    out, info = correct_bias(image)
    assert out is image
    assert info["method"] == "none" and reason in info["reason"]


def test_a_stripped_volume_keeps_its_background_value_exactly() -> None:
    """An int16 file with ``scl_inter`` reads back with a tiny non-zero background; divided by
    the field it varied, the volume no longer looked stripped and deepbet stripped it again
    (a real case's whole tumour read 79.8 instead of 78.2 mL)."""
    image, _, _ = _head(lesion=True)
    field = bias_field(_oblique_affine(), SHAPE, 0.3, seed=2)
    floor = np.float32(1.49e-6)
    biased = np.where(image > 0, image * field, floor).astype(np.float32)
    corrected, info = correct_bias(nib.Nifti1Image(biased, _oblique_affine()))
    out = np.asarray(corrected.dataobj)
    assert info["method"].startswith("N4")
    assert (out[biased == floor] == floor).all()
    assert out[image > 0].min() > floor  # the head itself is corrected, not clamped
