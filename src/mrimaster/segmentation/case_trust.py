"""The case-level trust decision of a 3D segmentation: ``ok`` or ``refer``, with the reason.

The 3D counterpart of the 2D read's referral. Each segmentation is described by a few
figures of one network's two passes (the image as it is and mirrored left-right;
:func:`trust_features`): how much the passes disagree, how much of the mask is soft or in
stray pieces. A rule (:class:`CaseTrustRule`) refers a case when any figure it uses is above
its threshold. The rule is fitted on the cross-validation predictions, each case segmented by
the fold model that never saw it (:func:`fit_rule`), in two parts: the thresholds of one or
two figures that refer every held-out prediction under its target Dice with the most cases
kept (the failures seen), and for every figure a cap at its largest value among the acceptable
predictions (the envelope: a case whose figures lie beyond every acceptable held-out case is
referred, whatever failure it is; a one-class rule, which needs no failure to have been seen).
:func:`leave_one_out` refits it without each case in turn to say how the rule does on a case
it was not fitted on. On the 16-epoch models' 28 held-out predictions the envelope was what
referred the worst case (whole-tumour Dice 0.347) when that case was left out of the fit; the
failure-separating thresholds alone let it through. For the 48-epoch models shipped since
2026-12-07 the envelope is the whole rule, and it refers both failures (0.513, 0.649) with
each left out (README, *Models*).

With the fold ensemble deployed, the figures still come from one member (the first fold
model, which like every member never saw the new case), and its mirrored pass: the same
quantity the rule was fitted on, so the thresholds mean the same thing.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from mrimaster.errors import ModelError

TRUST_FILE = "trust.json"
"""Where a model folder keeps its fitted rule."""

FEATURES: dict[str, str] = {
    "mirror_disagreement": "whole tumour unstable under left-right mirroring (1 - Dice "
                           "between the passes)",
    "soft_fraction": "much of the whole tumour is soft (voxels at probability 0.1-0.9 per "
                     "voxel of the mask)",
    "scattered": "the whole tumour is in scattered pieces (share outside its largest "
                 "component)",
    "unsure_in_mask": "the network is unsure inside the mask (1 - mean probability)",
}
"""The figures a rule may use, all oriented so that higher means less trustworthy."""


def mask_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two bool masks of one shape, in [0, 1]; 1.0 when both are empty. The
    same as :func:`mrimaster.segmentation.metrics.dice`, without that module's torch and
    MONAI imports (this one runs on the torch-free inference path)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def trust_features(plain: np.ndarray, mirrored: np.ndarray) -> dict[str, float]:
    """The figures of :data:`FEATURES` from one network's two whole-tumour passes.

    Args:
        plain: ``(D, H, W)`` float whole-tumour probability of the image as it is, in [0, 1].
        mirrored: The same for the image mirrored left-right, mirrored back onto ``plain``'s
            grid.

    Returns:
        ``{name: value}``, each in [0, 1] except ``soft_fraction`` (>= 0); an empty
        prediction gets 0 for all but ``mirror_disagreement``.
    """
    from scipy import ndimage

    a, b = plain > 0.5, mirrored > 0.5
    mean = 0.5 * (plain + mirrored)
    mask = mean > 0.5
    n = int(mask.sum())
    out = {"mirror_disagreement": 1.0 - mask_dice(a, b), "soft_fraction": 0.0, "scattered": 0.0,
           "unsure_in_mask": 0.0}
    if n:
        out["soft_fraction"] = float(((mean > 0.1) & (mean < 0.9)).sum()) / n
        out["unsure_in_mask"] = 1.0 - float(mean[mask].mean())
        labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3)))
        if count > 1:
            out["scattered"] = 1.0 - float(np.bincount(labels.ravel())[1:].max()) / n
    return {k: round(v, 4) for k, v in out.items()}


@dataclass
class CaseTrustRule:
    """Refer a case when any used figure is above its threshold.

    Attributes:
        thresholds: ``{feature: threshold}``; a case is ``refer`` when a feature is above.
        envelope: ``{feature: largest value among the acceptable held-out predictions}``
            (empty for rules fitted before it existed); a threshold equal to it is reported as
            "beyond every acceptable held-out case". It has no margin: the acceptable case
            with the largest value sits on it, so a change in the fourth decimal of its figures
            would move that case across.
        targets: The Dice a held-out prediction had to reach to count as acceptable, per
            setting (``all``: every modality the case has; ``flair``: FLAIR alone).
        fitted_on: Where the thresholds come from (words).
        cv: The cross-validated figures of the rule (coverage, risk, per case).
    """

    thresholds: dict[str, float]
    targets: dict[str, float] = field(default_factory=lambda: {"all": 0.70, "flair": 0.80})
    fitted_on: str = ""
    cv: dict[str, Any] = field(default_factory=dict)
    envelope: dict[str, float] = field(default_factory=dict)

    def decide(self, features: dict[str, float]) -> tuple[str, str]:
        """``("ok", "")`` or ``("refer", reason)`` for a case's :func:`trust_features`; a
        threshold set by the envelope says so (``beyond every acceptable held-out case``)."""
        reasons = []
        for k, t in self.thresholds.items():
            if features.get(k, 0.0) > t:
                beyond = ", beyond every acceptable held-out case" \
                    if self.envelope.get(k) == t else ""
                reasons.append(f"{FEATURES[k].split(' (')[0]} ({k} {features[k]:.3f} > "
                               f"{t:.3f}{beyond})")
        return ("refer", "; ".join(reasons)) if reasons else ("ok", "")

    def describe(self) -> str:
        """The rule in one line."""
        parts = " or ".join(f"{k} > {t:.3f}" for k, t in self.thresholds.items()) or "never"
        return f"refer when {parts} ({self.fitted_on})"


def save_rule(rule: CaseTrustRule, folder: Path) -> Path:
    path = folder / TRUST_FILE
    path.write_text(json.dumps(asdict(rule), indent=2))
    return path


def load_rule(folder: Path) -> CaseTrustRule | None:
    """The rule of a model folder, or ``None`` when it has none (an older or fine-tuned
    model: its results carry no status)."""
    path = folder / TRUST_FILE
    if not path.is_file():
        return None
    try:
        blob = json.loads(path.read_text())
        known = {f.name for f in fields(CaseTrustRule)}  # keys a later version adds: ignored
        rule = CaseTrustRule(**{k: v for k, v in blob.items() if k in known})
    except (ValueError, TypeError, AttributeError) as exc:
        raise ModelError(f"{path} is not a readable trust rule ({type(exc).__name__})",
                         "export the model again with `mrimaster seg export`") from exc
    unknown = [k for k in rule.thresholds if k not in FEATURES]
    if unknown:
        raise ModelError(f"{path} uses unknown figures {unknown}",
                         "update MRIMaster or export the model again")
    return rule


@dataclass
class TrustRow:
    """One held-out prediction: its case, setting, figures and whole-tumour Dice."""

    case: str
    setting: str
    features: dict[str, float]
    dice: float


def recorded_rows(trust: dict[str, Any]) -> list[TrustRow]:
    """The held-out predictions a saved rule (``asdict`` of a :func:`fit_and_report` rule, as
    in ``trust.json`` or ``cv.json``'s ``trust``) records in ``cv.rows``; empty when none.

    Raises:
        KeyError, TypeError, ValueError: a row lacks its case, setting, figures or Dice.
    """
    return [TrustRow(r["case"], r["setting"], dict(r["features"]), float(r["dice"]))
            for r in trust.get("cv", {}).get("rows", [])]


def _bad(row: TrustRow, targets: dict[str, float]) -> bool:
    return row.dice < targets.get(row.setting, targets["all"])


def _threshold(values: list[float], catch: list[float]) -> float:
    """The threshold halfway between the largest value kept and the smallest to catch;
    above every value when nothing must be caught."""
    if not catch:
        return max(values, default=0.0)
    low = min(catch)
    below = [v for v in values if v < low]
    return (max(below) + low) / 2 if below else low - 1e-6


def fit_rule(rows: list[TrustRow], targets: dict[str, float] | None = None,
             features: tuple[str, ...] = tuple(FEATURES)) -> CaseTrustRule:
    """The thresholds of one or two figures that refer every row under its target Dice and
    keep the most rows (ties: one figure before two, then the larger margin), then a threshold
    for every figure of ``features``: the smaller of that fit's (where it chose the figure)
    and the figure's largest value among the acceptable rows (the envelope: see the module
    docstring; it refers no row the fit keeps).

    Args:
        rows: Held-out predictions (at least one).
        targets: Dice per setting a prediction must reach (default 0.70 with every modality,
            0.80 from FLAIR alone).
        features: Figures to choose from, and to bound by the envelope.
    """
    targets = targets or {"all": 0.70, "flair": 0.80}
    bad = [r for r in rows if _bad(r, targets)]
    best: tuple[tuple[int, int, float], dict[str, float]] | None = None
    for size in (1, 2):
        for names in itertools.combinations(features, size):
            for thresholds in _candidates(rows, bad, names):
                kept = [r for r in rows if all(r.features[k] <= t
                                               for k, t in thresholds.items())]
                if any(_bad(r, targets) for r in kept):
                    continue
                margin = min((r.features[k] - t for r in bad for k, t in thresholds.items()
                              if r.features[k] > t), default=0.0)
                key = (len(kept), -size, margin)
                if best is None or key > best[0]:
                    best = (key, thresholds)
    assert best is not None  # one figure above every row always works
    good = [r for r in rows if not _bad(r, targets)]
    envelope = {k: float(max(r.features[k] for r in good)) for k in features} if good else {}
    thresholds = {k: float(min(best[1].get(k, math.inf), envelope.get(k, math.inf)))
                  for k in features if k in best[1] or k in envelope}
    return CaseTrustRule(thresholds, dict(targets),
                         f"fitted on {len(rows)} cross-validated predictions, "
                         f"{len(bad)} under target; each figure at most its largest among "
                         f"the {len(good)} acceptable", envelope=envelope)


def _candidates(rows: list[TrustRow], bad: list[TrustRow], names: tuple[str, ...]
                ) -> list[dict[str, float]]:
    """Threshold sets for ``names``: one figure catches every bad row; two figures split the
    bad rows between them (the first takes those above each candidate cut)."""
    values = {k: [r.features[k] for r in rows] for k in names}
    if len(names) == 1:
        k = names[0]
        return [{k: _threshold(values[k], [r.features[k] for r in bad])}]
    k1, k2 = names
    out = []
    for cut in sorted({r.features[k1] for r in bad}):
        t1 = _threshold(values[k1], [cut])
        rest = [r.features[k2] for r in bad if r.features[k1] <= t1]
        out.append({k1: t1, k2: _threshold(values[k2], rest)})
    return out


def summary(rows: list[TrustRow], statuses: list[str], targets: dict[str, float]
            ) -> dict[str, Any]:
    """Coverage, risk and Dice among the kept rows, per setting and overall."""
    out: dict[str, Any] = {}
    for setting in sorted({r.setting for r in rows}) + ["overall"]:
        pairs = [(r, s) for r, s in zip(rows, statuses, strict=True)
                 if setting in ("overall", r.setting)]
        kept = [r for r, s in pairs if s == "ok"]
        dice = [r.dice for r in kept]
        out[setting] = {
            "predictions": len(pairs), "ok": len(kept),
            "coverage": round(len(kept) / len(pairs), 4) if pairs else None,
            "risk": round(sum(_bad(r, targets) for r in kept) / len(kept), 4) if kept else None,
            "mean_wt_dice_ok": round(float(np.mean(dice)), 4) if dice else None,
            "min_wt_dice_ok": round(float(np.min(dice)), 4) if dice else None,
            "referred": sorted(f"{r.case} ({r.setting}, Dice {r.dice:.3f})"
                               for r, s in pairs if s == "refer")}
    return out


def leave_one_out(rows: list[TrustRow], targets: dict[str, float] | None = None
                  ) -> list[str]:
    """Each row's status under the rule fitted without any row of its case."""
    targets = targets or {"all": 0.70, "flair": 0.80}
    out = []
    for row in rows:
        rest = [r for r in rows if r.case != row.case]
        out.append(fit_rule(rest, targets).decide(row.features)[0] if rest else "refer")
    return out


def fit_and_report(rows: list[TrustRow], targets: dict[str, float] | None = None
                   ) -> CaseTrustRule:
    """:func:`fit_rule` with its cross-validated figures in ``cv``: on the rows it was fitted
    on (``fitted``), and with each case's rule fitted without it (``leave_one_out``)."""
    rule = fit_rule(rows, targets)
    statuses = [rule.decide(r.features)[0] for r in rows]
    loo = leave_one_out(rows, rule.targets)
    rule.cv = {"fitted": summary(rows, statuses, rule.targets),
               "leave_one_out": summary(rows, loo, rule.targets),
               "rows": [{**asdict(r), "status": s, "status_leave_one_out": lo}
                        for r, s, lo in zip(rows, statuses, loo, strict=True)]}
    return rule


def trust_markdown(trust: dict[str, Any] | None) -> str:
    """The trust rule's cross-validated figures as Markdown (empty for runs without one)."""
    if not trust:
        return ""
    rule = CaseTrustRule(**trust)
    lines = ["", "### Case-level trust rule (held-out predictions)", "",
             f"Rule: {rule.describe()}. A prediction counts as acceptable at whole-tumour Dice "
             + ", ".join(f">= {v:.2f} ({k})" for k, v in rule.targets.items()) + ".", "",
             "| fitted on | setting | predictions | ok | coverage | risk among ok | mean WT Dice "
             "ok | lowest ok | referred |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for how in ("fitted", "leave_one_out"):
        for setting, v in rule.cv.get(how, {}).items():
            def num(x: float | None) -> str:
                return "-" if x is None else f"{x:.3f}"
            lines.append(f"| {'all cases' if how == 'fitted' else 'each case left out'} | "
                         f"{setting} | {v['predictions']} | {v['ok']} | {num(v['coverage'])} | "
                         f"{num(v['risk'])} | {num(v['mean_wt_dice_ok'])} | "
                         f"{num(v['min_wt_dice_ok'])} | {', '.join(v['referred']) or '-'} |")
    return "\n".join(lines) + "\n"
