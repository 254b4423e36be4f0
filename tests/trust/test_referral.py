"""The trust decision: order of the rules, and what a calibrated model file carries."""

import numpy as np

from mrimaster.trust.referral import TrustRule, decide


def test_decision_order_reject_then_distance_then_uncertainty() -> None:
    rule = TrustRule(threshold=0.3, refer_above=2.0, reject_above=5.0)
    problems = ["image is blank", None, None, None, None]
    dist = np.array([0.5, 6.0, 3.0, 1.0, 1.0])
    unc = np.array([0.0, 0.0, 0.0, 0.5, 0.1])
    status, reason = decide(problems, dist, unc, rule)
    assert status == ["reject", "reject", "refer", "refer", "ok"]
    assert reason[0] == "image is blank"
    assert "6.00 > 5.00" in reason[1] and "3.00 > 2.00" in reason[2]
    assert "uncertain" in reason[3] and reason[4] == ""


def test_a_model_without_rules_accepts_everything() -> None:
    status, _ = decide([None, None], np.array([-np.inf, -np.inf]), np.array([0.9, 0.1]),
                       TrustRule())
    assert status == ["ok", "ok"]
