"""A follow-up study z-scored on the earlier study's scale (mrimaster.segmentation.longitudinal)."""

from __future__ import annotations

import numpy as np
import pytest

from mrimaster.segmentation.longitudinal import (
    MIN_NORMAL_VOXELS,
    matched_scale,
    normal_brain,
    own_scale,
)
from mrimaster.segmentation.volumes import brain_of


def _study(tumour_radius: float, gain: float, offset: float, seed: int
           ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A 64^3 'brain' ball of tissue (mean 100, sd 10; x gain + offset) with a bright tumour
    ball (300) of ``tumour_radius`` voxels; background 0."""
    rng = np.random.default_rng(seed)
    r = np.sqrt(((np.indices((64,) * 3) - 32) ** 2).sum(0))
    brain, tumour = r < 28, r < tumour_radius
    flair = np.where(brain, rng.normal(100, 10, r.shape), 0.0)
    flair[tumour] = rng.normal(300, 20, int(tumour.sum()))
    flair = np.where(brain, flair * gain + offset, 0.0).astype(np.float32)
    return {"flair": flair}, tumour


@pytest.mark.parametrize(("gain", "offset"), [(1.0, 0.0), (1.7, 40.0)])
def test_the_later_normal_tissue_lands_where_the_earlier_one_is(gain: float, offset: float
                                                                ) -> None:
    earlier, t0 = _study(8, 1.0, 0.0, 0)
    later, t1 = _study(14, gain, offset, 1)  # grown, and another scanner gain
    scale0 = own_scale(earlier)
    both = brain_of(earlier.values()) & brain_of(later.values())
    n0, n1 = (normal_brain(s, both, t0 | t1) for s in (earlier, later))
    assert np.array_equal(n0, n1) and not (n0 & (t0 | t1)).any()
    matched = matched_scale(later, n1, earlier, n0, scale0)
    assert matched is not None
    far = n1  # normal tissue in both
    m, s = matched["flair"]
    z_later = (later["flair"][far] - m) / s
    z_earlier = (earlier["flair"][far] - scale0["flair"][0]) / scale0["flair"][1]
    assert z_later.mean() == pytest.approx(z_earlier.mean(), abs=0.02)
    assert z_later.std() == pytest.approx(z_earlier.std(), rel=0.02)
    # its own scale would put the grown study's normal tissue lower: what this corrects
    own_m, own_s = own_scale(later)["flair"]
    assert ((later["flair"][far] - own_m) / own_s).mean() < z_earlier.mean() - 0.1


def test_no_matched_scale_without_shared_normal_brain() -> None:
    earlier, t0 = _study(8, 1.0, 0.0, 0)
    later, _ = _study(8, 1.0, 0.0, 1)
    nothing = normal_brain(later, brain_of(earlier.values()), np.ones_like(t0))
    assert not nothing.any()
    assert matched_scale(later, nothing, earlier, nothing, own_scale(earlier)) is None
    n = normal_brain(later, brain_of(earlier.values()), t0)
    assert matched_scale({"t1": later["flair"]}, n, earlier, n, own_scale(earlier)) is None
    assert MIN_NORMAL_VOXELS > 0


def test_a_study_matched_to_itself_keeps_its_own_scale() -> None:
    study, tumour = _study(10, 1.3, 20.0, 0)
    normal = normal_brain(study, brain_of(study.values()), tumour)
    matched = matched_scale(study, normal, study, normal, own_scale(study))
    assert matched is not None
    assert matched["flair"] == pytest.approx(own_scale(study)["flair"], rel=1e-5)
