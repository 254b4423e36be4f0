"""Turn a segmentation run into a shipped model folder with a model card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from mrimaster.errors import ModelError
from mrimaster.segmentation.evaluate import markdown_table
from mrimaster.training.export import MAX_MODEL_BYTES, exported_line, run_lines


def export_seg_run(run_dir: Path, evaluation_dir: Path, out_dir: Path, command: str) -> Path:
    """Copy model, config, history and curves; write ``MODEL_CARD.md`` with the held-out
    evaluation found in ``evaluation_dir/metrics.json`` (from ``mrimaster seg evaluate``)."""
    names = ("model.pt", "config.yaml", "history.json", "curves.png")
    missing = [n for n in names if not (run_dir / n).is_file()]
    if missing or not (evaluation_dir / "metrics.json").is_file():
        raise ModelError(f"missing {missing or 'evaluation metrics.json'}",
                         "export a finished `mrimaster seg train` run and its evaluation")
    if (run_dir / "model.pt").stat().st_size > MAX_MODEL_BYTES:
        raise ModelError("model.pt is over 10 MB")
    out_dir.mkdir(parents=True, exist_ok=True)
    for n in (*names, "run.json"):
        if (run_dir / n).is_file():
            shutil.copy2(run_dir / n, out_dir / n)
    shutil.copy2(evaluation_dir / "metrics.json", out_dir / "heldout_metrics.json")
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    metrics = json.loads((evaluation_dir / "metrics.json").read_text())
    history = json.loads((run_dir / "history.json").read_text())
    best = max(history, key=lambda r: r["val_score"])
    held_out = list(metrics["per_case"])
    lines = [
        "# Model card: 3D U-Net tumour segmentation (seg-default)", "",
        exported_line(),
        *run_lines(json.loads((run_dir / "run.json").read_text())
                   if (run_dir / "run.json").is_file() else None),
        f"- **Inputs:** {', '.join(cfg['modalities'])} (z-scored inside the brain, cropped to "
        f"it); trained with modality dropout {cfg['modality_dropout']}, so a case missing all "
        "but one of them still runs (with a warning). Output: WT / TC / ET, written as BraTS "
        "2021 labels on the input grid.",
        f"- **Network:** MONAI residual UNet, channels {cfg['channels']}, instance norm; "
        f"patches {cfg['patch']}, sliding-window inference (Gaussian blending, overlap 0.25); "
        "whole-tumour components under 10% of the largest are removed and ET / TC are nested "
        "inside TC / WT.",
        "- **Data:** the shared brats-mini cases: BraTS 2015 (2013 subset) from DeepMedic's "
        "examples (FLAIR, T1c, 4-class labels; Menze et al. 2015, Kamnitsas et al. 2017) and "
        "BraTS 2018 from DeepVoxNet2's demo (FLAIR, whole-tumour labels only; Bakas et al. "
        "2017, 2018).",
        f"- **Training cases ({len(cfg['train_cases'])}):** " + ", ".join(cfg["train_cases"]),
        "- **Validation cases (checkpoint selection):** " + ", ".join(cfg["val_cases"]),
        f"- **Held-out cases (never seen in training or selection):** {', '.join(held_out)}",
        f"- **Command:** `{command}`",
        f"- **Epochs:** {len(history)}, best mean validation Dice at epoch {best['epoch']}; "
        "`curves.png`.", "",
        "## Held-out evaluation (Dice, HD95 in mm; BraTS conventions for empty masks)", "",
        markdown_table(metrics), "",
        "WT-only cases (DeepVoxNet2, BraTS 2018) are scored on WT alone; cases without T1-Gd "
        "are segmented from FLAIR alone. "
        "Missing modalities per case: " + json.dumps(metrics["missing_modalities"]), "",
        "## Limits", "",
        "- Three fully labelled training cases: TC and ET are learned from very little data and "
        "their scores vary widely between cases. WT is the dependable output.",
        "- Not a medical device; every mask is to be checked by a doctor.",
    ]
    (out_dir / "MODEL_CARD.md").write_text("\n".join(lines) + "\n")
    return out_dir
