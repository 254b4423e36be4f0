"""Calibrate a trained classifier on its validation split: temperature and referral rule.

Writes into the model file (``temperature``, ``referral``) and, beside it, ``calibration.json``,
``reliability_val.png`` and ``risk_coverage_val.png``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mrimaster.data.folders import load_slices
from mrimaster.data.splits import SplitTable
from mrimaster.errors import DataError, MRIMasterError
from mrimaster.explain.calibration import calibration_metrics, fit_temperature, plot_reliability
from mrimaster.explain.referral import (
    UNCERTAINTY_METHODS,
    choose_threshold,
    plot_risk_coverage,
    risk_coverage,
    uncertainty,
)
from mrimaster.inference.predict import predict_logits, softmax
from mrimaster.models.checkpoint import load_classifier, resolve_model_path, save_classifier
from mrimaster.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class CalibrateConfig:
    """Inputs of ``mrimaster calibrate``.

    Attributes:
        model: Run folder or model file (updated in place).
        data_dir: The dataset the split refers to (default: from the run's config).
        split_file: ``split.csv`` (default: beside the model file).
        target_error: Error rate allowed among predictions that are not referred.
        methods: Uncertainty estimators to compare.
    """

    model: str
    data_dir: Path | None = None
    split_file: Path | None = None
    target_error: float = 0.03
    methods: list[str] = field(default_factory=lambda: list(UNCERTAINTY_METHODS))


def _strip(rc: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in rc.items() if k not in ("coverage", "risk")}


def run_calibration(cfg: CalibrateConfig, settings: Settings) -> dict[str, Any]:
    """Fit temperature and the referral rule on the validation split; update the model file."""
    path = resolve_model_path(cfg.model, settings.models_dir)
    folder = path.parent
    clf = load_classifier(path)
    split_file = cfg.split_file or folder / "split.csv"
    table = SplitTable.load(split_file)
    data_dir = cfg.data_dir
    if data_dir is None and (folder / "config.yaml").is_file():
        saved = yaml.safe_load((folder / "config.yaml").read_text()).get("data_dir")
        data_dir = Path(saved) if saved else None
    data_dir = data_dir or settings.data_root / "sartaj-training"
    val = table.indices("val")
    if not val:
        raise DataError(f"{split_file} has no validation images to calibrate on")
    slices = load_slices([data_dir / table.paths[i] for i in val], [table.labels[i] for i in val],
                         clf.image_size, progress=False)
    if slices.skipped:
        raise DataError(f"{len(slices.skipped)} validation images could not be read "
                        f"(first: {slices.skipped[0].path})", f"is {data_dir} the right dataset?")
    labels = np.array([clf.classes.index(lab or "") for lab in slices.labels])
    logits = predict_logits(clf.net, slices.images)
    temperature = fit_temperature(logits, labels)
    before = calibration_metrics(softmax(logits), labels)
    probs = softmax(logits, temperature)
    after = calibration_metrics(probs, labels)
    correct = probs.argmax(1) == labels
    uncertainties, curves = {}, {}
    for method in cfg.methods:
        try:
            uncertainties[method] = uncertainty(method, clf.net, slices.images, temperature,
                                                probs)
        except MRIMasterError as exc:  # e.g. MC dropout on a network without dropout
            log.info("uncertainty %s skipped: %s", method, exc.message)
            continue
        curves[method] = risk_coverage(uncertainties[method], correct)
    if not curves:
        raise MRIMasterError(f"none of the uncertainty methods {cfg.methods} applies to this "
                             "model", "include softmax")
    best = min(curves, key=lambda m: curves[m]["aurc"])
    unc = uncertainties[best]
    threshold = choose_threshold(unc, correct, cfg.target_error)
    accepted = unc <= threshold
    clf.temperature = temperature
    clf.referral = {
        "method": best, "threshold": threshold, "target_error": cfg.target_error,
        "val_coverage": float(accepted.mean()),
        "val_error_accepted": float((~correct[accepted]).mean()) if accepted.any() else 0.0,
    }
    save_classifier(path, clf)
    report = {"temperature": temperature, "n_val": len(labels),
              "before": {k: v for k, v in before.items() if k != "bins"},
              "after": {k: v for k, v in after.items() if k != "bins"},
              "uncertainty_aurc": {m: _strip(rc) for m, rc in curves.items()},
              "chosen_method": best, "referral": clf.referral}
    (folder / "calibration.json").write_text(json.dumps(report, indent=2))
    plot_reliability(before, after, temperature, folder / "reliability_val.png")
    plot_risk_coverage(curves, folder / "risk_coverage_val.png", "Validation split")
    log.info("temperature %.3f: val ECE %.4f -> %.4f; uncertainty %s (AURC %.4f); refer when "
             "uncertainty > %.4f (val coverage %.1f%%)", temperature, before["ece"],
             after["ece"], best, curves[best]["aurc"], threshold,
             100 * clf.referral["val_coverage"])
    return report


def assess_trust(clf: Any, images: np.ndarray, labels: np.ndarray, logits: np.ndarray | None = None
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Calibration before/after scaling and selective-prediction figures on labelled slices.

    Args:
        clf: A :class:`~mrimaster.models.checkpoint.Classifier`.
        images: ``(N, S, S)`` uint8 preprocessed slices.
        labels: ``(N,)`` class indices into ``clf.classes``.
        logits: Precomputed single-pass logits, if at hand.

    Returns:
        ``(report, arrays)``: the JSON-ready report, and ``probs``, ``uncertainty``,
        ``referred`` and the calibration/risk-coverage details for plotting.
    """
    logits = predict_logits(clf.net, images) if logits is None else logits
    probs = softmax(logits, clf.temperature)
    before = calibration_metrics(softmax(logits), labels)
    after = calibration_metrics(probs, labels)
    method = (clf.referral or {}).get("method", "softmax")
    unc = uncertainty(method, clf.net, images, clf.temperature, probs)
    correct = probs.argmax(1) == labels
    rc = risk_coverage(unc, correct)
    threshold = (clf.referral or {}).get("threshold")
    referred = unc > threshold if threshold is not None else np.zeros(len(unc), bool)
    kept = ~referred
    report = {
        "temperature": clf.temperature,
        "calibration_before": {k: v for k, v in before.items() if k != "bins"},
        "calibration_after": {k: v for k, v in after.items() if k != "bins"},
        "uncertainty_method": method,
        "risk_coverage": _strip(rc),
        "referral": None if threshold is None else {
            "threshold": threshold, "referred": int(referred.sum()),
            "coverage": float(kept.mean()),
            "error_of_accepted": float((~correct[kept]).mean()) if kept.any() else 0.0},
    }
    return report, {"probs": probs, "uncertainty": unc, "referred": referred,
                    "before": before, "after": after, "rc": rc}
