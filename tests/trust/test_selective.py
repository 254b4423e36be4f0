"""Selection with guaranteed risk (Geifman & El-Yaniv 2017): the binomial bound and the
threshold search."""

from __future__ import annotations

import numpy as np
import pytest

from mrimaster.trust.selective import risk_upper_bound, sgr_threshold


def test_bound_by_hand_and_at_the_edges() -> None:
    # no error in n: the bound solves (1 - b)^n = delta
    assert risk_upper_bound(0, 100, 0.05) == pytest.approx(1 - 0.05 ** (1 / 100), rel=1e-9)
    assert risk_upper_bound(0, 0, 0.05) == 1.0 and risk_upper_bound(7, 7, 0.05) == 1.0
    # it lies above the observed risk, and tightens with more images at the same risk
    assert 0.1 < risk_upper_bound(10, 100, 0.05) < risk_upper_bound(1, 10, 0.05)
    assert risk_upper_bound(100, 1000, 0.05) < risk_upper_bound(10, 100, 0.05)
    with pytest.raises(ValueError):
        risk_upper_bound(3, 2, 0.05)
    with pytest.raises(ValueError):
        risk_upper_bound(1, 2, 0.0)


def test_bound_covers_the_true_risk_as_often_as_promised() -> None:
    rng = np.random.default_rng(0)
    n, p, delta = 200, 0.05, 0.1
    errors = rng.binomial(n, p, size=4000)
    covered = np.mean([risk_upper_bound(int(e), n, delta) >= p for e in errors])
    assert covered >= 1 - delta


def _population(rng: np.random.Generator, m: int) -> tuple[np.ndarray, np.ndarray]:
    correct = rng.random(m) > 0.15
    unc = np.where(correct, rng.uniform(0, 0.7, m), rng.uniform(0.3, 1, m))
    return unc, correct


def test_threshold_meets_its_bound_and_the_guarantee_holds_on_new_draws() -> None:
    rng = np.random.default_rng(1)
    unc, correct = _population(rng, 2000)
    g = sgr_threshold(unc, correct, target_risk=0.05, delta=0.05)
    accepted = unc <= g.threshold
    assert g.bound < 0.05 and g.tried == 11
    assert g.coverage == pytest.approx(accepted.mean())
    assert g.risk == pytest.approx((~correct[accepted]).mean()) and g.risk <= g.bound
    assert 0.3 < g.coverage < 1
    # a looser target accepts more; on fresh draws the accepted risk stays under the bound
    assert sgr_threshold(unc, correct, 0.10).coverage > g.coverage
    fresh = [_population(np.random.default_rng(s), 2000) for s in range(100, 140)]
    risks = [(~c[u <= g.threshold]).mean() for u, c in fresh]
    assert np.mean(np.asarray(risks) <= g.bound) >= 0.95


def test_nothing_meets_an_impossible_target_and_ties_move_together() -> None:
    unc = np.array([0.1, 0.1, 0.2, 0.3])
    correct = np.array([True, False, True, True])
    g = sgr_threshold(unc, correct, target_risk=0.2)
    assert g.threshold == -1.0 and g.coverage == 0.0 and g.bound == 1.0
    many = np.repeat([0.1, 0.5], 500)
    ok = np.r_[np.ones(500, bool), np.zeros(500, bool)]
    tie = sgr_threshold(many, ok, target_risk=0.02)
    assert tie.threshold == 0.1 and tie.coverage == 0.5 and tie.risk == 0.0
    with pytest.raises(ValueError):
        sgr_threshold(np.zeros(0), np.zeros(0, bool), 0.05)
