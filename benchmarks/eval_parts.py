"""Classifiers compared on the same parts of the shipped split: the in-source ``test`` part and
the source-held-out ``shift`` part (whole acquisition-style clusters), and the ``excluded``
remainder of those clusters, each with its own shipped temperature and trust rule.

    MRIMASTER_DATA_ROOT=../shared/datasets python benchmarks/eval_parts.py \\
        --model models/default --model OTHER_MODEL_FOLDER

Per model and part: images, accuracy, macro F1, ECE (15 bins), the status counts, coverage and
error of the ``ok`` answers, and the risk-coverage curve of the model's uncertainty (AURC,
error at 60/80/90% coverage). A model trained before the split excluded a cluster's remainder
may have been trained on some ``excluded`` images: its row there is not held out.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from mrimaster.data.splits import EXCLUDED_PART, SHIFT_PART, SplitTable
from mrimaster.evaluation.evaluate import labelled_evaluation, load_part
from mrimaster.models.checkpoint import load_classifier
from mrimaster.trust.referral import TrustRule
from mrimaster.trust.uncertainty import risk_coverage

REPO = Path(__file__).resolve().parents[1]


def _error_at(curve: dict, coverage: float) -> float:
    n = len(curve["risk"])
    return float(curve["risk"][max(int(np.ceil(coverage * n)) - 1, 0)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", required=True, help="model folder (repeat)")
    ap.add_argument("--split", type=Path, default=REPO / "splits" / "sartaj-training.csv")
    ap.add_argument("--parts", nargs="+", default=["test", SHIFT_PART, EXCLUDED_PART])
    args = ap.parse_args()
    data_dir = Path(os.environ.get("MRIMASTER_DATA_ROOT", "../shared/datasets")) / \
        "sartaj-training"
    table = SplitTable.load(args.split)
    print(f"split {args.split}: " + ", ".join(f"{p} {len(table.indices(p))}"
                                             for p in args.parts))
    print("| model | T | part | n | accuracy | macro F1 | ECE | ok / refer / reject | ok: coverage,"
          " error | AURC | error at 60 / 80 / 90% coverage |")
    print("|---|---:|---|---:|---:|---:|---:|---|---|---:|---|")
    for folder in args.model:
        clf = load_classifier(Path(folder) / "model.pt")
        rule = TrustRule.of(clf)
        for part in args.parts:
            if not table.indices(part):
                continue
            data = load_part(data_dir, table, part, clf.image_size, progress=False)
            metrics, result, _ = labelled_evaluation(clf, data)
            trust = metrics["trust"]
            labels = np.array([clf.classes.index(lab or "") for lab in data.labels])
            curve = risk_coverage(result.uncertainty, result.probs.argmax(1) == labels)
            s = trust["status"]
            print(f"| {folder} | {rule.temperature:.3f} | {part} | {len(labels)} | "
                  f"{metrics['accuracy']:.3f} | {metrics['macro_f1']:.3f} | "
                  f"{trust['calibration_after']['ece']:.3f} | "
                  f"{s.get('ok', 0)} / {s.get('refer', 0)} / {s.get('reject', 0)} | "
                  f"{trust['coverage']:.3f}, {trust['error_of_accepted']:.3f} | "
                  f"{curve['aurc']:.4f} | {_error_at(curve, 0.6):.3f} / "
                  f"{_error_at(curve, 0.8):.3f} / {_error_at(curve, 0.9):.3f} |", flush=True)


if __name__ == "__main__":
    main()
