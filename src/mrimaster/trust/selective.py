"""Selection with guaranteed risk (SGR): a referral threshold whose risk has a stated bound.

Geifman & El-Yaniv, "Selective Classification for Deep Neural Networks", NeurIPS 2017,
Algorithm 1. Given ``m`` labelled validation images with an uncertainty each, a target risk
``r*`` and a confidence ``delta``, SGR searches the thresholds by bisection over the images
ordered from the most to the least certain (``k = ceil(log2 m)`` steps). At each candidate
threshold ``t`` the accepted images ``{u <= t}`` (``n`` of them, ``e`` wrong) have the
one-sided binomial upper bound of their risk

    B*(e, n, delta / k) = the largest b with  P[Binomial(n, b) <= e] >= delta / k

(the exact Clopper-Pearson bound, eq. 4 of the paper: ``Beta(1 - delta / k; e + 1, n - e)``,
1 when every accepted image is wrong). The threshold kept is the one with the largest
coverage whose bound is below ``r*``. By the union bound over the ``k`` thresholds tried,
with probability at least ``1 - delta`` over the draw of the validation images, the risk of
the accepted images of a new image drawn *from the same distribution* is at most the bound
(Theorem 3.2). It says nothing about images from another hospital or scanner: there the
bound is a figure to compare with what is measured, not a promise. It also assumes the
uncertainty (estimator and temperature) was fixed before these images were seen, and bounds
the uncertainty cut alone: in :mod:`mrimaster.training.fit_trust` the estimator and the
temperature are chosen on the same validation images, and the feature-distance referral
removes further images, so there the bound is an estimate, not a proof.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mrimaster.trust.uncertainty import accepted_counts


def risk_upper_bound(errors: int, n: int, delta: float) -> float:
    """One-sided ``1 - delta`` upper confidence bound of a risk from ``errors`` of ``n``
    (exact binomial, Clopper & Pearson 1934); 1.0 for ``n == 0`` or ``errors == n``.

    Raises:
        ValueError: counts out of range or ``delta`` not in (0, 1).
    """
    if not 0 < delta < 1:
        raise ValueError(f"delta must lie in (0, 1), not {delta}")
    if n < 0 or not 0 <= errors <= n:
        raise ValueError(f"need 0 <= errors <= n, got errors={errors}, n={n}")
    if n == 0 or errors == n:
        return 1.0
    from scipy.stats import beta

    return float(beta.ppf(1.0 - delta, errors + 1, n - errors))


@dataclass
class GuaranteedThreshold:
    """What :func:`sgr_threshold` chose.

    Attributes:
        threshold: Accept when the uncertainty is at most this; ``-1.0``: no threshold meets
            the target (refer everything).
        target_risk: ``r*``.
        delta: Confidence parameter: the bound holds with probability ``1 - delta``.
        bound: The risk bound of the accepted images at ``threshold`` (1.0 when none).
        coverage: Share of the validation images accepted, in [0, 1].
        risk: Error among the accepted validation images (0.0 when none).
        tried: Thresholds tried (``k``).
    """

    threshold: float
    target_risk: float
    delta: float
    bound: float
    coverage: float
    risk: float
    tried: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def sgr_threshold(unc: np.ndarray, correct: np.ndarray, target_risk: float,
                  delta: float = 0.05) -> GuaranteedThreshold:
    """Selection with guaranteed risk (see the module docstring).

    Args:
        unc: ``(m,)`` float uncertainties (higher: less sure).
        correct: ``(m,)`` bool, the prediction was right.
        target_risk: ``r*`` in (0, 1).
        delta: In (0, 1).

    Returns:
        The threshold with the largest coverage whose bound is below ``target_risk``. Images
        with equal uncertainty are accepted or referred together.

    Raises:
        ValueError: empty or mismatched inputs, ``target_risk`` or ``delta`` out of range.
    """
    unc = np.asarray(unc, dtype=np.float64)
    m = len(unc)
    if m == 0 or np.shape(correct) != unc.shape:
        raise ValueError("need one correctness flag per uncertainty, and at least one image")
    if not 0 < target_risk < 1:
        raise ValueError(f"target_risk must lie in (0, 1), not {target_risk}")
    ordered = np.sort(unc)
    values, accepted_at, errors_at = accepted_counts(unc, correct)
    tried = max(1, math.ceil(math.log2(m)))
    step_delta = delta / tried
    best: tuple[int, float] | None = None  # (index into values, bound)
    lo, hi = 1, m  # the z-th most certain image sets the threshold
    for _ in range(tried):  # bisection: lo's coverage met the target so far, hi's did not
        z = math.ceil((lo + hi) / 2)
        v = int(np.searchsorted(values, ordered[z - 1]))
        n, e = int(accepted_at[v]), int(round(errors_at[v]))
        bound = risk_upper_bound(e, n, step_delta)
        if bound < target_risk:
            best = (v, bound)  # lo only rises: each success covers more than the last
            lo = z  # within the target: try a larger coverage
        else:
            hi = z  # over the target: a smaller coverage
    if best is None:
        return GuaranteedThreshold(-1.0, target_risk, delta, 1.0, 0.0, 0.0, tried)
    v, bound = best
    accepted = int(accepted_at[v])
    return GuaranteedThreshold(float(values[v]), target_risk, delta, bound, accepted / m,
                               float(errors_at[v]) / accepted, tried)
