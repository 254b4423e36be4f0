"""Classifiers compared on the same parts of the shipped split: the in-source ``test`` part and
the source-held-out ``shift`` part (whole acquisition-style clusters), and the ``excluded``
remainder of those clusters, each with its own shipped temperature and trust rule; optionally
also on the glioma / no-tumour slices of BraTS sources (``--brats``), cut as training cuts them
(:func:`mrimaster.data.brats_slices.cut_brats_slices`) and read back from PNG files.

    MRIMASTER_DATA_ROOT=../shared/datasets python benchmarks/eval_parts.py \\
        --model models/default --model OTHER_MODEL_FOLDER

Leave-one-source-out: train one model per BraTS source without it (``mrimaster train ... --set
brats_dir=brats-mini/OTHER``), then compare them on every source; a model's row on the source it
was trained without is the held-out estimate (its other BraTS rows are not held out)::

    python benchmarks/eval_parts.py --model runs/loso/without-deepmedic-brats2015 \\
        --model runs/loso/without-deepvoxnet2-brats2018 --model models/default \\
        --parts shift --brats deepmedic-brats2015 --brats deepvoxnet2-brats2018

Per model and part: images, accuracy, macro F1, ECE (15 bins), the status counts, coverage and
error of the ``ok`` answers, the risk-coverage curve of the model's uncertainty (AURC,
error at 60/80/90% coverage) and how many answers given with p > 0.95 (any status) are
wrong. A model trained before the split excluded a cluster's remainder may have been trained on
some ``excluded`` images: its row there is not held out.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

from mrimaster.data.brats_slices import write_brats_slices
from mrimaster.data.folders import SliceSet, load_class_folders
from mrimaster.data.splits import EXCLUDED_PART, SHIFT_PART, SplitTable
from mrimaster.evaluation.evaluate import labelled_evaluation, load_part
from mrimaster.models.checkpoint import load_classifier
from mrimaster.trust.referral import TrustRule
from mrimaster.trust.uncertainty import risk_coverage

REPO = Path(__file__).resolve().parents[1]


def _brats_parts(folders: dict[str, Path], size: int) -> dict[str, SliceSet]:
    return {f"brats:{source}": load_class_folders(folder, size, progress=False)
            for source, folder in folders.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", required=True, help="model folder (repeat)")
    ap.add_argument("--split", type=Path, default=REPO / "splits" / "sartaj-training.csv")
    ap.add_argument("--parts", nargs="*", default=["test", SHIFT_PART, EXCLUDED_PART])
    ap.add_argument("--brats", action="append", default=[],
                    help="a BraTS source folder under brats-mini (repeat)")
    args = ap.parse_args()
    root = Path(os.environ.get("MRIMASTER_DATA_ROOT", "../shared/datasets"))
    table = SplitTable.load(args.split)
    print(f"split {args.split}: " + ", ".join(f"{p} {len(table.indices(p))}"
                                             for p in args.parts))
    print("| model | T | part | n | accuracy | macro F1 | ECE | ok / refer / reject | ok: coverage,"
          " error | AURC | error at 60 / 80 / 90% coverage | wrong of answers with p > 0.95 |")
    print("|---|---:|---|---:|---:|---:|---:|---|---|---:|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        brats = {source: Path(tmp) / source for source in args.brats}
        for source, folder in brats.items():  # written once, read at each model's size
            write_brats_slices(root / "brats-mini" / source, folder)
        for folder in args.model:
            clf = load_classifier(Path(folder) / "model.pt")
            rule = TrustRule.of(clf)
            parts = {part: load_part(root / "sartaj-training", table, part, clf.image_size,
                                     progress=False)
                     for part in args.parts if table.indices(part)}
            parts |= _brats_parts(brats, clf.image_size)
            for part, data in parts.items():
                metrics, result, _ = labelled_evaluation(clf, data)
                trust = metrics["trust"]
                labels = np.array([clf.classes.index(lab or "") for lab in data.labels])
                correct = result.probs.argmax(1) == labels
                curve = risk_coverage(result.uncertainty, correct)
                sure = result.probs.max(1) > 0.95
                s = trust["status"]
                print(f"| {folder} | {rule.temperature:.3f} | {part} | {len(labels)} | "
                      f"{metrics['accuracy']:.3f} | {metrics['macro_f1']:.3f} | "
                      f"{trust['calibration_after']['ece']:.3f} | "
                      f"{s.get('ok', 0)} / {s.get('refer', 0)} / {s.get('reject', 0)} | "
                      f"{trust['coverage']:.3f}, {trust['error_of_accepted']:.3f} | "
                      f"{curve['aurc']:.4f} | {curve['error_at_60']:.3f} / "
                      f"{curve['error_at_80']:.3f} / {curve['error_at_90']:.3f} | "
                      f"{int((sure & ~correct).sum())} of {int(sure.sum())} |", flush=True)


if __name__ == "__main__":
    main()
