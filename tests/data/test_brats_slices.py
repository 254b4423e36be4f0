import numpy as np

from mrimaster.data.brats_slices import brain_mask, pick_slices, to_uint8


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
