import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mrimaster.errors import DataError
from mrimaster.segmentation.cases import find_case
from mrimaster.segmentation.volumes import load_volume, restore_to_input_grid
from tests.segmentation.synthetic import write_case

# an oblique-free but non-RAS grid: axes permuted and flipped, 1.2 mm voxels, shifted origin
LPS_PERMUTED = np.array([[0, -1.2, 0, 30], [-1.2, 0, 0, 20], [0, 0, 1.2, -10], [0, 0, 0, 1]])


@pytest.mark.parametrize("affine", [np.eye(4), LPS_PERMUTED])
def test_mask_written_back_has_input_shape_affine_and_content(tmp_path: Path,
                                                              affine: np.ndarray) -> None:
    folder = write_case(tmp_path / "c", "brats2021", affine=affine)
    volume = load_volume(find_case(folder), ["flair", "t1ce"])
    assert volume.regions is not None
    # put the reference regions back: they must land exactly on the input label map
    from mrimaster.segmentation.labels import regions_to_brats2021

    restored = restore_to_input_grid(regions_to_brats2021(volume.regions), volume)
    original = nib.load(str(folder / "x_seg.nii.gz"))
    assert restored.shape == original.shape
    assert np.allclose(restored.affine, original.affine)
    assert np.array_equal(np.asarray(restored.dataobj), np.asarray(original.dataobj))


def test_preprocessing_is_zscored_inside_the_brain(tmp_path: Path) -> None:
    volume = load_volume(find_case(write_case(tmp_path / "c")), ["flair", "t2"])
    for c in range(2):
        inside = volume.image[c][volume.brain]
        assert abs(inside.mean()) < 1e-3 and abs(inside.std() - 1) < 1e-3
        assert (volume.image[c][~volume.brain] == 0).all()
    assert volume.voxel_ml == pytest.approx(0.001)


def test_corrupt_truncated_and_invalid_volumes(tmp_path: Path) -> None:
    folder = write_case(tmp_path / "c")
    flair = folder / "x_flair.nii.gz"
    data = flair.read_bytes()
    flair.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="corrupt or truncated"):
        load_volume(find_case(folder), ["flair"])
    flair.write_bytes(b"garbage")
    with pytest.raises(DataError, match="corrupt or truncated"):
        load_volume(find_case(folder), ["flair"])


def test_different_shapes_2d_and_nans(tmp_path: Path) -> None:
    folder = write_case(tmp_path / "a")
    nib.save(nib.Nifti1Image(np.ones((10, 10, 10), np.float32), np.eye(4)),
             str(folder / "x_t2.nii.gz"))
    with pytest.raises(DataError, match=r"t2 is not on the grid of flair \(shape"):
        load_volume(find_case(folder), ["flair", "t2"])
    nib.save(nib.Nifti1Image(np.ones((40, 44), np.float32), np.eye(4)),
             str(folder / "x_t2.nii.gz"))
    with pytest.raises(DataError, match="3D volume is needed"):
        load_volume(find_case(folder), ["t2"])
    images = np.asarray(nib.load(str(folder / "x_t1.nii.gz")).dataobj).copy()
    images[5, 5, 5] = np.nan
    nib.save(nib.Nifti1Image(images, np.eye(4)), str(folder / "x_t1.nii.gz"))
    with pytest.raises(DataError, match="NaN"):
        load_volume(find_case(folder), ["t1"])
    with pytest.raises(DataError, match="has no t1ce"):
        load_volume(find_case(write_case(tmp_path / "b", "wt")), ["flair", "t1ce"])
    truncated = folder / "x_t1.nii.gz"
    truncated.write_bytes(gzip.compress(b"\0" * 400)[:60])  # a cut-off gzip stream
    with pytest.raises(DataError, match="corrupt or truncated"):
        load_volume(find_case(folder), ["t1"])
