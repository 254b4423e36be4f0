"""The passes of one segmentation: disagreement between test-time mirrored passes (one extra
left-right pass, or the 8 passes of ``--tta``) or between ensemble members, per case and per
voxel, and the trust figures of the first network's plain and left-right passes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mrimaster.segmentation.ensemble import SegEnsemble, sigmoid
from mrimaster.segmentation.passes import (
    UNCERTAINTY_2_PASSES,
    UNCERTAINTY_8_PASSES,
    mirroring_disagreement,
    predict_raw,
    run_passes,
)


def test_identical_passes_score_0_and_disjoint_score_1() -> None:
    a = np.zeros((6, 6, 6), bool)
    a[1:3, 1:3, 1:3] = True
    same = mirroring_disagreement([a, a.copy()], 0.001, UNCERTAINTY_2_PASSES)
    assert same == {"method": UNCERTAINTY_2_PASSES, "wt_dice_between_passes": 1.0,
                    "wt_volume_change_ml": 0.0, "score": 0.0}
    b = np.zeros_like(a)
    b[4:6, 4:6, 4:5] = True  # no shared voxel, 4 voxels fewer
    apart = mirroring_disagreement([a, b], 0.5, UNCERTAINTY_2_PASSES)
    assert apart["wt_dice_between_passes"] == 0.0 and apart["score"] == 1.0
    assert apart["wt_volume_change_ml"] == 2.0
    # both empty: the passes agree
    empty = np.zeros_like(a)
    assert mirroring_disagreement([empty, empty], 1.0, "x")["score"] == 0.0
    # halves: 2 * 4 / (8 + 8) = 0.5
    c = np.zeros_like(a)
    c[1:3, 1:3, 2:4] = True
    assert mirroring_disagreement([a, c], 1.0, "x")["score"] == 0.5


class Lopsided:
    """A fake network: "tumour" where channel 0 is positive and, on the left half of the
    first spatial axis only, also where channel 1 is: so the mirrored pass disagrees."""

    def __init__(self) -> None:
        self.calls = 0

    def logits(self, image: np.ndarray) -> np.ndarray:
        self.calls += 1
        out = np.full((3, *image.shape[1:]), -5.0, np.float32)
        out[:, image[0] > 0] = 5.0
        half = image.shape[1] // 2
        extra = np.zeros(image.shape[1:], bool)
        extra[:half] = image[1, :half] > 0
        out[:, extra] = 5.0
        return out


def test_one_extra_pass_measures_only() -> None:
    image = np.zeros((2, 8, 8, 8), np.float32)
    image[0, 3:5, 3:5, 3:5] = 1.0  # symmetric about the middle: both passes see it
    image[1, 1:3, 1:3, 1:3] = 1.0  # left only: the mirrored pass misses it
    net = Lopsided()
    passes = run_passes(net, image, 0.001)  # type: ignore[arg-type]
    raw, u = passes.raw, passes.uncertainty
    assert net.calls == 2 and passes.members == 1
    assert np.array_equal(raw, predict_raw(net, image))  # type: ignore[arg-type]
    assert u["method"] == UNCERTAINTY_2_PASSES
    # plain pass 8 + 8 voxels, mirrored pass 8: Dice 2 * 8 / 24
    assert u["wt_dice_between_passes"] == round(16 / 24, 4)
    assert u["score"] == round(1 - 16 / 24, 4)
    assert u["wt_volume_change_ml"] == 0.008
    # per voxel: the passes agree (0 bits) but on the left-only cube (nearly 1 bit)
    assert passes.voxel_map.shape == image.shape[1:]
    assert passes.voxel_map[3, 3, 3] < 1e-3 and passes.voxel_map[1, 1, 1] > 0.9
    assert passes.features["mirror_disagreement"] == round(1 - 16 / 24, 4)


def test_tta_uses_its_8_passes() -> None:
    image = np.zeros((2, 8, 8, 8), np.float32)
    image[0, 3:5, 3:5, 3:5] = 1.0
    net = Lopsided()
    passes = run_passes(net, image, 0.001, tta=True)  # type: ignore[arg-type]
    raw, u = passes.raw, passes.uncertainty
    assert net.calls == 8
    assert np.array_equal(raw, predict_raw(Lopsided(), image, tta=True))  # type: ignore[arg-type]
    assert u["method"] == UNCERTAINTY_8_PASSES and u["score"] == 0.0


class Cube:
    """A fake member: "tumour" in a cube shifted by ``shift`` voxels along the last axis."""

    def __init__(self, shift: int) -> None:
        self.shift, self.calls = shift, 0

    def logits(self, image: np.ndarray, *_: object) -> np.ndarray:
        self.calls += 1
        out = np.full((3, *image.shape[1:]), -6.0, np.float32)
        out[:, 2:6, 2:6, 2 + self.shift:6 + self.shift] = 6.0
        return out


def test_ensemble_averages_its_members_and_measures_their_disagreement() -> None:
    image = np.zeros((1, 8, 8, 10), np.float32)
    members = [Cube(0), Cube(0), Cube(2)]
    ens = SegEnsemble(["flair"], (8, 8, 8), False, members=members)  # type: ignore[list-item]
    passes = run_passes(ens, image, 0.001)
    # each member once, the first once more mirrored left-right (the trust figures)
    assert [m.calls for m in members] == [2, 1, 1] and passes.members == 3
    # the majority's cube: two of three members say tumour there
    assert np.array_equal(passes.raw[0], members[0].logits(image)[0] > 0)
    assert passes.uncertainty["method"] == "fold ensemble disagreement (3 members)"
    # where the third member disagrees: p = 2/3 or 1/3, mutual information about 0.92 bit
    assert passes.voxel_map[3, 3, 4] < 1e-3 and passes.voxel_map[0, 0, 0] < 1e-3  # agreed
    assert 0.85 < passes.voxel_map[3, 3, 7] < 0.95 and 0.85 < passes.voxel_map[3, 3, 2] < 0.95
    # the figures are the first member's two passes: its cube (rows 2-5 of 8) is symmetric
    # under the left-right mirroring, so they agree
    assert passes.features["mirror_disagreement"] == 0.0
    # logits of the mean probability: the ensemble still reads as one model
    assert np.array_equal(ens.logits(image)[0] > 0, passes.raw[0])


def test_fold_folders_in_fold_order_and_only_numbered_ones(tmp_path: Path) -> None:
    from mrimaster.segmentation.ensemble import FOLDS_DIR, fold_folders

    assert fold_folders(tmp_path) == []
    for name in ("fold_10", "fold_2", "fold_0", "fold_3.old", "fold_x", "notes"):
        (tmp_path / FOLDS_DIR / name).mkdir(parents=True)
    (tmp_path / FOLDS_DIR / "fold_1").write_text("a file, not a member")
    assert [p.name for p in fold_folders(tmp_path)] == ["fold_0", "fold_2", "fold_10"]


def test_sigmoid_in_place_only_where_it_may_write() -> None:
    logits = np.array([-200.0, -1.0, 0.0, 2.5, 200.0], np.float32)
    want = (1 / (1 + np.exp(-logits.astype(np.float64)))).astype(np.float32)
    fresh = sigmoid(logits)
    assert fresh is not logits
    np.testing.assert_allclose(fresh, want, atol=1e-6)
    assert logits[1] == -1.0  # untouched without in_place
    same = sigmoid(logits, in_place=True)
    assert same is logits
    np.testing.assert_array_equal(same, fresh)
    frozen = np.array([-1.0, 1.0], np.float32)
    frozen.flags.writeable = False
    assert sigmoid(frozen, in_place=True) is not frozen  # read-only: a fresh array
    wide = np.array([-1.0, 1.0])
    out = sigmoid(wide, in_place=True)
    assert out is not wide and out.dtype == np.float32 and wide[0] == -1.0
