"""The brain-MRI check's figure and model card, from a training run's metrics."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mrimaster.training.brain_check import BrainCheckConfig, Examples
    from mrimaster.trust.brain_check import BrainCheck

CITATIONS = """- S. Bhuvaji, A. Kadam, P. Bhumkar, S. Dedge, S. Kanchan, "Brain Tumor Classification
  (MRI)", Kaggle dataset sartajbhuvaji/brain-tumor-classification-mri, 2020 (`sartaj-training`).
- A. Hamada, "Br35H :: Brain Tumor Detection 2020", Kaggle, as boxed in nanonane/RCS-YOLO
  (Kang et al., MICCAI 2023) (`br35h-tumour`).
- B. H. Menze et al., IEEE TMI 34(10):1993-2024, 2015; K. Kamnitsas et al., MedIA 36:61-78,
  2017; S. Bakas et al., Sci Data 4:170117, 2017; arXiv:1811.02629, 2018 (`brats-mini`).
- scikit-image sample data (`skimage.data`), matplotlib sample data (`cbook.get_sample_data`);
  the pydeface package's mean head template (report only)."""


def write_examples(path: Path, pos: Examples, p_pos: np.ndarray, neg: Examples,
                   p_neg: np.ndarray, check: BrainCheck, per_row: int = 10) -> None:
    """A grid of thumbnails with their probability: held-out non-MRI accepted (the check's
    misses), held-out non-MRI rejected, report MRI rejected (false alarms), report MRI
    accepted, lowest probability first in each row of misses."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend stays as it is

    held, mri = neg.where("report"), pos.where("report")
    rej_h, rej_m = check.rejects(p_neg[held]), check.rejects(p_pos[mri])
    rows = [
        ("held-out non-MRI accepted", held[~rej_h][np.argsort(-p_neg[held][~rej_h])]),
        ("held-out non-MRI rejected", held[rej_h][:: max(1, int(rej_h.sum()) // per_row)]),
        ("report MRI rejected", mri[rej_m][np.argsort(p_pos[mri][rej_m])]),
        ("report MRI accepted", mri[~rej_m][:: max(1, int((~rej_m).sum()) // per_row)]),
    ]
    fig = Figure(figsize=(per_row * 1.3, len(rows) * 1.6))
    axes = fig.subplots(len(rows), per_row)
    for r, (title, idx) in enumerate(rows):
        is_neg = r < 2
        for c in range(per_row):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(idx):
                i = int(idx[c])
                ex, p = (neg, p_neg) if is_neg else (pos, p_pos)
                ax.imshow(ex.images[i], cmap="gray", vmin=0, vmax=255)
                ax.set_title(f"{ex.sources[i][:12]}\np={p[i]:.2f}", fontsize=6)
        axes[r, 0].text(-0.1, 0.5, f"{title} ({len(idx)})", transform=axes[r, 0].transAxes,
                        rotation=90, va="center", ha="right", fontsize=7)
    fig.suptitle(f"brain-MRI check, threshold {check.threshold:.3f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _table(rates: dict[str, Any], what: str) -> str:
    lines = [f"| {what} | images | rejected | rate |", "|---|---:|---:|---:|"]
    lines += [f"| {k} | {v['n']} | {v['rejected']} | {100 * v['rate']:.1f} % |"
              for k, v in rates.items()]
    return "\n".join(lines)


def write_card(path: Path, cfg: BrainCheckConfig, metrics: dict[str, Any], command: str
               ) -> None:
    """``MODEL_CARD.md``: data, split, command, threshold, measured rates, limits."""
    from mrimaster.trust.brain_check import CHANNELS, INPUT_SIZE

    held, mri = metrics["held_out_reject_rate"], metrics["mri_reject_rate_report"]
    shared = metrics["mri_reject_rate_report_shared_sets"]
    ort, npy = metrics["ms_per_image"]["onnxruntime"], metrics["ms_per_image"]["numpy"]
    text = f"""# Brain-MRI check (`models/brain-check`)

Answers one question before the 2D classifier runs: is this image a brain MRI slice at all?
An image it rejects gets status `reject` and no class (`mrimaster.inference.predict`).
Not a medical device: every output is reviewed by a doctor.

Trained on {metrics.get("created", "?")} by:

```
{command or "mrimaster train-brain-check"}
```

(data {metrics["seconds"]["data"]} s, training {metrics["seconds"]["train"]} s on the CPU).

## Model

A {len(CHANNELS)}-layer CNN ({", ".join(map(str, CHANNELS))} channels, 3x3, batch norm folded,
global average + max pooling, a linear layer, a sigmoid) on a {INPUT_SIZE}x{INPUT_SIZE}
thumbnail of the classifier's prepared slice (crop to the head, pad, resize), about 60 k
parameters (`weights.npz`, and the same network as `model.onnx`). Median time per image,
thumbnailing included, measured at training time on the training machine's CPU (shared with
other work): ONNX Runtime on one thread {ort["single"]:.2f} ms one at a time,
{ort["batch64"]:.2f} ms in a batch of 64; the NumPy fallback (no `fast` extra)
{npy["single"]:.2f} / {npy["batch64"]:.2f} ms. Reject when p < **{metrics["threshold"]:.4f}**
(`brain_check.json`).

## Data and split

Positives, real brain MRI: `sartaj-training` by the project's split file
(`{cfg.sartaj_split}`: train -> train, val -> calib, test and shift -> report; near-duplicates
never cross), `br35h-tumour` (its `report` half -> report; its `fit` half by near-duplicate
group between train and calib), `brats-mini` (whole cases per part: 4 of every 7 train, 1
calib, 2 report; axial, coronal and sagittal slices of every modality), and, report only,
matplotlib's `s1045.ima` head slice and the pydeface mean head (scalp kept).

Negatives, generated (`mrimaster.data.non_mri`, seeds {cfg.seed}/{cfg.seed + 1}/
{cfg.seed + 2}): training kinds {", ".join(cfg.train_kinds)} ({cfg.negatives_per_kind} each;
{cfg.calib_per_kind} more on a new seed to measure them); held-out kinds, **never trained
on**: {", ".join(cfg.held_out_kinds)} ({cfg.held_out_per_kind} each). A third of every kind is
masked to a head-like ellipse on black.

The threshold is the {100 * cfg.mri_reject_target:.1f} % quantile of the calib MRI's p (at most
{cfg.max_threshold}); the report part is used for nothing but the figures below.

## Results

Held-out non-MRI kinds rejected: **{100 * held:.1f} %** (target >= 95 %).
Real MRI of the shared sets (report part) rejected: **{100 * shared:.2f} %** (target <= 0.5 %);
with the installed packages' MRI added: {100 * mri:.2f} %.

{_table(metrics["held_out_reject_per_kind"], "held-out kind (never trained on)")}

{_table(metrics["mri_reject_per_source_report"], "MRI source (report part)")}

{_table(metrics["mri_reject_per_source_calib"], "MRI source (calib part)")}

{_table(metrics["seen_kinds_reject_per_kind_new_images"], "training kind, new images")}

`examples.png`: held-out non-MRI it accepted and rejected, report MRI it rejected and accepted.

## Limits

- Grayscale only: colour images are rejected before it by the input checks
  (`mrimaster.trust.ood.input_problem`); what it sees is the classifier's prepared slice.
- It says "brain MRI slice or not", not "of a kind the classifier knows": the classifier's
  feature distance still refers or rejects slices from new scanners and sequences.
- Other imaging of the head (CT, X-ray) was not available to test; expect it to be accepted
  more often than the kinds above. Held-out kinds are a sample of what users upload, not all.
- The MRI it rejects most are peripheral coronal and sagittal slices of the skull-stripped
  BraTS volumes (see `examples.png` and the per-source table): slices far from the sets above
  (other scanners, unusual planes, the edges of the brain) are rejected more often than the
  overall rate says. Per kind, some held-out kinds are rejected less often than the overall
  rate (table above).
- The pydeface mean head is an average of registered heads (smoother than any one scan, face
  and neck kept); it is a check on unstripped heads, not a real patient.

## Data sources

{CITATIONS}
"""
    path.write_text(text)
