"""Evaluate a classifier on a class-per-folder dataset: metrics, report, plots, predictions."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mrimaster.data.folders import SliceSet, load_class_folders, load_slices
from mrimaster.data.presence import is_presence_dataset
from mrimaster.data.splits import SplitTable
from mrimaster.device import inference_device
from mrimaster.errors import DataError
from mrimaster.evaluation.metrics import classification_metrics
from mrimaster.evaluation.plots import plot_confusion, plot_gallery
from mrimaster.evaluation.presence import evaluate_presence
from mrimaster.explain.figures import cam_gallery
from mrimaster.models.checkpoint import Classifier, load_classifier
from mrimaster.models.paths import resolve_model_path
from mrimaster.settings import Settings
from mrimaster.trust.figures import plot_reliability, plot_risk_coverage
from mrimaster.trust.referral import Assessment, TrustRule, assess
from mrimaster.trust.report import labelled_trust


@dataclass
class EvaluateConfig:
    """Inputs of ``mrimaster evaluate``.

    Attributes:
        model: Run folder, model file, or ``default``.
        data_dir: Class-per-folder dataset to evaluate on.
        out_dir: Folder to write results into.
        batch_size: Images per forward pass.
        gallery_size: Most misclassified images to show (highest confidence first).
        split_file: Evaluate only the images of one part of this ``split.csv``.
        part: That part (``train``, ``val``, ``test``, ``shift``; ``fit``/``report`` for a
            presence-only set). Default: ``test``, or ``report`` for a presence-only set.
        device: ``auto`` (a CUDA GPU when there is one), ``cpu`` or ``cuda``.
    """

    model: str
    data_dir: Path
    out_dir: Path
    batch_size: int = 64
    gallery_size: int = 24
    split_file: Path | None = None
    part: str | None = None
    device: str = "auto"


def markdown_report(metrics: dict[str, Any], title: str) -> str:
    """A markdown table of per-class precision / recall / F1 and the headline numbers."""
    lines = [f"# {title}", "", f"- images: {metrics['n']}",
             f"- accuracy: {metrics['accuracy']:.4f}", f"- macro F1: {metrics['macro_f1']:.4f}",
             "", "| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    for label, s in metrics["per_class"].items():
        lines.append(f"| {label} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} | "
                     f"{s['support']} |")
    lines += ["", "Confusion matrix (rows true, columns predicted): "
              + ", ".join(metrics["labels"]), ""]
    lines += ["    " + " ".join(f"{v:5d}" for v in row) for row in metrics["confusion_matrix"]]
    return "\n".join(lines) + "\n"


def write_evaluation(out_dir: Path, metrics: dict[str, Any], probs: np.ndarray,
                     y_true: np.ndarray, paths: list[Path], images: np.ndarray,
                     classes: list[str], title: str, gallery_size: int = 24,
                     extra_columns: dict[str, np.ndarray] | None = None) -> None:
    """Write metrics.json, report.md, confusion_matrix.png, misclassified.png, predictions.csv."""
    extra_columns = extra_columns or {}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out_dir / "report.md").write_text(markdown_report(metrics, title))
    plot_confusion(np.array(metrics["confusion_matrix"]), classes,
                   out_dir / "confusion_matrix.png", title)
    pred = probs.argmax(axis=1)
    with open(out_dir / "predictions.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "true", "predicted", "confidence", "correct",
                         *[f"p_{c}" for c in classes], *extra_columns])
        for i, path in enumerate(paths):
            writer.writerow([str(path), classes[y_true[i]], classes[pred[i]],
                             f"{probs[i].max():.6f}", int(pred[i] == y_true[i]),
                             *[f"{p:.6f}" for p in probs[i]],
                             *[_fmt(col[i]) for col in extra_columns.values()]])
    wrong = np.flatnonzero(pred != y_true)
    wrong = wrong[np.argsort(-probs[wrong].max(axis=1))][:gallery_size]
    plot_gallery([images[i] for i in wrong],
                 [f"true {classes[y_true[i]]}\npred {classes[pred[i]]} ({probs[i].max():.2f})"
                  for i in wrong], out_dir / "misclassified.png",
                 f"Misclassified ({len(np.flatnonzero(pred != y_true))} of {len(pred)}), "
                 "most confident first")


def _fmt(value: Any) -> str:
    if isinstance(value, np.bool_ | bool):
        return str(int(value))
    if isinstance(value, str):
        return value
    return f"{value:.6f}" if isinstance(value, float | np.floating) else str(value)


def load_part(data_dir: Path, table: SplitTable, part: str, image_size: int,
              progress: bool = True) -> SliceSet:
    """Decode the labelled images of one part of a split.

    Raises:
        DataError: the part is empty.
    """
    rows = table.indices(part)
    if not rows:
        raise DataError(f"the split has no {part!r} images", "use --part train, val, test or "
                        "shift")
    labels: list[str | None] = [table.labels[i] for i in rows]
    return load_slices([Path(data_dir) / table.paths[i] for i in rows], labels, image_size,
                       progress=progress)


def labelled_evaluation(clf: Classifier, data: SliceSet, batch_size: int = 64
                        ) -> tuple[dict[str, Any], Assessment, dict[str, Any]]:
    """Classification metrics plus the trust report (``metrics["trust"]``) on labelled slices.

    Returns:
        ``(metrics, assessment, arrays)``: ``arrays`` holds the calibration and risk-coverage
        details for plotting (see :func:`mrimaster.trust.report.labelled_trust`).

    Raises:
        DataError: a label the model does not know.
    """
    unknown = {lab for lab in data.labels if lab not in clf.classes}
    if unknown:
        raise DataError(f"the model does not know the classes {sorted(map(str, unknown))}")
    labels = np.array([clf.classes.index(lab or "") for lab in data.labels])
    rule = TrustRule.of(clf)
    result = assess(clf.runtime, rule, data.images, data.stats, batch_size)
    metrics = classification_metrics(labels, result.probs, clf.classes)
    metrics["trust"], arrays = labelled_trust(result, labels, rule.temperature, rule.method)
    return metrics, result, arrays


def run_evaluation(cfg: EvaluateConfig, settings: Settings) -> dict[str, Any]:
    """Evaluate ``cfg.model`` on ``cfg.data_dir`` and write the results to ``cfg.out_dir``.

    A class-per-folder dataset gets the classification report, the trust fields of every
    prediction (status, reason, uncertainty, feature distance), calibration
    (``reliability.png``) and selective-prediction (``risk_coverage.png``) figures and a
    Grad-CAM gallery of the misclassified images. A presence-only dataset (all tumours, type
    unknown) gets :func:`mrimaster.evaluation.presence.evaluate_presence` instead.

    Returns:
        The metrics written to ``metrics.json``.
    """
    model_path = resolve_model_path(cfg.model, settings.models_dir)
    clf = load_classifier(model_path, inference_device(cfg.device))
    presence = is_presence_dataset(Path(cfg.data_dir))
    part = cfg.part or ("report" if presence else "test")
    if presence:
        metrics = evaluate_presence(clf, Path(cfg.data_dir), cfg.split_file, part,
                                    Path(cfg.out_dir), cfg.batch_size, cfg.gallery_size)
        metrics["model"] = str(model_path)
        (Path(cfg.out_dir) / "metrics.json").write_text(json.dumps(metrics, indent=2))
        return metrics
    data = load_class_folders(Path(cfg.data_dir), clf.image_size) if cfg.split_file is None \
        else load_part(Path(cfg.data_dir), SplitTable.load(cfg.split_file), part,
                       clf.image_size)
    if not data.paths:
        raise DataError("none of the images could be read", "see the skipped files above")
    metrics, result, arrays = labelled_evaluation(clf, data, cfg.batch_size)
    probs = result.probs
    y_model = np.array([clf.classes.index(lab or "") for lab in data.labels])
    metrics["model"] = str(model_path)
    metrics["data"] = str(cfg.data_dir)
    metrics["part"] = part if cfg.split_file else "all"
    metrics["skipped"] = [{"path": str(s.path), "reason": s.reason} for s in data.skipped]
    out = Path(cfg.out_dir)
    title = f"{clf.arch} on {Path(cfg.data_dir).name}" + (f" ({part})" if cfg.split_file
                                                          else "")
    write_evaluation(out, metrics, probs, y_model, data.paths, data.images, clf.classes, title,
                     cfg.gallery_size, {"status": np.array(result.status, dtype=object),
                                        "reason": np.array(result.reason, dtype=object),
                                        "uncertainty": result.uncertainty,
                                        "distance": result.distance})
    plot_reliability(arrays["before"], arrays["after"], clf.temperature, out / "reliability.png")
    plot_risk_coverage({metrics["trust"]["uncertainty_method"]: arrays["rc"]},
                       out / "risk_coverage.png", title)
    wrong = np.flatnonzero(probs.argmax(1) != y_model)
    wrong = wrong[np.argsort(-probs[wrong].max(axis=1))][:cfg.gallery_size]
    cam_gallery(clf, data.images[wrong], y_model[wrong], probs[wrong],
                out / "misclassified_gradcam.png")
    return metrics
