"""Turn a run folder into a shipped model folder with a model card."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from mrimaster.data.splits import SplitTable
from mrimaster.errors import ModelError

SHIPPED_FILES = ("model.pt", "config.yaml", "split.csv", "history.json", "metrics.json",
                 "curves.png")
OPTIONAL_FILES = ("calibration.json", "reliability_val.png", "risk_coverage_val.png",
                  "explain/sanity.json")
MAX_MODEL_BYTES = 10 * 1024 * 1024


def _table(metrics: dict[str, Any]) -> list[str]:
    lines = ["| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    for label, s in metrics["per_class"].items():
        lines.append(f"| {label} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} | "
                     f"{s['support']} |")
    return lines


def _trust_lines(run_dir: Path, test: dict[str, Any]) -> list[str]:
    """Calibration, referral and sanity-check sections, where the run has them."""
    lines: list[str] = []
    trust = test.get("trust")
    if trust and trust.get("referral"):
        b, a, rc = trust["calibration_before"], trust["calibration_after"], trust["risk_coverage"]
        ref = trust["referral"]
        lines += [
            "## Confidence and referral (held-out test split)", "",
            f"Temperature scaling (Guo et al. 2017) fitted on validation: T = "
            f"{trust['temperature']:.4f}; applied by default.", "",
            "| | ECE (15 bins) | MCE | NLL | Brier | wrong with p > 0.95 |",
            "|---|---:|---:|---:|---:|---:|",
            f"| before (T = 1) | {b['ece']:.4f} | {b['mce']:.4f} | {b['nll']:.4f} | "
            f"{b['brier']:.4f} | {b['wrong_over_0.95']} |",
            f"| after | {a['ece']:.4f} | {a['mce']:.4f} | {a['nll']:.4f} | {a['brier']:.4f} | "
            f"{a['wrong_over_0.95']} |", "",
            f"Uncertainty: `{trust['uncertainty_method']}` (chosen on validation by lowest AURC "
            "among softmax, test-time augmentation and MC dropout; see `calibration.json`). "
            f"AURC {rc['aurc']:.4f}; error at 100% / 90% / 80% coverage "
            f"{rc['error_at_100']:.4f} / {rc['error_at_90']:.4f} / {rc['error_at_80']:.4f}.", "",
            f"Referral rule (threshold {ref['threshold']:.4f} on uncertainty, chosen on "
            "validation for the target error): on test it refers "
            f"{ref['referred']} of {test['n']} images to a radiologist; the error among the "
            f"{1 - ref['referred'] / test['n']:.1%} it keeps is {ref['error_of_accepted']:.4f}.",
            ""]
    sanity = run_dir / "explain" / "sanity.json"  # from `mrimaster explain --sanity-check`
    if sanity.is_file():
        report = json.loads(sanity.read_text())
        lines += [
            "## Grad-CAM sanity check", "",
            f"Model randomisation (Adebayo et al. 2018) on {len(report['spearman'])} test images, "
            f"{report['method']} at the last convolutional layer: mean Spearman rank correlation "
            f"between maps of the trained and the re-initialised network "
            f"{report['mean_spearman']:.3f} (1 would mean the maps ignore the weights).", ""]
    return lines


def model_card(run_dir: Path, command: str) -> str:
    """Markdown model card from a run folder's config, split, history and metrics."""
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = json.loads((run_dir / "history.json").read_text())
    split = SplitTable.load(run_dir / "split.csv")
    counts = {s: len(split.indices(s)) for s in ("train", "val", "test")}
    test, val = metrics["test"], metrics["val"]
    lines = [
        f"# Model card: {cfg['model']} ({run_dir.name})", "",
        f"- **Date exported:** {datetime.now(UTC).date().isoformat()}",
        f"- **Task:** 4-class brain MRI slice classification: {', '.join(test['labels'])}.",
        f"- **Architecture:** `{cfg['model']}`, {cfg['image_size']} px input, "
        f"{'ImageNet-pretrained' if cfg['pretrained'] else 'trained from scratch'}; "
        f"frozen: {cfg['freeze'] or 'nothing'}.",
        "- **Training data:** the Training folder of 'Brain Tumor Classification (MRI)', "
        "S. Bhuvaji et al., Kaggle 2020 (2,870 JPEG slices).",
        f"- **Split:** leakage-free, stratified by class, seed {cfg['seed']}: "
        f"{counts['train']} train / {counts['val']} validation / {counts['test']} test images. "
        f"Near-duplicates (256-bit pHash with flips and 90-degree rotations, <= "
        f"{cfg['dedup_threshold']} bits) are grouped and each group is on one side only. "
        "The split is `split.csv` beside this card.",
        f"- **Command:** `{command}`",
        f"- **Epochs run:** {len(history)} (best validation macro F1 at epoch "
        f"{metrics['summary']['best_epoch']}); curves in `curves.png`.", "",
        "## Held-out test split (never used for training or model selection)", "",
        f"- accuracy **{test['accuracy']:.4f}**, macro F1 **{test['macro_f1']:.4f}**, "
        f"NLL {test['nll']:.4f}, n = {test['n']}", "", *_table(test), "",
        "Confusion matrix (rows true, columns predicted, order as above):", "",
        *[f"    {row}" for row in test["confusion_matrix"]], "",
        "## Validation split (used for checkpoint selection)", "",
        f"- accuracy {val['accuracy']:.4f}, macro F1 {val['macro_f1']:.4f}, n = {val['n']}", "",
        *_trust_lines(run_dir, test), "## Limits", "",
        "- Trained on one public dataset of mixed planes and sequences, without patient IDs; "
        "near-duplicate grouping approximates patient-level separation but cannot guarantee it.",
        "- Not a medical device. Every output is to be reviewed by a doctor.",
    ]
    return "\n".join(lines) + "\n"


def export_run(run_dir: Path, out_dir: Path, command: str) -> Path:
    """Copy a run's model and records into ``out_dir`` and write ``MODEL_CARD.md``."""
    missing = [n for n in SHIPPED_FILES if not (run_dir / n).is_file()]
    if missing:
        raise ModelError(f"run folder {run_dir} lacks {', '.join(missing)}",
                         "export a finished run of `mrimaster train`")
    size = (run_dir / "model.pt").stat().st_size
    if size > MAX_MODEL_BYTES:
        raise ModelError(f"model.pt is {size / 2**20:.1f} MB; shipped models must be <= 10 MB")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED_FILES + OPTIONAL_FILES:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, out_dir / Path(name).name)
    (out_dir / "MODEL_CARD.md").write_text(model_card(run_dir, command))
    return out_dir
