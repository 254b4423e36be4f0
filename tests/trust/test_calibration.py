import numpy as np
import pytest

from mrimaster.inference.runtime import softmax
from mrimaster.trust.calibration import calibration_metrics, fit_temperature


def test_fit_temperature_recovers_the_true_temperature() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (4000, 4))
    true_t = 2.5
    probs = softmax(logits, true_t)
    labels = np.array([rng.choice(4, p=p) for p in probs])
    assert fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.1)


def test_metrics_by_hand() -> None:
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.97, 0.03]])
    labels = np.array([0, 1, 1, 1])
    m = calibration_metrics(probs, labels, n_bins=10)
    # bins: 0.6 -> (0.5,0.6] acc 0; 0.7 -> (0.6,0.7] acc 1; 0.9 -> (0.8,0.9] acc 1;
    # 0.97 -> (0.9,1.0] acc 0
    ece = (abs(0 - 0.6) + abs(1 - 0.7) + abs(1 - 0.9) + abs(0 - 0.97)) / 4
    assert m["ece"] == pytest.approx(ece)
    assert m["mce"] == pytest.approx(0.97)
    assert m["wrong_over_0.95"] == 1
    brier = np.mean([(0.1**2 + 0.1**2), (0.6**2 + 0.6**2), (0.3**2 + 0.3**2),
                     (0.97**2 + 0.97**2)])
    assert m["brier"] == pytest.approx(brier)
    assert m["nll"] == pytest.approx(-np.mean(np.log([0.9, 0.4, 0.7, 0.03])))


def test_scaling_improves_an_overconfident_model() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, (3000, 4))
    labels = np.array([rng.choice(4, p=p) for p in softmax(logits)])
    over = logits * 3  # sharpened: overconfident
    t = fit_temperature(over, labels)
    assert calibration_metrics(softmax(over, t), labels)["ece"] < \
        calibration_metrics(softmax(over), labels)["ece"] / 2
