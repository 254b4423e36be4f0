"""The ensemble's pooling and scores against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mrimaster.trust.ensemble import (
    ensemble_scores,
    member_probs,
    mutual_information,
    pooled_logits,
)


def test_mutual_information_by_hand() -> None:
    # two members, two classes: certain and opposite on image 0, agreeing on image 1
    probs = np.array([[[1.0, 0.0], [0.7, 0.3]],
                      [[0.0, 1.0], [0.7, 0.3]]])
    mi = mutual_information(probs)
    assert mi[0] == pytest.approx(math.log(2), abs=1e-9)  # H(0.5, 0.5) - 0
    assert mi[1] == pytest.approx(0.0, abs=1e-12)  # members agree: no disagreement
    # a three-class case computed by hand
    p1, p2 = np.array([0.6, 0.3, 0.1]), np.array([0.2, 0.5, 0.3])
    mean = (p1 + p2) / 2

    def h(p: np.ndarray) -> float:
        return float(-(p * np.log(p)).sum())

    got = mutual_information(np.stack([p1[None], p2[None]]))[0]
    assert got == pytest.approx(h(mean) - (h(p1) + h(p2)) / 2, rel=1e-9)


def test_pooling_is_the_mean_of_calibrated_member_probabilities() -> None:
    logits = np.array([[[2.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]]])
    temps = np.array([0.5, 2.0])
    probs = member_probs(logits, temps)
    e = np.exp([4.0, 0.0, 0.0])
    first = e / e.sum()
    f = np.exp([0.0, 0.5, 0.0])
    second = f / f.sum()
    assert np.allclose(probs[0, 0], first) and np.allclose(probs[1, 0], second)
    q, scores = ensemble_scores(probs, 1.0)
    assert np.allclose(q[0], (first + second) / 2)  # T = 1 on the log of the mean: the mean
    assert scores["softmax"][0] == pytest.approx(1 - q[0].max())
    # a pooled temperature sharpens or softens, never changes the class
    sharp, _ = ensemble_scores(probs, 0.5)
    soft, _ = ensemble_scores(probs, 3.0)
    assert sharp.max() > q.max() > soft.max()
    assert sharp.argmax(1) == q.argmax(1) == soft.argmax(1)
    assert np.allclose(np.exp(pooled_logits(probs)), q)


def test_scores_rank_disagreement_above_agreement() -> None:
    agree = np.array([[[0.8, 0.2]], [[0.8, 0.2]]])
    differ = np.array([[[0.99, 0.01]], [[0.4, 0.6]]])
    _, a = ensemble_scores(agree, 1.0)
    _, d = ensemble_scores(differ, 1.0)
    assert d["mutual-information"][0] > a["mutual-information"][0] == pytest.approx(0.0)
    assert set(a) == {"softmax", "entropy", "mutual-information"}
