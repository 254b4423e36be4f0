"""What a finished segmentation training run writes for people: the learning curves
(``curves.png``) and, for a fine-tuning run, its ``MODEL_CARD.md``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mrimaster.models.paths import file_sha256

if TYPE_CHECKING:
    from mrimaster.segmentation.train import SegTrainConfig


def plot_history(history: list[dict[str, Any]], path: Path) -> None:
    """``curves.png``: training loss and validation Dice per region by epoch."""
    from matplotlib.figure import Figure

    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(10, 4))
    (a, b) = fig.subplots(1, 2)
    a.plot(epochs, [r["train_loss"] for r in history], "o-")
    a.set(xlabel="epoch", ylabel="Dice + BCE", title="Training loss")
    for region in ("WT", "TC", "ET"):
        key = f"val_dice_{region}"
        if any(key in r for r in history):
            b.plot(epochs, [r.get(key, np.nan) for r in history], "o-", label=region)
    b.set(xlabel="epoch", ylabel="Dice", title="Validation Dice", ylim=(0, 1))
    if b.get_legend_handles_labels()[0]:
        b.legend()
    else:
        b.text(0.5, 0.5, "no validation cases\n(the last epoch is kept)", ha="center",
               va="center", transform=b.transAxes)
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def write_finetune_card(run_dir: Path, cfg: SegTrainConfig, history: list[dict[str, Any]],
                        init_path: Path, reviewed: Path | None) -> Path:
    """``MODEL_CARD.md`` of a fine-tuning run: data, init model, command, metrics, date."""
    record = json.loads((run_dir / "run.json").read_text())
    sources: list[str] = []
    if reviewed is not None:
        dataset = json.loads((reviewed / "dataset.json").read_text())
        sources = [f"- `{e['case']}` ({e['label_convention']}, "
                   f"{'+'.join(e['modalities'])}): {e['source']}" for e in dataset["training"]]
    last = history[-1]
    val = "; ".join(f"{k[9:]} {v:.3f}" for k, v in last.items() if k.startswith("val_dice_"))
    lines = [
        f"# Fine-tuned segmentation model `{run_dir.name}`", "",
        f"Date: {record['started']}  ",
        f"Command: `{record['command']}`", "",
        "## Init model", "",
        f"`{cfg.init}` (model.pt SHA-256 `{file_sha256(init_path)}`); training started from "
        f"its weights at learning rate {cfg.init_lr:g} (cosine decay), "
        f"{cfg.epochs} epochs x {cfg.iterations} steps of {cfg.batch_size} patches "
        f"{'x'.join(map(str, cfg.patch))} at {'x'.join(map(str, cfg.spacing))} mm.", "",
        "## Data", "",
        f"Reviewed cases ({len(sources)}, from `{cfg.reviewed_dir}`):", "", *sources, "",
        f"Replayed original training cases ({len(cfg.train_cases)}, under `{cfg.data_dir}`), "
        "drawn alongside so the model does not forget them:", "",
        *[f"- `{c}`" for c in cfg.train_cases], "",
        "## Metrics", "",
        f"Last epoch training loss (Dice + BCE) {last['train_loss']:.4f}"
        + (f"; validation Dice {val}" if val else "; no validation cases (the last epoch is "
           "kept): measure it on held-out cases with `mrimaster seg evaluate`") + ".", "",
        "Intended use and limits are those of the init model; check Dice on cases that were "
        "not corrected before deploying (see benchmarks/finetune_loop.py).", ""]
    path = run_dir / "MODEL_CARD.md"
    path.write_text("\n".join(lines))
    return path
