"""``mrimaster seg evaluate``: Dice and HD95 per region per case on labelled cases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mrimaster.errors import DataError
from mrimaster.segmentation.cases import Case
from mrimaster.segmentation.infer import predict_regions, prepare_inputs
from mrimaster.segmentation.metrics import mean_scores, region_scores
from mrimaster.segmentation.runtime import SegModel


def evaluate_cases(seg: SegModel, cases: list[Case]) -> dict[str, Any]:
    """Segment each labelled case and score it against its reference."""
    per_case: dict[str, dict[str, dict[str, float]]] = {}
    missing: dict[str, list[str]] = {}
    for case in tqdm(cases, desc="cases", unit="case", leave=False, disable=None):
        if case.seg is None:
            raise DataError(f"case {case.name} has no label map to evaluate against")
        volume, lacking = prepare_inputs(seg, case)
        assert volume.regions is not None
        pred = predict_regions(seg, volume.image)
        spacing = tuple(float(z) for z in volume.reference.header.get_zooms()[:3])
        per_case[case.name] = region_scores(pred, volume.regions, volume.known,
                                            spacing)  # type: ignore[arg-type]
        missing[case.name] = lacking
    return {"per_case": per_case, "mean": mean_scores(per_case), "missing_modalities": missing}


def markdown_table(metrics: dict[str, Any]) -> str:
    """Cases as rows, Dice and HD95 per region as columns, means last."""
    head = "| case | " + " | ".join(f"Dice {r} | HD95 {r}" for r in ("WT", "TC", "ET")) + " |"
    lines = [head, "|---|" + "---:|" * 6]

    def cells(scores: dict[str, dict[str, float]]) -> str:
        parts = []
        for r in ("WT", "TC", "ET"):
            if r in scores:
                parts += [f"{scores[r]['dice']:.3f}", f"{scores[r]['hd95']:.1f}"]
            else:
                parts += ["-", "-"]
        return " | ".join(parts)

    for name, scores in metrics["per_case"].items():
        lines.append(f"| {name} | {cells(scores)} |")
    lines.append(f"| **mean** | {cells(metrics['mean'])} |")
    return "\n".join(lines) + "\n"


def write_evaluation(metrics: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out_dir / "report.md").write_text(markdown_table(metrics))
