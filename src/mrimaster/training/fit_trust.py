"""Calibrate a trained classifier: temperature, uncertainty estimator, OOD distance, referral.

Everything is fitted on the run's own parts of its split: the feature distance on the images it
was trained on, the temperature, estimator and thresholds on its validation part. Nothing is
fitted on the test or source-held-out parts, or on the ``report`` part of a presence-only set.

Rules (fixed in advance, not tuned on any check):

- **Temperature** (``temperature_rule``), fitted by NLL (Guo et al., ICML 2017) and shipped
  as fitted, sharpening or softening: ``shift-aware`` (the default) on the validation images
  together with :data:`SHIFT_DRAWS` copies of them under the ``shift`` training augmentation
  (scanner-like contrast curves, resolution, noise, JPEG, crops); ``validation`` on the
  validation images alone. Validation comes from the training sources, where the network is
  most accurate, and Ovadia et al. (NeurIPS 2019) found temperature scaling fitted there the
  least reliable under shift; the shifted copies make the fit see images the network is less
  sure of. Both temperatures are reported. (Earlier models shipped ``max(T_val, 1)``, a floor
  that hid the network's under-confidence; see the model card's ECE table.) Unlike the other
  rules here, ``shift-aware`` became the default after comparing both rules' ECE on the
  shipped classifier's ``shift`` part (0.031 against 0.041), a choice the check informed.
- **Uncertainty estimator**: among the estimators that cost at most ``max_passes`` network
  passes per image (2: every trust field at no more than twice a single pass), the cheapest
  whose validation AURC is within ``aurc_tolerance`` (10%) of the lowest; all are measured and
  reported. The referral threshold (``threshold_rule``): ``empirical``, the largest that keeps
  the validation error of the accepted images within ``target_error``; or ``sgr``, selection
  with guaranteed risk (:mod:`mrimaster.trust.selective`): the largest whose binomial upper
  bound of that error, at confidence ``1 - delta``, is below ``target_error``. The report
  gives SGR's choice either way.
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
from mrimaster.data.transforms import augmented_views
from mrimaster.errors import DataError, ModelError, MRIMasterError
from mrimaster.inference.runtime import Runtime, softmax
from mrimaster.models.checkpoint import load_classifier, save_classifier
from mrimaster.models.paths import refuse_shipped, resolve_model_path
from mrimaster.runs.data_roots import dataset_dir
from mrimaster.settings import Settings
from mrimaster.training.config import TrainConfig
from mrimaster.training.data import PRESENT, load_extra_training, load_split_data
from mrimaster.trust.calibration import calibration_metrics, fit_temperature
from mrimaster.trust.figures import plot_reliability, plot_risk_coverage
from mrimaster.trust.ood import FeatureDistance
from mrimaster.trust.report import strip_curve
from mrimaster.trust.selective import sgr_threshold
from mrimaster.trust.uncertainty import (
    PASSES,
    UNCERTAINTY_METHODS,
    choose_threshold,
    risk_coverage,
    uncertainty,
)

log = logging.getLogger(__name__)


@dataclass
class CalibrateConfig:
    """Inputs of ``mrimaster models calibrate``.

    Attributes:
        model: Run folder or model file (updated in place; the shipped ``default`` is refused).
        data_dir: The dataset the split refers to (default: from the run's config).
        split_file: ``split.csv`` (default: beside the model file).
        target_error: Error rate allowed among predictions that are not referred.
        methods: Uncertainty estimators to compare.
        aurc_tolerance: A cheaper estimator is kept if its AURC is within this relative margin
            of the best one's.
        max_passes: Most network passes per image an estimator may cost (see
            :data:`mrimaster.trust.uncertainty.PASSES`).
        write_shipped: Allow ``model`` to lie in the shipped models folder.
        refer_quantile: Validation quantile of the feature distance above which to refer.
        reject_factor: Reject above this multiple of the largest known MRI distance.
        threshold_rule: ``empirical`` or ``sgr`` (see the module docstring).
        delta: SGR's confidence parameter: its bound holds with probability ``1 - delta``.
        temperature_rule: ``shift-aware`` or ``validation`` (see the module docstring).
    """

    model: str
    data_dir: Path | None = None
    split_file: Path | None = None
    target_error: float = 0.03
    methods: list[str] = field(default_factory=lambda: list(UNCERTAINTY_METHODS))
    aurc_tolerance: float = 0.1
    max_passes: int = 2
    write_shipped: bool = False
    refer_quantile: float = 0.99
    reject_factor: float = 1.5
    threshold_rule: str = "empirical"
    delta: float = 0.05
    temperature_rule: str = "shift-aware"


THRESHOLD_RULES = ("empirical", "sgr")
TEMPERATURE_RULES = {
    "shift-aware": "fitted on validation plus its copies under the shift augmentation",
    "validation": "fitted on validation"}
SHIFT_DRAWS = 3
"""Augmented copies of each validation image in the ``shift-aware`` temperature fit."""


def train_config_of(folder: Path, cfg: CalibrateConfig) -> TrainConfig:
    path = folder / "config.yaml"
    if not path.is_file():
        raise ModelError(f"{folder} has no config.yaml", "calibrate a run folder of "
                         "`mrimaster train`")
    train_cfg = load_config(TrainConfig, path, resume=None)
    train_cfg.split_file = cfg.split_file or folder / "split.csv"
    if cfg.data_dir:
        train_cfg.data_dir = cfg.data_dir
    return train_cfg


@dataclass
class CalibrationData:
    """The run's own images for calibration: validation (labelled) and fit (train + extra)."""

    x_val: np.ndarray
    y_val: np.ndarray
    x_fit: np.ndarray
    y_fit: np.ndarray
    """Class per fit image; :data:`PRESENT` for presence-only images."""
    x_test: np.ndarray
    y_test: np.ndarray
    """The held-out test part: never fitted on, only reported (e.g. by the ONNX export)."""


def load_calibration_data(folder: Path, cfg: CalibrateConfig, settings: Settings
                          ) -> CalibrationData:
    """Read the run's validation and training images (see :func:`load_split_data`)."""
    train_cfg = train_config_of(folder, cfg)
    data_dir = dataset_dir(train_cfg.data_dir, settings)
    data = load_split_data(train_cfg, data_dir)
    x_val, y_val = data.part("val")
    if not len(y_val):
        raise DataError(f"{train_cfg.split_file} has no validation images to calibrate on")
    x_train, y_train = data.part("train")
    x_extra, y_extra, _ = load_extra_training(train_cfg, settings)
    x_test, y_test = data.part("test")
    return CalibrationData(x_val, y_val, np.concatenate([x_train, x_extra]),
                           np.concatenate([y_train, y_extra]), x_test, y_test)


@dataclass
class TrustFit:
    """What :func:`fit_trust` fitted: the model fields and the report."""

    temperature: float
    referral: dict[str, Any]
    ood: dict[str, Any]
    report: dict[str, Any]
    curves: dict[str, dict[str, Any]]
    before: dict[str, Any]
    after: dict[str, Any]


def fit_temperatures(runtime: Runtime, logits: np.ndarray, data: CalibrationData
                     ) -> dict[str, float]:
    """The temperature of each of :data:`TEMPERATURE_RULES` for ``runtime``.

    Args:
        logits: ``(N, C)`` the runtime's validation logits (of ``data.x_val``).
    """
    shifted = augmented_views(data.x_val, "shift", SHIFT_DRAWS)
    shifted_logits = runtime.forward(shifted)[0] if len(shifted) else logits[:0]
    return {"validation": fit_temperature(logits, data.y_val),
            "shift-aware": fit_temperature(np.concatenate([logits, shifted_logits]),
                                           np.tile(data.y_val, SHIFT_DRAWS + 1))}


def fit_trust(runtime: Runtime, classes: list[str], data: CalibrationData,
              cfg: CalibrateConfig) -> TrustFit:
    """Fit temperature, estimator, referral threshold and feature distance for ``runtime``.

    Raises:
        MRIMasterError: no uncertainty method within the budget applies to the model.
    """
    logits, feats = runtime.forward(data.x_val)
    train_logits, train_feats = runtime.forward(data.x_fit)
    y_val = data.y_val
    if cfg.temperature_rule not in TEMPERATURE_RULES:
        raise MRIMasterError(f"unknown temperature rule {cfg.temperature_rule!r}",
                             f"choose one of: {', '.join(TEMPERATURE_RULES)}")
    temperatures = fit_temperatures(runtime, logits, data)
    temperature = temperatures[cfg.temperature_rule]
    before = calibration_metrics(softmax(logits), y_val)
    probs = softmax(logits, temperature)
    after = calibration_metrics(probs, y_val)

    # presence-only images join the tumour class the network gives them
    train_labels = data.y_fit.copy()
    present = train_labels == PRESENT
    tumour = [i for i, c in enumerate(classes) if c != "no_tumor"]
    train_labels[present] = np.array(tumour)[train_logits[present][:, tumour].argmax(1)]
    distance = FeatureDistance.fit(train_feats, train_labels)
    d_val, d_train = distance.distance(feats), distance.distance(train_feats)
    refer_above = float(np.quantile(d_val, cfg.refer_quantile))
    reject_above = float(cfg.reject_factor * max(d_val.max(), d_train.max()))

    correct = probs.argmax(1) == y_val
    uncertainties, curves = {}, {}
    for method in cfg.methods:
        try:
            uncertainties[method] = uncertainty(method, runtime, data.x_val, temperature,
                                                logits, feats)
        except MRIMasterError as exc:  # e.g. MC dropout on a network without dropout
            log.info("uncertainty %s skipped: %s", method, exc.message)
            continue
        curves[method] = risk_coverage(uncertainties[method], correct)
    affordable = {m: rc for m, rc in curves.items() if PASSES[m] <= cfg.max_passes}
    if not affordable:
        raise MRIMasterError(f"none of the uncertainty methods {cfg.methods} within "
                             f"{cfg.max_passes} passes applies to this model", "include softmax")
    lowest = min(rc["aurc"] for rc in affordable.values())
    best = min((m for m, rc in affordable.items()
                if rc["aurc"] <= (1 + cfg.aurc_tolerance) * lowest), key=lambda m: PASSES[m])
    if cfg.threshold_rule not in THRESHOLD_RULES:
        raise MRIMasterError(f"unknown threshold rule {cfg.threshold_rule!r}",
                             f"choose one of: {', '.join(THRESHOLD_RULES)}")
    if not (0 < cfg.target_error < 1 and 0 < cfg.delta < 1):
        raise MRIMasterError(f"the target error ({cfg.target_error}) and delta ({cfg.delta}) "
                             "must each lie strictly between 0 and 1",
                             "e.g. --target-error 0.03 --delta 0.05")
    guaranteed = sgr_threshold(uncertainties[best], correct, cfg.target_error, cfg.delta)
    threshold = guaranteed.threshold if cfg.threshold_rule == "sgr" else \
        choose_threshold(uncertainties[best], correct, cfg.target_error)
    accepted = (uncertainties[best] <= threshold) & (d_val <= refer_above)
    referral = {
        "method": best, "threshold": threshold, "target_error": cfg.target_error, "mc": "head",
        "rule": cfg.threshold_rule, "delta": cfg.delta, "passes": PASSES[best],
        "temperature_rule": cfg.temperature_rule,
        "val_coverage": float(accepted.mean()),
        "val_error_accepted": float((~correct[accepted]).mean()) if accepted.any() else 0.0,
    }
    ood = {"distance": distance.to_dict(), "refer_above": refer_above,
           "reject_above": reject_above}
    report = {"temperature": temperature, "temperature_fitted": temperatures["validation"],
              "temperature_shift_aware": temperatures["shift-aware"],
              "temperature_rule": f"{cfg.temperature_rule}: "
                                  f"{TEMPERATURE_RULES[cfg.temperature_rule]}",
              "n_val": int(len(y_val)), "val_accuracy": float(correct.mean()),
              "before": {k: v for k, v in before.items() if k != "bins"},
              "after": {k: v for k, v in after.items() if k != "bins"},
              "uncertainty_aurc": {m: dict(strip_curve(rc), passes=PASSES[m])
                                   for m, rc in curves.items()},
              "max_passes": cfg.max_passes, "chosen_method": best, "referral": referral,
              "sgr": guaranteed.as_dict(),
              "ood": {"refer_above": refer_above, "reject_above": reject_above,
                      "refer_quantile": cfg.refer_quantile, "reject_factor": cfg.reject_factor,
                      "n_fit": int(len(train_feats)),
                      "val_distance_p50_p99_max": [float(np.median(d_val)),
                                                   float(np.quantile(d_val, 0.99)),
                                                   float(d_val.max())],
                      "train_distance_max": float(d_train.max())}}
    return TrustFit(temperature, referral, ood, report, curves, before, after)


def run_calibration(cfg: CalibrateConfig, settings: Settings) -> dict[str, Any]:
    """Fit and store the trust rule (see the module docstring); returns the report."""
    if str(cfg.model) == "default":
        raise ModelError("refusing to rewrite the shipped default model in place",
                         "calibrate a run folder (`mrimaster train` writes one), then export it")
    path = resolve_model_path(cfg.model, settings.models_dir)
    refuse_shipped(path, settings.models_dir, cfg.write_shipped)
    folder = path.parent
    clf = load_classifier(path)
    data = load_calibration_data(folder, cfg, settings)
    fit = fit_trust(clf.runtime, clf.classes, data, cfg)
    clf.temperature, clf.referral, clf.ood = fit.temperature, fit.referral, fit.ood
    clf.meta["calibrated_on"] = {"val": int(len(data.y_val)),
                                 "train_features": int(len(data.y_fit))}
    save_classifier(path, clf)
    report = fit.report
    (folder / "calibration.json").write_text(json.dumps(report, indent=2))
    plot_reliability(fit.before, fit.after, fit.temperature, folder / "reliability_val.png")
    plot_risk_coverage(fit.curves, folder / "risk_coverage_val.png", "Validation split")
    best = fit.referral["method"]
    log.info("temperature %.3f (fitted %.3f): val ECE %.4f -> %.4f; uncertainty %s (AURC %.4f);"
             " refer when uncertainty > %.4f or distance > %.2f, reject when distance > %.2f "
             "(val coverage %.1f%%)", fit.temperature, report["temperature_fitted"],
             fit.before["ece"], fit.after["ece"], best, fit.curves[best]["aurc"],
             fit.referral["threshold"], fit.ood["refer_above"], fit.ood["reject_above"],
             100 * fit.referral["val_coverage"])
    return report
