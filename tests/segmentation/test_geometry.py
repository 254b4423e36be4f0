"""One grid per case, clear errors when not, and resampling to the model's spacing and back."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mrimaster.errors import DataError
from mrimaster.segmentation.cases import find_case
from mrimaster.segmentation.geometry import (
    check_same_grid,
    resample_image,
    resample_labels,
    working_shape,
)
from mrimaster.segmentation.volumes import load_volume, restore_to_input_grid
from tests.segmentation.synthetic import write_case


def _image(affine: np.ndarray, shape: tuple[int, int, int] = (20, 20, 10)) -> nib.Nifti1Image:
    return nib.Nifti1Image(np.zeros(shape, np.float32), affine)


@pytest.mark.parametrize(("change", "says"), [
    (lambda a: a @ np.diag([1.0, 1.0, 1.5, 1.0]), "spacing"),
    (lambda a: a + np.array([[0, 0, 0, 2.5]] + [[0, 0, 0, 0]] * 3), "origin shifted by (2.5"),
    (lambda a: np.diag([-1.0, 1.0, 1.0, 1.0]) @ a, "orientation LAS vs RAS"),
])
def test_modalities_on_different_grids_are_refused_with_what_differs(change, says) -> None:
    ref = np.eye(4)
    with pytest.raises(DataError, match="t1ce is not on the grid of flair") as err:
        check_same_grid([_image(ref), _image(change(ref))], ["flair", "t1ce"], "c")
    assert says in str(err.value)


def test_a_slightly_rotated_series_is_refused() -> None:
    """0.5 degrees moves the far corner of a 240 x 240 x 155 grid by about 2.6 mm."""
    t = np.deg2rad(0.5)
    rot = np.array([[np.cos(t), -np.sin(t), 0, 0], [np.sin(t), np.cos(t), 0, 0], [0, 0, 1, 0],
                    [0, 0, 0, 1]])
    with pytest.raises(DataError, match="direction cosines differ"):
        check_same_grid([_image(np.eye(4), (240, 240, 155)),
                         _image(rot, (240, 240, 155))], ["flair", "t1"], "c")


def test_float_noise_in_affines_is_tolerated() -> None:
    ref = np.eye(4)
    check_same_grid([_image(ref), _image(ref + 1e-5)], ["flair", "t1ce"], "c")


def test_a_case_whose_modalities_differ_in_affine_is_a_clear_error(tmp_path: Path) -> None:
    folder = write_case(tmp_path / "a")
    t1 = nib.load(str(folder / "x_t1.nii.gz"))
    moved = t1.affine.copy()
    moved[:3, 3] += [0, 4, 0]
    nib.save(nib.Nifti1Image(np.asarray(t1.dataobj), moved), str(folder / "x_t1.nii.gz"))
    with pytest.raises(DataError, match="origin shifted by"):
        load_volume(find_case(folder), ["flair", "t1"])
    with pytest.raises(DataError, match="label map is not on the grid"):
        seg = nib.load(str(folder / "x_seg.nii.gz"))
        nib.save(nib.Nifti1Image(np.asarray(seg.dataobj), moved), str(folder / "x_seg.nii.gz"))
        load_volume(find_case(folder), ["flair"])


def test_working_shape_keeps_the_field_of_view() -> None:
    assert working_shape((240, 240, 155), np.ones(3), np.ones(3)) is None
    assert working_shape((240, 240, 155), np.array([1.02, 1, 1]), np.ones(3)) is None
    assert working_shape((267, 267, 52), np.array([0.9, 0.9, 3.0]), np.ones(3)) == \
        (240, 240, 156)


def test_resampling_round_trip() -> None:
    labels = np.zeros((30, 30, 10), np.uint8)
    labels[10:20, 10:20, 3:7] = 4
    up = resample_labels(labels, (30, 30, 30))
    assert set(np.unique(up)) == {0, 4}  # never a blended value
    assert np.array_equal(resample_labels(up, labels.shape), labels)
    smooth = resample_image(labels.astype(np.float32), (30, 30, 30))
    assert ((smooth > 0) & (smooth < 4)).any()  # images are interpolated
    assert smooth.min() >= 0 and smooth.max() <= 4


@pytest.mark.parametrize("zooms", [(1.0, 1.0, 1.0), (0.9, 0.9, 3.0)])
def test_outputs_lie_on_the_input_grid_whatever_its_spacing(tmp_path: Path,
                                                            zooms: tuple[float, ...]) -> None:
    """A coarse grid is resampled to 1 mm and the label map written back on the input grid,
    with the reference labels where nothing was predicted differently (round trip)."""
    affine = np.diag([*zooms, 1.0])
    folder = write_case(tmp_path / "c", "brats2021", affine=affine, shape=(44, 44, 36))
    volume = load_volume(find_case(folder), ["flair", "t1ce"], spacing=(1.0, 1.0, 1.0))
    assert volume.resampled == (zooms != (1.0, 1.0, 1.0))
    assert volume.input_spacing == pytest.approx(zooms)
    assert volume.regions is not None and volume.regions_input is not None
    if volume.resampled:
        assert volume.work_shape == (40, 40, 108)
        assert any("much coarser" in n for n in volume.notes)
    out = restore_to_input_grid(volume.regions[0].astype(np.uint8), volume)
    assert out.shape == (44, 44, 36) and np.allclose(out.affine, affine)
    back = np.asarray(out.dataobj).astype(bool)
    inter = (back & volume.regions_input[0]).sum()
    assert 2 * inter / (back.sum() + volume.regions_input[0].sum()) > 0.95


def test_a_volume_that_is_not_skull_stripped_gets_a_warning(tmp_path: Path) -> None:
    """A foreground of about 3 L (a whole head) is more than any brain; 0.6 L is not."""
    head = write_case(tmp_path / "h", "brats2021", affine=np.diag([5.0, 5.0, 5.0, 1.0]))
    volume = load_volume(find_case(head), ["flair"])
    assert any("does not look skull-stripped" in n for n in volume.notes)
    brain = write_case(tmp_path / "b", "brats2021", affine=np.diag([3.0, 3.0, 3.0, 1.0]))
    assert not any("skull" in n for n in load_volume(find_case(brain), ["flair"]).notes)


def test_a_slab_too_thin_to_hold_a_brain_is_refused(tmp_path: Path) -> None:
    """A 2D picture stacked into 20 slices of 1 mm got a 175 mL 'tumour' before this check."""
    folder = write_case(tmp_path / "slab", "brats2021", shape=(40, 44, 20))
    with pytest.raises(DataError, match="too little along an axis to hold a brain"):
        load_volume(find_case(folder), ["flair"])
