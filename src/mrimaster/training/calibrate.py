"""Calibrate a trained classifier: temperature, uncertainty estimator, OOD distance, referral.

Everything is fitted on the run's own parts of its split: the feature distance on the images it
was trained on, the temperature, estimator and thresholds on its validation part. Nothing is
fitted on the test or source-held-out parts, or on the ``report`` part of a presence-only set.

Rules (fixed in advance, not tuned on any check):

- **Temperature** ``T = max(T_val, 1)``: scaling is fitted by NLL on validation (Guo et al.,
  ICML 2017) but never sharpens. Validation comes from the training sources, where the network
  is most accurate; a ``T < 1`` fitted there makes its mistakes on new sources more confident
  (Ovadia et al., NeurIPS 2019, found temperature scaling the least reliable under shift).
- **Uncertainty estimator**: the cheapest of ``softmax``, ``mc-dropout`` (head only) and
  ``tta`` (4 extra passes) whose validation AURC is within ``aurc_tolerance`` (10%) of the
  lowest; the referral threshold is the largest that keeps the validation error of the
  accepted images within ``target_error``.
- **Feature distance** (:class:`mrimaster.trust.ood.FeatureDistance`): refer above the
  ``refer_quantile`` of validation distances; reject above ``reject_factor`` times the largest
  distance of any real MRI slice the model was trained or validated on.

Writes into the model file (``temperature``, ``referral``, ``ood``) and, beside it,
``calibration.json``, ``reliability_val.png`` and ``risk_coverage_val.png``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mrimaster.config import load_config
from mrimaster.errors import DataError, ModelError, MRIMasterError
from mrimaster.inference.forward import predict_logits_and_features, softmax
from mrimaster.models.checkpoint import load_classifier, resolve_model_path, save_classifier
from mrimaster.settings import Settings
from mrimaster.training.config import TrainConfig
from mrimaster.training.data import PRESENT, load_extra_training, load_split_data
from mrimaster.trust.calibration import calibration_metrics, fit_temperature, plot_reliability
from mrimaster.trust.ood import FeatureDistance
from mrimaster.trust.report import strip_curve
from mrimaster.trust.uncertainty import (
    UNCERTAINTY_METHODS,
    choose_threshold,
    plot_risk_coverage,
    risk_coverage,
    uncertainty,
)

log = logging.getLogger(__name__)

COST_ORDER: tuple[str, ...] = ("softmax", "mc-dropout", "tta")
"""Uncertainty estimators from the cheapest to the dearest."""


@dataclass
class CalibrateConfig:
    """Inputs of ``mrimaster calibrate``.

    Attributes:
        model: Run folder or model file (updated in place; the shipped ``default`` is refused).
        data_dir: The dataset the split refers to (default: from the run's config).
        split_file: ``split.csv`` (default: beside the model file).
        target_error: Error rate allowed among predictions that are not referred.
        methods: Uncertainty estimators to compare.
        aurc_tolerance: A cheaper estimator is kept if its AURC is within this relative margin
            of the best one's.
        refer_quantile: Validation quantile of the feature distance above which to refer.
        reject_factor: Reject above this multiple of the largest known MRI distance.
    """

    model: str
    data_dir: Path | None = None
    split_file: Path | None = None
    target_error: float = 0.03
    methods: list[str] = field(default_factory=lambda: list(UNCERTAINTY_METHODS))
    aurc_tolerance: float = 0.1
    refer_quantile: float = 0.99
    reject_factor: float = 1.5


def _train_config(folder: Path, cfg: CalibrateConfig) -> TrainConfig:
    path = folder / "config.yaml"
    if not path.is_file():
        raise ModelError(f"{folder} has no config.yaml", "calibrate a run folder of "
                         "`mrimaster train`")
    train_cfg = load_config(TrainConfig, path, resume=None)
    train_cfg.split_file = cfg.split_file or folder / "split.csv"
    if cfg.data_dir:
        train_cfg.data_dir = cfg.data_dir
    return train_cfg


def run_calibration(cfg: CalibrateConfig, settings: Settings) -> dict[str, Any]:
    """Fit and store the trust rule (see the module docstring); returns the report."""
    if str(cfg.model) == "default":
        raise ModelError("refusing to rewrite the shipped default model in place",
                         "calibrate a run folder (`mrimaster train` writes one), then export it")
    path = resolve_model_path(cfg.model, settings.models_dir)
    folder = path.parent
    clf = load_classifier(path)
    train_cfg = _train_config(folder, cfg)
    data_dir = Path(train_cfg.data_dir or settings.data_root / "sartaj-training")
    data = load_split_data(train_cfg, data_dir)
    x_val, y_val = data.part("val")
    if not len(y_val):
        raise DataError(f"{train_cfg.split_file} has no validation images to calibrate on")
    x_train, y_train = data.part("train")
    x_extra, y_extra, _ = load_extra_training(train_cfg, settings)

    logits, feats = predict_logits_and_features(clf.net, x_val)
    train_logits, train_feats = predict_logits_and_features(
        clf.net, np.concatenate([x_train, x_extra]))
    fit_t = fit_temperature(logits, y_val)
    temperature = max(fit_t, 1.0)
    before = calibration_metrics(softmax(logits), y_val)
    probs = softmax(logits, temperature)
    after = calibration_metrics(probs, y_val)

    # presence-only images join the tumour class the network gives them
    train_labels = np.concatenate([y_train, y_extra])
    present = train_labels == PRESENT
    tumour = [i for i, c in enumerate(clf.classes) if c != "no_tumor"]
    train_labels[present] = np.array(tumour)[train_logits[present][:, tumour].argmax(1)]
    distance = FeatureDistance.fit(train_feats, train_labels)
    d_val, d_train = distance.distance(feats), distance.distance(train_feats)
    refer_above = float(np.quantile(d_val, cfg.refer_quantile))
    reject_above = float(cfg.reject_factor * max(d_val.max(), d_train.max()))

    correct = probs.argmax(1) == y_val
    uncertainties, curves = {}, {}
    for method in cfg.methods:
        try:
            uncertainties[method] = uncertainty(method, clf.net, x_val, temperature, probs, feats)
        except MRIMasterError as exc:  # e.g. MC dropout on a network without dropout
            log.info("uncertainty %s skipped: %s", method, exc.message)
            continue
        curves[method] = risk_coverage(uncertainties[method], correct)
    if not curves:
        raise MRIMasterError(f"none of the uncertainty methods {cfg.methods} applies to this "
                             "model", "include softmax")
    lowest = min(rc["aurc"] for rc in curves.values())
    best = next(m for m in COST_ORDER if m in curves
                and curves[m]["aurc"] <= (1 + cfg.aurc_tolerance) * lowest)
    threshold = choose_threshold(uncertainties[best], correct, cfg.target_error)
    accepted = (uncertainties[best] <= threshold) & (d_val <= refer_above)
    clf.temperature = temperature
    clf.referral = {
        "method": best, "threshold": threshold, "target_error": cfg.target_error, "mc": "head",
        "val_coverage": float(accepted.mean()),
        "val_error_accepted": float((~correct[accepted]).mean()) if accepted.any() else 0.0,
    }
    clf.ood = {"distance": distance.to_dict(), "refer_above": refer_above,
               "reject_above": reject_above}
    clf.meta["calibrated_on"] = {"val": int(len(y_val)), "train_features": int(len(train_feats))}
    save_classifier(path, clf)
    report = {"temperature": temperature, "temperature_fitted": fit_t,
              "temperature_rule": "max(fitted on validation, 1): never sharpen",
              "n_val": int(len(y_val)), "val_accuracy": float(correct.mean()),
              "before": {k: v for k, v in before.items() if k != "bins"},
              "after": {k: v for k, v in after.items() if k != "bins"},
              "uncertainty_aurc": {m: strip_curve(rc) for m, rc in curves.items()},
              "chosen_method": best, "referral": clf.referral,
              "ood": {"refer_above": refer_above, "reject_above": reject_above,
                      "refer_quantile": cfg.refer_quantile, "reject_factor": cfg.reject_factor,
                      "n_fit": int(len(train_feats)),
                      "val_distance_p50_p99_max": [float(np.median(d_val)),
                                                   float(np.quantile(d_val, 0.99)),
                                                   float(d_val.max())],
                      "train_distance_max": float(d_train.max())}}
    (folder / "calibration.json").write_text(json.dumps(report, indent=2))
    plot_reliability(before, after, temperature, folder / "reliability_val.png")
    plot_risk_coverage(curves, folder / "risk_coverage_val.png", "Validation split")
    log.info("temperature %.3f (fitted %.3f): val ECE %.4f -> %.4f; uncertainty %s (AURC %.4f);"
             " refer when uncertainty > %.4f or distance > %.2f, reject when distance > %.2f "
             "(val coverage %.1f%%)", temperature, fit_t, before["ece"], after["ece"], best,
             curves[best]["aurc"], threshold, refer_above, reject_above,
             100 * clf.referral["val_coverage"])
    return report

