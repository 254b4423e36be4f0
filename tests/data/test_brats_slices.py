from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mrimaster.data.brats_slices import brain_mask, pick_slices, to_uint8
from mrimaster.errors import DataError


def test_pick_slices_keeps_tumour_slices_and_a_margin_around_them() -> None:
    brain = np.zeros((40, 40, 60), bool)
    brain[5:35, 5:35, 5:55] = True
    tumour = np.zeros_like(brain)
    tumour[10:25, 10:25, 30:40] = True  # 225 voxels per slice
    t_z, f_z = pick_slices(tumour, brain, per_case=4, margin=3)
    assert len(t_z) == 4 and all(30 <= z < 40 for z in t_z)
    assert len(f_z) == 2 and all(z < 27 or z > 42 for z in f_z)
    assert all(brain[:, :, z].sum() >= 0.5 * brain.sum((0, 1)).max() for z in f_z)


def test_windowing_keeps_background_black_for_raw_and_z_scored_volumes() -> None:
    rng = np.random.default_rng(0)
    for background in (0.0, -1.7):  # raw, and z-scored with a constant background
        vol = np.full((20, 20, 20), background, np.float32)
        vol[5:15, 5:15, 5:15] = rng.normal(3, 1, (10, 10, 10))
        out = to_uint8(vol)
        assert out.dtype == np.uint8
        assert (out[~brain_mask(vol)] == 0).all() and (out[brain_mask(vol)] >= 1).all()
        assert out.max() == 255


def test_written_slices_read_back_as_a_class_folder_dataset(tmp_path: Path) -> None:
    from mrimaster.data.brats_slices import cut_brats_slices, write_brats_slices
    from mrimaster.data.folders import load_class_folders
    from tests.segmentation.synthetic import write_case

    for seed, layout in enumerate(("brats2021", "wt")):
        write_case(tmp_path / "cases" / f"case_{seed}", layout=layout, seed=seed)
    cut = list(cut_brats_slices(tmp_path / "cases", per_case=4))
    n = write_brats_slices(tmp_path / "cases", tmp_path / "png", per_case=4)
    assert n == len(cut) and {lab for lab, _, _ in cut} >= {"glioma"}
    data = load_class_folders(tmp_path / "png", 64, progress=False)
    assert not data.skipped
    assert sorted(data.labels) == sorted(lab for lab, _, _ in cut)  # type: ignore[type-var]
    first = next(p for p in data.paths if p.name.startswith("case_0_flair_"))
    z = int(first.stem.rsplit("_", 1)[1])
    stored = np.asarray(Image.open(first))
    assert any(src == f"case_0/flair/{z}" and np.array_equal(img, stored) for _, src, img in cut)


def test_writing_slices_of_a_folder_without_labelled_cases_is_a_clear_error(
        tmp_path: Path) -> None:
    from mrimaster.data.brats_slices import write_brats_slices
    from tests.segmentation.synthetic import write_case

    write_case(tmp_path / "cases" / "case_0", labelled=False)
    with pytest.raises(DataError, match="no labelled BraTS case"):
        write_brats_slices(tmp_path / "cases", tmp_path / "png")
