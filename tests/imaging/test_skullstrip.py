"""Skull stripping (mrimaster.imaging.skullstrip): the "already stripped" rule on real stripped
BraTS volumes and on heads, and deepbet's brain mask.

The heads below are synthetic, a real BraTS brain inside a dark skull and a bright scalp, so the
brain-mask volume is checked against that brain's own volume, not against a population range;
a real head (pydeface's average T1 head template) is in ``test_unstripped_heads.py``.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from mrimaster.imaging.prepare import working_grid
from mrimaster.imaging.register import from_sitk, to_sitk
from mrimaster.imaging.skullstrip import (
    SkullStripError,
    skull_strip,
    strip_study,
    stripped_decision,
)

CASES = "brats-mini/deepvoxnet2-brats2018"


def make_head(brain_img: nib.Nifti1Image, seed: int = 0, air_noise: bool = True
              ) -> tuple[nib.Nifti1Image, np.ndarray, np.ndarray]:
    """A head around a stripped brain: 6 mm of dark skull, 6 mm of bright scalp (1.4 times the
    brain's median), then air (noisy, or exactly 0). Returns ``(head, brain, scalp)``."""
    data = np.asarray(brain_img.dataobj, np.float32)
    brain = data > 0
    median = float(np.median(data[brain]))
    rng = np.random.default_rng(seed)
    dist = ndimage.distance_transform_edt(~brain)
    out = data.copy()
    skull = (dist > 0) & (dist <= 6)
    scalp = (dist > 6) & (dist <= 12)
    air = dist > 12
    out[skull] = 0.08 * median * (1 + 0.3 * rng.standard_normal(int(skull.sum())))
    out[scalp] = 1.4 * median * (1 + 0.1 * rng.standard_normal(int(scalp.sum())))
    out[air] = np.abs(0.02 * median * rng.standard_normal(int(air.sum()))) if air_noise else 0
    return nib.Nifti1Image(out.astype(np.float32), brain_img.affine), brain, scalp


def _sphere_brain(size: int = 48) -> nib.Nifti1Image:
    grid = np.indices((size,) * 3) - size / 2
    r = np.sqrt((grid ** 2).sum(0))
    rng = np.random.default_rng(1)
    data = np.where(r < size / 4, 100 + 10 * rng.standard_normal(r.shape), 0)
    data = np.where((r >= size / 4 - 2) & (r < size / 4), 60, data)  # darker cortex/CSF rim
    return nib.Nifti1Image(data.astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))


def test_rule_on_synthetic_stripped_and_head() -> None:
    brain = _sphere_brain()
    assert stripped_decision(brain).stripped
    for air_noise in (True, False):
        head, _, _ = make_head(brain, air_noise=air_noise)
        decision = stripped_decision(head)
        assert not decision.stripped, decision
        assert ("background value" if air_noise else "scalp") in decision.reason
    result = skull_strip(brain)
    assert result.method == "already stripped"
    assert result.mask.get_data_dtype() == np.uint8
    assert np.array_equal(np.asarray(result.mask.dataobj) > 0,
                          np.asarray(brain.dataobj) != 0)


def _on_grid(img: nib.Nifti1Image, grid: sitk.Image) -> nib.Nifti1Image:
    return from_sitk(sitk.Resample(to_sitk(img), grid, sitk.Transform(), sitk.sitkLinear, 0.0,
                                   sitk.sitkFloat32))


def test_a_stripped_study_is_masked_by_its_reference_without_the_resampling_rim() -> None:
    own = _sphere_brain()  # 2 mm voxels; the working grid is 1 mm
    shape, affine = working_grid(own, 1.0)
    grid = to_sitk(nib.Nifti1Image(np.zeros(shape, np.uint8), affine), np.uint8)
    moved = np.array(own.affine)
    moved[:3, 3] += (3.0, -2.0, 1.0)  # another sequence, registered: it reaches past the brain
    volumes = {"t1ce": _on_grid(own, grid),
               "flair": _on_grid(nib.Nifti1Image(np.asarray(own.dataobj), moved), grid)}
    brain_ml = np.count_nonzero(np.asarray(own.dataobj)) * 8 / 1000
    linear_ml = np.count_nonzero(np.asarray(volumes["t1ce"].dataobj)) / 1000
    mask, info = strip_study(volumes, "t1ce", "auto", own)
    inside = np.asarray(mask.dataobj) > 0
    assert info["method"] == "already stripped" and mask.get_data_dtype() == np.uint8
    assert info["mask_from"] == "t1ce"
    assert linear_ml > 1.1 * brain_ml  # the linearly resampled reference has a rim ...
    assert abs(inside.sum() / 1000 - brain_ml) < 0.03 * brain_ml  # ... the mask has none
    assert info["volume_ml"] == pytest.approx(inside.sum() / 1000)
    for role, img in volumes.items():  # no sequence keeps anything outside the brain
        data = np.asarray(img.dataobj)
        assert not data[~inside].any(), role
        assert data[inside].any(), role
    fresh = {"t1ce": _on_grid(own, grid)}
    kept = np.asarray(fresh["t1ce"].dataobj).copy()
    never, info = strip_study(fresh, "t1ce", "never", own)  # as given: rim and all
    assert "never" in info["method"]
    assert np.array_equal(np.asarray(never.dataobj) > 0, kept != 0)
    assert np.array_equal(np.asarray(fresh["t1ce"].dataobj), kept)


def test_a_stripped_t1_beside_an_unstripped_reference_bounds_the_brain() -> None:
    """The decision is the T1's; the reference is a whole head, so its non-background is not
    the brain: the T1's is."""
    brain = _sphere_brain()
    head, inside_brain, _ = make_head(brain)
    volumes = {"t1ce": head, "t1": brain}
    mask, info = strip_study(volumes, "t1ce", "auto", head)
    assert info["on"] == "t1" and info["mask_from"] == "t1" and info["already_stripped"]
    assert np.array_equal(np.asarray(mask.dataobj) > 0, inside_brain)
    assert not np.asarray(volumes["t1ce"].dataobj)[~inside_brain].any()  # the scalp is gone


def test_refuses_what_is_not_a_3d_volume() -> None:
    with pytest.raises(SkullStripError, match="3D"):
        stripped_decision(nib.Nifti1Image(np.ones((4, 4), np.float32), np.eye(4)))
    with pytest.raises(SkullStripError, match="empty"):
        stripped_decision(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)))


@pytest.mark.realdata
@pytest.mark.parametrize("path", [f"{CASES}/case_0/FLAIR.nii.gz", f"{CASES}/case_0/T1.nii.gz",
                                  f"{CASES}/case_3/FLAIR.nii.gz",
                                  "brats-mini/deepmedic-brats2015/test/brats_2013_pat0002_1/"
                                  "Flair_subtrMeanDivStd.nii.gz"])
def test_brats_volumes_are_taken_as_stripped_and_keep_all_their_brain(
        data_root: Path, path: str) -> None:
    img = nib.load(data_root / path)
    result = skull_strip(img)
    assert result.decision.stripped, result.decision
    assert result.method == "already stripped"
    # the brain: the case's own brain mask where it has one (BraTS 2015's z-scored volumes have
    # a background of about -3, not 0), else the non-zero voxels
    own = (data_root / path).with_name("brainmask.nii.gz")
    brain = (np.asarray(nib.load(own).dataobj) > 0 if own.exists()
             else np.asarray(img.dataobj) != 0)
    mask = np.asarray(result.mask.dataobj) > 0
    kept = (mask & brain).sum() / brain.sum()
    assert kept >= 0.97
    assert (mask & ~brain).sum() <= 0.03 * brain.sum()
    assert result.mask.shape == img.shape and np.allclose(result.mask.affine, img.affine)


@pytest.mark.realdata
@pytest.mark.slow
def test_deepbet_on_a_stripped_brats_t1_keeps_its_brain(data_root: Path) -> None:
    img = nib.load(data_root / CASES / "case_0" / "T1.nii.gz")
    result = skull_strip(img, force=True)
    assert result.method == "deepbet"
    brain = np.asarray(img.dataobj) != 0
    mask = np.asarray(result.mask.dataobj) > 0
    kept = (mask & brain).sum() / brain.sum()
    print(f"\ndeepbet on stripped BraTS T1: kept {kept:.4f} of the brain, "
          f"{result.volume_ml:.0f} ml, {result.seconds:.1f} s")
    assert kept >= 0.97
    assert result.mask.shape == img.shape and np.allclose(result.mask.affine, img.affine)


@pytest.mark.realdata
@pytest.mark.slow
def test_head_is_not_stripped_and_deepbet_removes_its_scalp(data_root: Path) -> None:
    head, brain, scalp = make_head(nib.load(data_root / CASES / "case_0" / "T1.nii.gz"))
    result = skull_strip(head)
    assert not result.decision.stripped
    assert result.method == "deepbet"
    mask = np.asarray(result.mask.dataobj) > 0
    kept = (mask & brain).sum() / brain.sum()
    brain_ml = brain.sum() / 1000.0
    print(f"\nsynthetic head: mask {result.volume_ml:.0f} ml (its brain {brain_ml:.0f} ml), "
          f"kept {kept:.4f}, scalp in mask {(mask & scalp).sum() / scalp.sum():.4f}, "
          f"{result.seconds:.1f} s")
    assert kept >= 0.97
    assert (mask & scalp).sum() <= 0.01 * scalp.sum()
    assert 0.9 * brain_ml <= result.volume_ml <= 1.1 * brain_ml
    stripped = np.asarray(result.brain.dataobj)
    assert not stripped[scalp].any()
