"""What the trust layer did on a labelled or presence-only set: the numbers reports show."""

from __future__ import annotations

from typing import Any

import numpy as np

from mrimaster.inference.runtime import softmax
from mrimaster.trust.calibration import calibration_metrics
from mrimaster.trust.referral import STATUSES, Assessment
from mrimaster.trust.uncertainty import risk_coverage

CONFIDENT = 0.95
"""Probability above which a prediction counts as confident."""


def strip_curve(rc: dict[str, Any]) -> dict[str, float]:
    """A risk-coverage summary without its per-image arrays."""
    return {k: v for k, v in rc.items() if k not in ("coverage", "risk")}


def status_counts(assessment: Assessment) -> dict[str, int]:
    """How many images got each status."""
    return {s: assessment.status.count(s) for s in STATUSES}


def labelled_trust(assessment: Assessment, labels: np.ndarray, temperature: float,
                   method: str = "softmax") -> tuple[dict[str, Any], dict[str, Any]]:
    """Calibration before/after scaling, selective prediction and the referral's effect.

    Args:
        assessment: From :func:`mrimaster.trust.referral.assess`.
        labels: ``(N,)`` true class indices.
        temperature: The temperature the assessment used.
        method: The uncertainty estimator it used.

    Returns:
        ``(report, arrays)``: the JSON-ready report, and ``before``/``after`` calibration and
        ``rc`` (risk-coverage) details for plotting.
    """
    probs = assessment.probs
    before = calibration_metrics(softmax(assessment.logits), labels)
    after = calibration_metrics(probs, labels)
    correct = probs.argmax(1) == labels
    rc = risk_coverage(assessment.uncertainty, correct)
    kept = assessment.accepted
    confident_wrong = (probs.max(1) > CONFIDENT) & ~correct
    report = {
        "temperature": temperature,
        "calibration_before": {k: v for k, v in before.items() if k != "bins"},
        "calibration_after": {k: v for k, v in after.items() if k != "bins"},
        "uncertainty_method": method,
        "risk_coverage": strip_curve(rc),
        "status": status_counts(assessment),
        "coverage": float(kept.mean()) if len(kept) else 0.0,
        "error_of_accepted": float((~correct[kept]).mean()) if kept.any() else 0.0,
        "wrong_over_0.95": int(confident_wrong.sum()),
        "wrong_over_0.95_share": float(confident_wrong.mean()) if len(kept) else 0.0,
        "wrong_over_0.95_not_caught": int((confident_wrong & kept).sum()),
        "distance": _quantiles(assessment.distance),
    }
    return report, {"before": before, "after": after, "rc": rc}


def presence_trust(assessment: Assessment, classes: list[str]) -> dict[str, Any]:
    """On images that all show a tumour: sensitivity and the confident misses.

    Args:
        assessment: From :func:`mrimaster.trust.referral.assess`.
        classes: Class names in output order (one is ``no_tumor``).

    Returns:
        ``n``; ``sensitivity`` (top class is not ``no_tumor``); ``missed``; ``confident_misses``
        (``no_tumor`` with p > 0.95) and how many of them the trust layer ``caught`` (referred or
        rejected); ``missed_not_caught``; status counts; distance quantiles; the predicted
        class mix.
    """
    no_tumor = classes.index("no_tumor")
    pred = assessment.probs.argmax(1)
    missed = pred == no_tumor
    confident = missed & (assessment.probs[:, no_tumor] > CONFIDENT)
    kept = assessment.accepted
    n = len(pred)
    return {
        "n": n,
        "sensitivity": float((~missed).mean()) if n else float("nan"),
        "missed": int(missed.sum()),
        "confident_misses": int(confident.sum()),
        "confident_misses_caught": int((confident & ~kept).sum()),
        "confident_misses_not_caught": int((confident & kept).sum()),
        "missed_not_caught": int((missed & kept).sum()),
        "sensitivity_of_accepted": float((~missed[kept]).mean()) if kept.any() else float("nan"),
        "status": status_counts(assessment),
        "predicted": {c: int((pred == i).sum()) for i, c in enumerate(classes)},
        "distance": _quantiles(assessment.distance),
    }


def _quantiles(values: np.ndarray) -> dict[str, float] | None:
    values = values[np.isfinite(values)]
    if not values.size:
        return None
    qs = np.percentile(values, [5, 50, 95, 99])
    return {"p5": float(qs[0]), "median": float(qs[1]), "p95": float(qs[2]),
            "p99": float(qs[3]), "max": float(values.max())}
