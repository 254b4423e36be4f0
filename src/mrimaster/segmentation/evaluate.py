"""``mrimaster seg evaluate``: Dice and HD95 per region per case on labelled cases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mrimaster.errors import DataError
from mrimaster.segmentation.cases import Case
from mrimaster.segmentation.infer import InputPlan, finish_regions, prepare_inputs
from mrimaster.segmentation.labels import REGIONS
from mrimaster.segmentation.metrics import mean_scores, region_scores
from mrimaster.segmentation.passes import predict_raw
from mrimaster.segmentation.runtime import SegModel
from mrimaster.segmentation.volumes import Volume, to_canonical_grid


def scored_regions(volume: Volume, plan: InputPlan) -> np.ndarray:
    """``(3,)`` bool regions a prediction is scored on: those the reference defines and the
    output includes (TC / ET only when T1-Gd was used; without it they are not written)."""
    return volume.known & np.array([r in plan.regions for r in REGIONS])


def score_prediction(pred: np.ndarray, volume: Volume, plan: InputPlan
                     ) -> dict[str, dict[str, float]]:
    """Score ``(3, d, h, w)`` bool regions on the cropped working grid against the reference
    on the input grid (:func:`mrimaster.segmentation.metrics.region_scores`), over
    :func:`scored_regions`; regions not scored are emptied first."""
    assert volume.regions_input is not None
    regions = scored_regions(volume, plan)
    full = to_canonical_grid(pred & regions[:, None, None, None], volume)
    return region_scores(full, volume.regions_input, regions, volume.input_spacing)


def evaluate_cases(seg: SegModel, cases: list[Case], tta: bool = False) -> dict[str, Any]:
    """Segment each labelled case as ``seg predict`` does and score it on the input grid
    against its reference: the regions the reference defines, TC and ET only when T1-Gd was
    used (without it they are not predicted)."""
    per_case: dict[str, dict[str, dict[str, float]]] = {}
    missing: dict[str, list[str]] = {}
    for case in tqdm(cases, desc="cases", unit="case", leave=False, disable=None):
        if case.seg is None:
            raise DataError(f"case {case.name} has no label map to evaluate against")
        volume, plan = prepare_inputs(seg, case)
        pred = finish_regions(predict_raw(seg, volume.image, tta), seg, plan)
        per_case[case.name] = score_prediction(pred, volume, plan)
        missing[case.name] = plan.missing
    return {"per_case": per_case, "mean": mean_scores(per_case), "missing_modalities": missing}


def markdown_table(metrics: dict[str, Any]) -> str:
    """Cases as rows; Dice, HD95 (mm) and volume difference (predicted - reference, mL) per
    region as columns; means last ("-": not scored)."""
    head = "| case | " + " | ".join(f"Dice {r} | HD95 {r} | ΔV {r}" for r in REGIONS) + " |"
    lines = [head, "|---|" + "---:|" * 9]

    def cells(scores: dict[str, dict[str, float]]) -> str:
        parts = []
        for r in REGIONS:
            if r in scores:
                diff = scores[r].get("volume_diff_ml")
                parts += [f"{scores[r]['dice']:.3f}", f"{scores[r]['hd95']:.1f}",
                          "-" if diff is None else f"{diff:+.1f}"]
            else:
                parts += ["-", "-", "-"]
        return " | ".join(parts)

    for name, scores in metrics["per_case"].items():
        lines.append(f"| {name} | {cells(scores)} |")
    lines.append(f"| **mean** | {cells(metrics['mean'])} |")
    return "\n".join(lines) + "\n"


def write_evaluation(metrics: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out_dir / "report.md").write_text(markdown_table(metrics))
