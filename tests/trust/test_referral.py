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


def test_assess_rejects_what_a_broken_model_outputs_and_skips_checks_it_cannot_run() -> None:
    import torch
    from torch import nn

    from mrimaster.data.images import raw_stats
    from mrimaster.inference.forward import TorchRuntime
    from mrimaster.trust.referral import BROKEN, assess
    from tests.conftest import synthetic_slice

    class Net(nn.Module):
        def __init__(self, value: float) -> None:
            super().__init__()
            self.value = value
            self.fc = nn.Linear(3, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.mean((2, 3)) * self.value)

    images = np.stack([synthetic_slice(i, 64) for i in range(2)])
    stats = [raw_stats(np.repeat(im[..., None], 3, 2)) for im in images]
    broken = assess(TorchRuntime(Net(float("nan"))), TrustRule(threshold=0.5), images, stats)
    assert broken.status == ["reject", "reject"] and broken.reason == [BROKEN, BROKEN]
    fine = assess(TorchRuntime(Net(1.0)), TrustRule(threshold=None), images, stats)
    assert fine.status == ["ok", "ok"] and np.isnan(fine.distance).all()
    tiny = [raw_stats(np.zeros((8, 8, 3), np.uint8))] * 2
    assert assess(TorchRuntime(Net(1.0)), TrustRule(), images, tiny).status == ["reject", "reject"]
