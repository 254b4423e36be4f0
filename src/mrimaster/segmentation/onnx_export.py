"""Export a segmentation model's U-Net to ONNX and validate each variant on labelled cases.

The graph takes one batch of patches (``(B, C, *patch)``, dynamic ``B``, opset 18) and returns
the WT/TC/ET logits; the sliding window around it runs in NumPy
(:mod:`mrimaster.segmentation.sliding_window`). Every variant of
:data:`mrimaster.segmentation.runtime.SEG_VARIANTS` whose engine is installed segments the
check cases; it is kept only when, for every case and region the case is labelled for, its Dice
against the reference is within :data:`MAX_DICE_DIFFERENCE` of the PyTorch path's (bf16 and
fp32 alike). A model trained to do without missing sequences (modality dropout) is also checked
on each case's FLAIR alone (:func:`check_inputs`): that is an input the model serves, and a
reduced-precision network can fail on it while agreeing on every sequence (an int8 fold read a
FLAIR-only case at Dice 0.000 against 0.675, README). ``model.onnx.json`` records each
variant's figures and the decision.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch

from mrimaster.errors import DataError
from mrimaster.inference.graph import VARIANTS, engine_problem, open_graph
from mrimaster.models.paths import file_sha256
from mrimaster.segmentation.cases import Case
from mrimaster.segmentation.infer import case_subset, prepare_inputs
from mrimaster.segmentation.labels import REGIONS
from mrimaster.segmentation.metrics import dice
from mrimaster.segmentation.model import Segmenter
from mrimaster.segmentation.passes import predict_regions
from mrimaster.segmentation.runtime import (
    FORMAT,
    GRAPH,
    META,
    SEG_VARIANTS,
    OnnxSegmenter,
    info_from_dict,
)
from mrimaster.segmentation.volumes import Volume

OPSET = 18
MAX_DICE_DIFFERENCE = 0.005
"""Largest change of any region's Dice against the reference allowed for a kept variant."""


def export_unet(seg: Segmenter, path: Path) -> None:
    """Write ``seg.net`` as an ONNX graph over a dynamic batch of patches."""
    example = torch.zeros(1, len(seg.modalities), *seg.patch)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(seg.net.eval(), (example,), str(path), opset_version=OPSET,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                          dynamo=False)


def export_segmenter(seg: Segmenter, model_pt: Path, cases: list[Case]) -> dict[str, Any]:
    """Write ``model.onnx`` and ``model.onnx.json`` beside ``model_pt`` (see the module
    docstring); returns the report.

    Raises:
        DataError: no check case, or a check case without a label map.
    """
    if not cases:
        raise DataError("no check case given", "pass labelled cases with --case")
    unlabelled = [c.name for c in cases if c.seg is None]
    if unlabelled:
        raise DataError(f"check cases without a label map: {', '.join(unlabelled)}")
    folder = model_pt.parent
    export_unet(seg, folder / GRAPH)
    checks = check_inputs(seg, cases)
    labels = [label for label, _ in checks]
    inputs = [volume for _, volume in checks]
    reference = [predict_regions(seg, v.image) for v in inputs]
    report: dict[str, Any] = {
        "format": FORMAT, **seg.info_dict(), "opset": OPSET,
        "source_sha256": file_sha256(model_pt), "graph_sha256": file_sha256(folder / GRAPH),
        "rule": f"every labelled region's Dice within {MAX_DICE_DIFFERENCE} of PyTorch's",
        "cases": [c.name for c in cases], "inputs": labels, "variants": {}}
    for variant in SEG_VARIANTS:
        missing = engine_problem(variant)
        if missing:
            report["variants"][variant] = {"kept": False, "why": f"not checked: {missing}"}
            continue
        model = OnnxSegmenter(**info_from_dict(seg.info_dict()), runtime_name=variant,
                              graph=open_graph(folder / GRAPH, variant, parallel=True))
        per_case: dict[str, Any] = {}
        worst = 0.0
        for label, volume, ref in zip(labels, inputs, reference, strict=True):
            pred = predict_regions(model, volume.image)
            assert volume.regions is not None
            scores = {}
            for k, region in enumerate(REGIONS):
                if not volume.known[k]:
                    continue
                fast = dice(pred[k], volume.regions[k])
                torch_dice = dice(ref[k], volume.regions[k])
                scores[region] = {"dice": fast, "torch_dice": torch_dice,
                                  "agreement_dice": dice(pred[k], ref[k])}
                worst = max(worst, abs(fast - torch_dice))
            per_case[label] = scores
        report["variants"][variant] = {"kept": worst <= MAX_DICE_DIFFERENCE,
                                       "largest_dice_difference": worst, "per_case": per_case,
                                       "engine": VARIANTS[variant].engine,
                                       "precision": VARIANTS[variant].precision}
    (folder / META).write_text(json.dumps(report, indent=2))
    card = folder / "MODEL_CARD.md"
    if card.is_file():
        text = card.read_text().split(CARD_HEADING)[0].rstrip()
        card.write_text(text + "\n\n" + card_section(report))
    return report


FLAIR_ALONE = " (FLAIR alone)"
"""Suffix of a check input that is a case's FLAIR alone."""


def check_inputs(seg: Segmenter, cases: list[Case]) -> list[tuple[str, Volume]]:
    """The inputs each variant is checked on: every case as it is, and, for a model trained
    with modality dropout, each case with more than its FLAIR also as its FLAIR alone (where
    the model accepts that input). Returns ``(label, prepared volume)`` pairs."""
    out = []
    for case in cases:
        out.append((case.name, prepare_inputs(seg, case)[0]))
        if not seg.modality_dropout or "flair" not in case.available() or len(
                case.available()) < 2:
            continue
        try:
            alone = prepare_inputs(seg, case_subset(case, ["flair"]))[0]
        except DataError:  # FLAIR alone is not an input this model takes
            continue
        out.append((case.name + FLAIR_ALONE, alone))
    return out


CARD_HEADING = "## Inference runtimes (ONNX export)"


def card_section(report: dict[str, Any]) -> str:
    """The model card's section on the export (replaced whenever the export is redone)."""
    inputs = ", ".join(report.get("inputs", report["cases"]))
    lines = [CARD_HEADING, "",
             f"The U-Net is exported to ONNX (opset {report['opset']}, `model.onnx`) and each "
             f"engine segmented the check inputs {inputs}; rule: "
             f"{report['rule']}. `--runtime auto` uses the first kept variant whose engine is "
             "installed, in this order, then PyTorch + MONAI. Details in `model.onnx.json`.", "",
             "| variant | kept | largest Dice difference to PyTorch |", "|---|---|---:|"]
    for name, v in report["variants"].items():
        diff = v.get("largest_dice_difference")
        lines.append(f"| `{name}` | {'yes' if v['kept'] else 'no'} | "
                     f"{v.get('why') or f'{diff:.4f}'} |")
    return "\n".join(lines) + "\n"
