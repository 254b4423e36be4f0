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


def test_uncertainty_estimators_leave_the_weights_untouched() -> None:
    import torch

    from mrimaster.explain.referral import UNCERTAINTY_METHODS, uncertainty
    from mrimaster.models.registry import build_model
    from tests.conftest import synthetic_slice

    net = build_model("efficientnet-lite0", 4, pretrained=False, image_size=64).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    images = np.stack([synthetic_slice(i, 64) for i in range(3)])
    probs = np.full((3, 4), 0.25)
    for method in UNCERTAINTY_METHODS:
        unc = uncertainty(method, net, images, 1.0, probs)
        assert unc.shape == (3,) and ((unc >= 0) & (unc < 1)).all()
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not net.training and not any(m.training for m in net.modules())
