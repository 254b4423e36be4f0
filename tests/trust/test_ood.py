"""Input checks and the feature distance, against hand-computed expectations."""

import numpy as np
import pytest

from mrimaster.data.images import RawStats, raw_stats
from mrimaster.trust.ood import FeatureDistance, input_problem


def _stats(rgb: np.ndarray) -> RawStats:
    return raw_stats(rgb)


def test_input_checks_reject_tiny_blank_and_colour_and_pass_an_mri_like_slice() -> None:
    from tests.conftest import synthetic_slice

    gray = synthetic_slice(0, 128)
    assert input_problem(_stats(np.repeat(gray[..., None], 3, 2))) is None
    assert "too small" in (input_problem(_stats(np.zeros((1, 1, 3), np.uint8))) or "")
    assert "too small" in (input_problem(_stats(np.full((40, 300, 3), 99, np.uint8))) or "")
    assert "blank" in (input_problem(_stats(np.zeros((256, 256, 3), np.uint8))) or "")
    assert "blank" in (input_problem(_stats(np.full((256, 256, 3), 255, np.uint8))) or "")
    colour = np.repeat(gray[..., None], 3, 2).astype(np.int16)
    colour[..., 0] = np.clip(colour[..., 0] + 40, 0, 255)
    assert "colour" in (input_problem(_stats(colour.astype(np.uint8))) or "")


def test_raw_stats_by_hand() -> None:
    rgb = np.zeros((2, 4, 3), np.uint8)
    rgb[0, :, 0] = 40  # R only on the first row: |R-G| = 40 on half the pixels
    s = raw_stats(rgb)
    assert (s.height, s.width) == (2, 4)
    assert s.colourfulness == pytest.approx(20.0)
    assert s.foreground == pytest.approx(0.0)  # mean 13.3 is still background


def test_low_rank_distance_equals_full_mahalanobis_when_nothing_is_dropped() -> None:
    rng = np.random.default_rng(0)
    d = 6
    mix = rng.normal(size=(d, d))
    labels = rng.integers(0, 3, 600)
    centres = rng.normal(scale=4, size=(3, d))
    feats = centres[labels] + rng.normal(size=(600, d)) @ mix
    fd = FeatureDistance.fit(feats, labels, rank=d - 1, shrinkage=0.0)
    # by hand: tied covariance, min over class means (Lee et al. 2018, Eq. 2), per dimension
    means = np.stack([feats[labels == c].mean(0) for c in range(3)])
    resid = feats - means[labels]
    prec = np.linalg.inv(resid.T @ resid / len(feats))
    x = rng.normal(scale=3, size=(10, d))
    want = np.min([np.einsum("nd,de,ne->n", x - m, prec, x - m) for m in means], axis=0) / d
    np.testing.assert_allclose(fd.distance(x), want, rtol=1e-6)


def test_distance_separates_far_points_and_round_trips() -> None:
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(500, 32))
    labels = rng.integers(0, 4, 500)
    fd = FeatureDistance.fit(feats, labels, rank=8)
    near = fd.distance(rng.normal(size=(50, 32)))
    far = fd.distance(rng.normal(loc=5, size=(50, 32)))
    assert np.median(near) == pytest.approx(1.0, abs=0.3)
    assert far.min() > 5 * near.max()
    again = FeatureDistance.from_dict(fd.to_dict())
    np.testing.assert_allclose(again.distance(feats[:5]), fd.distance(feats[:5]))
