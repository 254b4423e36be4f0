"""Held-out whole-tumour Dice and the case trust figures per sliding-window grid, overlap and
batch size.

Each cross-validation case of a shipped segmentation model folder is segmented by the fold
model that never saw it (``folds/fold_K``, the assignment in ``cv.yaml``), from every modality
it has and from FLAIR alone, as the cross-validation scores it: its plain and left-right passes
(:func:`mrimaster.segmentation.passes.run_passes`), the model's clean-up, the mask put back on
the input grid. Rows: patch grid (:data:`mrimaster.segmentation.sliding_window.GRIDS`),
overlap and batch (patches a network call; OpenVINO splits a call between its CPU streams, and
on 2 cores one patch a stream gave the logits of a larger batch to the last bit, so batches of
2 and 4 agreed exactly); per row the mean Dice, what the shipped trust rule decides on that
row's figures, and the patches a pass runs (the network's cost; seconds are left out, as this
is a quality figure). The rule was fitted on the shipped grid (``monai`` at 0.25): other rows
show how its decisions move, not a rule fitted to them.

    MRIMASTER_DATA_ROOT=../shared/datasets python benchmarks/cv_grids.py \\
        --rows monai:0.25 even:0.25 even:0.1 even:0
    MRIMASTER_DATA_ROOT=../shared/datasets python benchmarks/cv_grids.py \\
        --rows monai:0.25:4 monai:0.25:2
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mrimaster.segmentation.case_trust import load_rule, mask_dice
from mrimaster.segmentation.cases import find_case
from mrimaster.segmentation.infer import case_subset, finish_regions, prepare_inputs
from mrimaster.segmentation.labels import to_regions
from mrimaster.segmentation.passes import run_passes
from mrimaster.segmentation.runtime import OnnxSegmenter, load_seg_variant
from mrimaster.segmentation.sliding_window import patch_starts, scan_interval
from mrimaster.segmentation.volumes import load_nifti, restore_to_input_grid
from mrimaster.settings import load_settings


class Gridded:
    """A fold model run on another grid, overlap and batch size (only ``logits`` differs)."""

    def __init__(self, seg: OnnxSegmenter, grid: str, overlap: float, batch: int) -> None:
        self._seg, self.overlap = replace(seg, grid=grid), overlap  # the same compiled graph
        self.batch = batch

    def __getattr__(self, name: str) -> Any:
        return getattr(self._seg, name)

    def logits(self, image: np.ndarray, overlap: float = 0.25, batch_size: int = 2
               ) -> np.ndarray:
        return self._seg.logits(image, self.overlap, self.batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/seg-default"))
    parser.add_argument("--variant", default="openvino-bf16")
    parser.add_argument("--rows", nargs="+", default=["monai:0.25", "even:0.25"],
                        help="GRID:OVERLAP[:BATCH] (BATCH: patches a network call, split "
                             "between OpenVINO's streams; default 2, what the segmenter runs)")
    args = parser.parse_args()
    root = load_settings().data_root / "brats-mini"
    cv = yaml.safe_load((args.model / "cv.yaml").read_text())
    final = load_seg_variant(args.model, args.variant)
    rule = load_rule(args.model)
    folds = {k: load_seg_variant(args.model / "folds" / f"fold_{k}", args.variant)
             for k in sorted(set(cv["assignment"].values()))}
    rows = [(r[0], float(r[1]), int(r[2]) if len(r) > 2 else 2)
            for r in (row.split(":") for row in args.rows)]
    results: dict[tuple[str, float, int], list[dict[str, Any]]] = {r: [] for r in rows}
    for rel, fold in cv["assignment"].items():
        case = find_case(root / rel)
        assert case.seg is not None and case.convention is not None
        reference = to_regions(np.asarray(load_nifti(case.seg).dataobj).astype(np.int16),
                               case.convention)[0][0]
        for setting, sub in (("all", case), ("flair", case_subset(case, ["flair"]))):
            volume, plan = prepare_inputs(final, sub)
            shape = volume.image.shape[1:]
            for grid, overlap, batch in rows:
                seg = Gridded(folds[fold], grid, overlap, batch)
                passes = run_passes(seg, volume.image, volume.voxel_ml)
                wt = finish_regions(passes.raw, final, plan)[0].astype(np.uint8)
                got = np.asarray(restore_to_input_grid(wt, volume).dataobj) > 0
                row = {"case": case.name, "setting": setting, "grid": grid,
                       "overlap": overlap, "batch": batch,
                       "wt_dice": round(mask_dice(got, reference), 4),
                       "status": rule.decide(passes.features)[0] if rule else None,
                       "patches": len(patch_starts(shape, final.patch, scan_interval(
                           shape, final.patch, overlap), grid)),
                       **{k: passes.features[k] for k in ("mirror_disagreement", "scattered")}}
                results[(grid, overlap, batch)].append(row)
                print(json.dumps(row), flush=True)
    print("\n| grid | overlap | batch | mean WT Dice (all / FLAIR) | lowest | patches (28 passes) "
          "| ok | lowest ok | referred |\n|---|---:|---:|---|---:|---:|---:|---:|---|")
    for (grid, overlap, batch), rs in results.items():
        ok = [r for r in rs if r["status"] == "ok"]
        mean = {s: np.mean([r["wt_dice"] for r in rs if r["setting"] == s])
                for s in ("all", "flair")}
        print(f"| {grid} | {overlap} | {batch} | {mean['all']:.4f} / {mean['flair']:.4f} | "
              f"{min(r['wt_dice'] for r in rs):.3f} | {sum(r['patches'] for r in rs)} | "
              f"{len(ok)}/{len(rs)} | {min((r['wt_dice'] for r in ok), default=float('nan')):.3f}"
              " | " + ", ".join(f"{r['case']} ({r['setting']}, {r['wt_dice']:.3f})"
                                for r in rs if r["status"] != "ok") + " |")


if __name__ == "__main__":
    main()
