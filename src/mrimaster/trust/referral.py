"""The trust decision for every prediction: ``ok``, ``refer`` (to a radiologist) or ``reject``.

In order, the first that applies decides:

1. ``reject``: the network's output is not a number (a damaged model), the file fails an input
   check (:func:`mrimaster.trust.ood.input_problem`: too
   small, blank, colour), or its features are farther from every class than ``reject_above``
   (not a brain MRI slice of any kind the model knows). No class is shown.
2. ``refer``: its features are farther than ``refer_above`` (unlike the training images: a new
   scanner, sequence or source), or its uncertainty exceeds the referral threshold.
3. ``ok``: the class is shown with its calibrated probability; a doctor still reviews it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mrimaster.data.images import RawStats
from mrimaster.errors import ModelError
from mrimaster.inference.runtime import Runtime, softmax
from mrimaster.trust.ood import FeatureDistance, input_problem
from mrimaster.trust.uncertainty import uncertainty

STATUSES: tuple[str, ...] = ("ok", "refer", "reject")
BROKEN = ("the model produced invalid numbers (NaN or infinity) for this image: the model file "
          "may be damaged; do not use this result")


@dataclass
class TrustRule:
    """What a calibrated model carries to make the decision.

    Attributes:
        temperature: Softmax temperature.
        method: Uncertainty estimator (see :data:`mrimaster.trust.uncertainty.UNCERTAINTY_METHODS`).
        threshold: Refer when uncertainty exceeds this (``None``: never for uncertainty).
        distance: Fitted feature distance (``None``: no distance check).
        refer_above: Refer when the distance exceeds this.
        reject_above: Reject when the distance exceeds this.
    """

    temperature: float = 1.0
    method: str = "softmax"
    threshold: float | None = None
    distance: FeatureDistance | None = None
    refer_above: float = float("inf")
    reject_above: float = float("inf")

    @classmethod
    def of(cls, clf: Any) -> TrustRule:
        """The rule stored in a :class:`~mrimaster.models.checkpoint.Classifier`."""
        referral, ood = clf.referral or {}, clf.ood
        if referral.get("method") == "mc-dropout" and referral.get("mc") != "head":
            raise ModelError("this model was calibrated with the earlier whole-network MC "
                             "dropout, whose threshold does not fit today's head-only estimator",
                             "run `mrimaster models calibrate --model RUN` on its run folder")
        rule = cls(clf.temperature, referral.get("method", "softmax"), referral.get("threshold"))
        if ood:
            rule.distance = FeatureDistance.from_dict(ood["distance"])
            rule.refer_above = float(ood["refer_above"])
            rule.reject_above = float(ood["reject_above"])
        return rule


@dataclass
class Assessment:
    """Predictions with their trust fields, for ``N`` images.

    Attributes:
        logits: ``(N, C)`` float32 single-pass logits.
        probs: ``(N, C)`` float64 calibrated probabilities.
        uncertainty: ``(N,)`` in [0, 1) under the rule's method.
        distance: ``(N,)`` feature distance per dimension (NaN without a distance check).
        status: ``ok`` / ``refer`` / ``reject`` per image.
        reason: Why, per image (empty for ``ok``).
    """

    logits: np.ndarray
    probs: np.ndarray
    uncertainty: np.ndarray
    distance: np.ndarray
    status: list[str]
    reason: list[str]

    @property
    def accepted(self) -> np.ndarray:
        """``(N,)`` bool: status ``ok``."""
        return np.array([s == "ok" for s in self.status], dtype=bool)


def decide(problems: Sequence[str | None], distance: np.ndarray, unc: np.ndarray,
           rule: TrustRule) -> tuple[list[str], list[str]]:
    """Status and reason per image (see the module docstring for the order)."""
    status, reason = [], []
    for problem, dist, u in zip(problems, distance, unc, strict=True):
        if problem:
            status.append("reject")
            reason.append(problem)
        elif dist > rule.reject_above:
            status.append("reject")
            reason.append(f"not like any brain MRI slice the model knows (feature distance "
                          f"{dist:.2f} > {rule.reject_above:.2f})")
        elif dist > rule.refer_above:
            status.append("refer")
            reason.append(f"unlike the training images, e.g. another scanner or source "
                          f"(feature distance {dist:.2f} > {rule.refer_above:.2f})")
        elif rule.threshold is not None and u > rule.threshold:
            status.append("refer")
            reason.append(f"uncertain (uncertainty {u:.3f} > {rule.threshold:.3f})")
        else:
            status.append("ok")
            reason.append("")
    return status, reason


def assess(runtime: Runtime, rule: TrustRule, images: np.ndarray,
           stats: Sequence[RawStats] | None = None, batch_size: int = 64) -> Assessment:
    """Classify preprocessed slices and decide how far to trust each prediction.

    Args:
        runtime: The classifier network, in a runtime.
        rule: Its calibration, referral and OOD settings.
        images: ``(N, S, S)`` uint8 preprocessed slices.
        stats: Raw-file statistics per image for the input checks (``None``: skip them, e.g.
            for slices cut from volumes).
    """
    logits, feats = runtime.forward(images, batch_size)
    probs = softmax(logits, rule.temperature)
    unc = uncertainty(rule.method, runtime, images, rule.temperature, logits, feats)
    problems = [input_problem(s) for s in stats] if stats is not None else [None] * len(images)
    if rule.distance is None:  # no distance check: NaN reported, never compared
        dist = np.full(len(images), np.nan)
        checked = np.full(len(images), -np.inf)
    else:
        dist = checked = rule.distance.distance(feats)
    broken = ~(np.isfinite(probs).all(1) & np.isfinite(unc) & ~np.isnan(checked))
    problems = [BROKEN if bad else p for p, bad in zip(problems, broken, strict=True)]
    status, reason = decide(problems, np.nan_to_num(checked, nan=np.inf), unc, rule)
    return Assessment(logits, probs, unc, dist, status, reason)
