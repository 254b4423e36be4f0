"""Train a deep ensemble with one recipe, then fit its pooled calibration and referral rule.

A training config with ``members`` (a list of per-member overrides of the recipe, e.g. other
seeds and augmentation strengths) trains each member as an ordinary run (trained, calibrated
and checked like any single model), then fits the ensemble on the members' shared validation
part (:mod:`mrimaster.trust.ensemble`): the pooled temperature (NLL), the uncertainty score with
the lowest validation AURC among :data:`mrimaster.trust.ensemble.SCORES`, and the referral
threshold: the largest whose validation error among accepted images is at most
``target_error`` (the single model's rule), and selection with guaranteed risk's choice at
``delta`` beside it. Nothing is fitted on the test part; its figures are reported.

Run folder::

    RUN/config.yaml            the recipe, members listed
    RUN/members/K/             member K's run folder (``mrimaster train``'s usual contents)
    RUN/ensemble.json          members, pooled temperature, score, threshold, figures
    RUN/risk_coverage_val.png  the ensemble's scores and each member's softmax, validation

An interrupted recipe continues where it stopped: a member whose folder is complete is kept, one
with a ``last.pt`` resumes. Every member must share the split (same ``split_file``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from mrimaster.config import save_config
from mrimaster.errors import ConfigError, DataError
from mrimaster.models.checkpoint import load_classifier
from mrimaster.settings import Settings
from mrimaster.training.config import TrainConfig
from mrimaster.training.fit_trust import CalibrateConfig, CalibrationData, load_calibration_data
from mrimaster.trust.calibration import calibration_metrics, fit_temperature
from mrimaster.trust.ensemble import (
    SCORES,
    ensemble_scores,
    member_probs,
    pooled_logits,
)
from mrimaster.trust.figures import plot_risk_coverage
from mrimaster.trust.report import strip_curve
from mrimaster.trust.selective import sgr_threshold
from mrimaster.trust.uncertainty import choose_threshold, risk_coverage

log = logging.getLogger(__name__)
TARGET_ERROR = 0.03
DELTA = 0.05


def member_configs(cfg: TrainConfig, run_dir: Path) -> list[TrainConfig]:
    """One config per member: the recipe with the member's overrides, writing into
    ``run_dir/members/K``.

    Raises:
        ConfigError: fewer than two members, an override of an unknown key or of ``members``,
            ``out_dir`` or ``resume``.
    """
    if len(cfg.members) < 2:
        raise ConfigError(f"an ensemble needs at least 2 members, the recipe lists "
                          f"{len(cfg.members)}")
    known = set(TrainConfig.__dataclass_fields__) - {"members", "out_dir", "resume"}
    out = []
    for k, overrides in enumerate(cfg.members):
        if not isinstance(overrides, dict):
            raise ConfigError(f"member {k}: {overrides!r} is not a mapping of overrides",
                              "write each member as e.g. {seed: 1, augment: shift}")
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"member {k}: unknown or forbidden keys {unknown}",
                              f"use keys of the training config: {', '.join(sorted(known))}")
        out.append(replace(cfg, **overrides, members=[], resume=None,
                           out_dir=run_dir / "members" / str(k)))
    return out


def _member_done(folder: Path, calibrate: bool) -> bool:
    return (folder / ("checks.json" if calibrate else "metrics.json")).is_file()


def run_ensemble_training(cfg: TrainConfig, settings: Settings) -> Path:
    """Train (or finish) every member, then :func:`fit_ensemble`; returns the run folder."""
    from mrimaster.training.train import run_training

    run_dir = cfg.out_dir or settings.runs_dir / (
        f"ensemble-{cfg.model}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}")
    members = member_configs(cfg, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(replace(cfg, resume=None, out_dir=None), run_dir / "config.yaml")
    for k, member in enumerate(members):
        folder = run_dir / "members" / str(k)
        if _member_done(folder, cfg.calibrate):
            log.info("member %d of %d: already trained, kept (%s)", k + 1, len(members), folder)
            continue
        if (folder / "last.pt").is_file():
            member = replace(member, resume=folder)
        log.info("member %d of %d: %s", k + 1, len(members), cfg.members[k])
        run_training(member, settings)
    if cfg.calibrate:
        fit_ensemble(run_dir, settings)
    return run_dir


def _member_logits(folders: list[Path], settings: Settings
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(val logits (M, N, C), val labels, test logits (M, K, C), test labels, member
    temperatures (M,))``, each member on its own image size."""
    cache: dict[int, CalibrationData] = {}
    val, test, temps = [], [], []
    y_val: np.ndarray | None = None
    y_test: np.ndarray | None = None
    for folder in folders:
        clf = load_classifier(folder / "model.pt")
        if clf.image_size not in cache:
            cache[clf.image_size] = load_calibration_data(folder, CalibrateConfig(str(folder)),
                                                          settings)
        data = cache[clf.image_size]
        if y_val is not None and y_test is not None and not (
                np.array_equal(y_val, data.y_val) and np.array_equal(y_test, data.y_test)):
            raise DataError(f"{folder} was trained on another split than the first member",
                            "give every member the same split_file")
        y_val, y_test = data.y_val, data.y_test
        val.append(clf.runtime.forward(data.x_val)[0])
        test.append(clf.runtime.forward(data.x_test)[0])
        temps.append(clf.temperature)
    assert y_val is not None and y_test is not None
    return np.stack(val), y_val, np.stack(test), y_test, np.array(temps)


def _figures(q: np.ndarray, labels: np.ndarray, scores: dict[str, np.ndarray],
             threshold: float, score: str) -> dict[str, Any]:
    """Accuracy, calibration, each score's risk-coverage and the rule's coverage and error."""
    correct = q.argmax(1) == labels
    accepted = scores[score] <= threshold
    cal = calibration_metrics(q, labels)
    return {"n": int(len(labels)), "accuracy": float(correct.mean()), "ece": cal["ece"],
            "nll": cal["nll"], "wrong_over_0.95": cal["wrong_over_0.95"],
            "coverage": float(accepted.mean()),
            "error_of_accepted": float((~correct[accepted]).mean()) if accepted.any() else 0.0,
            "risk_coverage": {s: strip_curve(risk_coverage(u, correct))
                              for s, u in scores.items()}}


def fit_ensemble(run_dir: Path, settings: Settings, target_error: float = TARGET_ERROR,
                 delta: float = DELTA) -> dict[str, Any]:
    """Fit the pooled temperature, score and threshold on validation; write ``ensemble.json``
    and ``risk_coverage_val.png`` (see the module docstring); returns the report."""
    folders = sorted((p for p in (run_dir / "members").iterdir() if (p / "model.pt").is_file()),
                     key=lambda p: int(p.name))
    if len(folders) < 2:
        raise DataError(f"{run_dir / 'members'} holds {len(folders)} trained member(s)",
                        "train the ensemble with `mrimaster train --config` and `members`")
    val_logits, y_val, test_logits, y_test, temps = _member_logits(folders, settings)
    val_probs = member_probs(val_logits, temps)
    temperature = fit_temperature(pooled_logits(val_probs), y_val)
    q_val, val_scores = ensemble_scores(val_probs, temperature)
    correct = q_val.argmax(1) == y_val
    curves = {s: risk_coverage(u, correct) for s, u in val_scores.items()}
    score = min(SCORES, key=lambda s: curves[s]["aurc"])
    threshold = choose_threshold(val_scores[score], correct, target_error)
    guaranteed = sgr_threshold(val_scores[score], correct, target_error, delta)
    members = []
    test_probs = member_probs(test_logits, temps)
    q_test, test_scores = ensemble_scores(test_probs, temperature)
    for k, folder in enumerate(folders):
        single = {}
        for part, p, y in (("val", val_probs[k], y_val), ("test", test_probs[k], y_test)):
            ok = p.argmax(1) == y
            rc = risk_coverage(1 - p.max(1), ok)
            single[part] = {"accuracy": float(ok.mean()),
                            "ece": calibration_metrics(p, y)["ece"],
                            "softmax_aurc": rc["aurc"]}
            if part == "val":
                curves[f"member {folder.name} softmax"] = rc
        members.append({"folder": str(folder.relative_to(run_dir)),
                        "temperature": float(temps[k]), "single_pass_softmax": single})
    report: dict[str, Any] = {
        "members": members, "overrides": _overrides(run_dir),
        "pooling": "mean of the members' calibrated probabilities, then one temperature",
        "temperature": temperature,
        "score": score, "scores": list(SCORES), "threshold": threshold,
        "target_error": target_error, "sgr": guaranteed.as_dict(),
        "val": _figures(q_val, y_val, val_scores, threshold, score),
        "test": _figures(q_test, y_test, test_scores, threshold, score),
        "passes": len(folders),
    }
    (run_dir / "ensemble.json").write_text(json.dumps(report, indent=2))
    plot_risk_coverage(curves, run_dir / "risk_coverage_val.png",
                       f"ensemble of {len(folders)}: risk-coverage on validation")
    log.info("ensemble of %d: T %.3f, score %s, threshold %.4f; validation accuracy %.3f, "
             "coverage %.3f, error %.3f; test accuracy %.3f", len(folders), temperature, score,
             threshold, report["val"]["accuracy"], report["val"]["coverage"],
             report["val"]["error_of_accepted"], report["test"]["accuracy"])
    return report


def _overrides(run_dir: Path) -> list[dict[str, Any]]:
    import yaml

    path = run_dir / "config.yaml"
    members = yaml.safe_load(path.read_text()).get("members", []) if path.is_file() else []
    return list(members)
