import numpy as np
import pytest

from mrimaster.evaluation.metrics import classification_metrics, confusion_matrix


def test_confusion_and_scores_by_hand() -> None:
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2])
    probs = np.eye(3)[y_pred] * 0.7 + 0.1
    m = classification_metrics(y_true, probs, ["a", "b", "c"])
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    # a: P=1, R=2/3, F1=0.8; b: P=1/2, R=1/2, F1=0.5; c: P=1/2, R=1, F1=2/3
    assert m["per_class"]["a"]["f1"] == pytest.approx(0.8)
    assert m["per_class"]["b"]["precision"] == pytest.approx(0.5)
    assert m["per_class"]["c"]["recall"] == pytest.approx(1.0)
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["per_class"]["a"]["support"] == 3
    assert m["nll"] == pytest.approx(-np.log(0.8) * 4 / 6 - np.log(0.1) * 2 / 6)


def test_confusion_matrix_counts_everything() -> None:
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 4, 100), rng.integers(0, 4, 100)
    cm = confusion_matrix(y, p, 4)
    assert cm.sum() == 100 and np.trace(cm) == (y == p).sum()
