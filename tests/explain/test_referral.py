import numpy as np
import pytest

from mrimaster.explain.referral import choose_threshold, risk_coverage


def test_risk_coverage_by_hand() -> None:
    unc = np.array([0.1, 0.4, 0.2, 0.3])
    correct = np.array([True, False, True, False])
    rc = risk_coverage(unc, correct)
    # order by uncertainty: T, T, F(0.3), F(0.4) -> risks 0, 0, 1/3, 1/2
    np.testing.assert_allclose(rc["risk"], [0, 0, 1 / 3, 1 / 2])
    assert rc["aurc"] == pytest.approx((0 + 0 + 1 / 3 + 1 / 2) / 4)
    assert rc["error_at_100"] == pytest.approx(0.5)


def test_good_ranking_halves_the_error_at_90_percent_coverage() -> None:
    rng = np.random.default_rng(0)
    correct = rng.random(1000) > 0.08
    unc = np.where(correct, rng.uniform(0, 0.6, 1000), rng.uniform(0.3, 1, 1000))
    rc = risk_coverage(unc, correct)
    assert rc["error_at_90"] <= rc["error_at_100"] / 2


def test_threshold_meets_the_target_error() -> None:
    rng = np.random.default_rng(2)
    correct = rng.random(500) > 0.1
    unc = np.where(correct, rng.uniform(0, 0.7, 500), rng.uniform(0.2, 1, 500))
    t = choose_threshold(unc, correct, 0.03)
    accepted = unc <= t
    assert 0.3 < accepted.mean() < 1
    assert (~correct[accepted]).mean() <= 0.03
    assert choose_threshold(np.array([0.1]), np.array([False]), 0.03) == -1.0
