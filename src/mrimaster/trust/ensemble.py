"""A deep ensemble's prediction and uncertainty from its members' logits (NumPy only).

Deep ensembles (Lakshminarayanan, Pritzel & Blundell, NeurIPS 2017): ``M`` networks trained
independently; the prediction is the mean of their probabilities,
``p(y|x) = 1/M sum_m p_m(y|x)`` (their eq. in section 2.4). Ovadia et al. (NeurIPS 2019) found
ensembles the most robust uncertainty under dataset shift among the methods they compared.

Calibration here is "pool, then calibrate": each member's probabilities with its own fitted
temperature are averaged, then one temperature ``T`` is fitted on the log of the pooled
probabilities (validation NLL), ``q = softmax(log p / T)``. Averaging calibrated members leaves
the pool under-confident (Rahaman & Thiery, NeurIPS 2021, "Uncertainty quantification and deep
ensembles"), and the pooled temperature undoes that; it never changes the predicted class.

Uncertainty scores (higher = less sure), each ``(N,)`` float64:

- ``softmax``: ``1 - max_y q(y|x)`` (the pooled, calibrated confidence);
- ``entropy``: the total predictive entropy ``H[q]`` in nats;
- ``mutual-information``: the members' disagreement, ``H[p] - 1/M sum_m H[p_m]`` (the
  epistemic part of the entropy, Depeweg et al., ICML 2018, eq. 14; "BALD" in Houlsby et al.
  2011), on the members' probabilities before the pooled temperature; 0 when all members agree.
"""

from __future__ import annotations

import numpy as np

from mrimaster.inference.runtime import softmax

SCORES = ("softmax", "entropy", "mutual-information")


def _entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy in nats over the last axis."""
    p = np.clip(probs, 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=-1)


def member_probs(member_logits: np.ndarray, temperatures: np.ndarray) -> np.ndarray:
    """Each member's calibrated probabilities.

    Args:
        member_logits: ``(M, N, C)`` float logits.
        temperatures: ``(M,)`` each member's own temperature (> 0).

    Returns:
        ``(M, N, C)`` float64 probabilities.
    """
    return np.stack([softmax(z.astype(np.float64), float(t))
                     for z, t in zip(member_logits, temperatures, strict=True)])


def pooled_logits(probs: np.ndarray) -> np.ndarray:
    """``(M, N, C)`` member probabilities -> ``(N, C)`` log of their mean: logits whose softmax
    is the pooled prediction (so a temperature can be fitted and applied to them)."""
    return np.log(np.clip(probs.mean(axis=0), 1e-12, 1.0))


def mutual_information(probs: np.ndarray) -> np.ndarray:
    """``(M, N, C)`` member probabilities -> ``(N,)`` mutual information (nats, >= 0)."""
    return np.maximum(_entropy(probs.mean(axis=0)) - _entropy(probs).mean(axis=0), 0.0)


def ensemble_scores(probs: np.ndarray, temperature: float) -> tuple[np.ndarray,
                                                                     dict[str, np.ndarray]]:
    """The pooled calibrated prediction and every score of :data:`SCORES`.

    Args:
        probs: ``(M, N, C)`` member probabilities (:func:`member_probs`).
        temperature: The pooled temperature.

    Returns:
        ``((N, C) pooled calibrated probabilities, {score name: (N,) uncertainty})``.
    """
    q = softmax(pooled_logits(probs), temperature)
    return q, {"softmax": 1.0 - q.max(axis=1), "entropy": _entropy(q),
               "mutual-information": mutual_information(probs)}
