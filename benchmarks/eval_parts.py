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

A deep ensemble (a run folder of ``mrimaster train --config configs/ensemble.yaml``) is given
with ``--ensemble RUN`` (repeat): its pooled calibrated prediction, its referral rule from
``ensemble.json`` (``ok`` when its chosen score is at most the threshold; the single models'
``ok`` also needs the feature distance within its limit) and the risk-coverage of its chosen
score and of the members' mutual information. Compare it with its own member 0
(``--model RUN/members/0``), the single model of the same recipe::

    python benchmarks/eval_parts.py --model runs/ens/members/0 --ensemble runs/ens \
        --brats deepvoxnet2-brats2018

Per model and part: images, accuracy, macro F1, ECE (15 bins), the status counts, coverage and
error of the ``ok`` answers, the risk-coverage curve of the model's uncertainty (AURC,
error at 60/80/90% coverage) and how many answers given with p > 0.95 (any status) are
wrong. A model trained before the split excluded a cluster's remainder may have been trained on
some ``excluded`` images: its row there is not held out.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from mrimaster.data.brats_slices import write_brats_slices
from mrimaster.data.folders import SliceSet, load_class_folders
from mrimaster.data.splits import EXCLUDED_PART, SHIFT_PART, SplitTable
from mrimaster.evaluation.evaluate import labelled_evaluation, load_part
from mrimaster.evaluation.metrics import classification_metrics
from mrimaster.models.checkpoint import load_classifier
from mrimaster.trust.calibration import calibration_metrics
from mrimaster.trust.ensemble import ensemble_scores, member_probs
from mrimaster.trust.referral import TrustRule
from mrimaster.trust.uncertainty import risk_coverage

REPO = Path(__file__).resolve().parents[1]


def _brats_parts(folders: dict[str, Path], size: int) -> dict[str, SliceSet]:
    return {f"brats:{source}": load_class_folders(folder, size, progress=False)
            for source, folder in folders.items()}


def _row(name: str, temperature: float, part: str, labels: np.ndarray, probs: np.ndarray,
         metrics: dict[str, float], ece: float, status: str, coverage: float, error: float,
         unc: np.ndarray) -> str:
    correct = probs.argmax(1) == labels
    curve = risk_coverage(unc, correct)
    sure = probs.max(1) > 0.95
    return (f"| {name} | {temperature:.3f} | {part} | {len(labels)} | "
            f"{metrics['accuracy']:.3f} | {metrics['macro_f1']:.3f} | {ece:.3f} | {status} | "
            f"{coverage:.3f}, {error:.3f} | {curve['aurc']:.4f} | {curve['error_at_60']:.3f} / "
            f"{curve['error_at_80']:.3f} / {curve['error_at_90']:.3f} | "
            f"{int((sure & ~correct).sum())} of {int(sure.sum())} |")


def _ensemble_rows(run: Path, parts_at: Any) -> None:
    """Print the ensemble's rows: ``parts_at(size)`` gives ``{part: SliceSet}`` at a size."""
    report = json.loads((run / "ensemble.json").read_text())
    members = [load_classifier(run / m["folder"] / "model.pt") for m in report["members"]]
    temps = np.array([m["temperature"] for m in report["members"]])
    logits: dict[str, list[np.ndarray]] = {}
    labels: dict[str, np.ndarray] = {}
    for clf in members:
        for part, data in parts_at(clf.image_size).items():
            logits.setdefault(part, []).append(clf.runtime.forward(data.images)[0])
            labels[part] = np.array([clf.classes.index(lab or "") for lab in data.labels])
    classes = members[0].classes
    for part, zs in logits.items():
        y = labels[part]
        probs = member_probs(np.stack(zs), temps)
        q, scores = ensemble_scores(probs, report["temperature"])
        ok = scores[report["score"]] <= report["threshold"]
        correct = q.argmax(1) == y
        metrics = classification_metrics(y, q, classes)
        for score in dict.fromkeys([report["score"], "mutual-information"]):
            print(_row(f"{run} ensemble of {len(members)}, {score}", report["temperature"],
                       part, y, q, metrics, calibration_metrics(q, y)["ece"],
                       f"{int(ok.sum())} / {int((~ok).sum())} / 0", float(ok.mean()),
                       float((~correct[ok]).mean()) if ok.any() else 0.0, scores[score]),
                  flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", default=[], help="model folder (repeat)")
    ap.add_argument("--ensemble", action="append", default=[], type=Path,
                    help="deep-ensemble run folder with ensemble.json (repeat)")
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

        @functools.cache
        def parts_at(size: int) -> dict[str, SliceSet]:
            """The parts at one image size, read once (members of one size share them)."""
            parts = {part: load_part(root / "sartaj-training", table, part, size,
                                     progress=False)
                     for part in args.parts if table.indices(part)}
            return parts | _brats_parts(brats, size)

        for folder in args.model:
            clf = load_classifier(Path(folder) / "model.pt")
            rule = TrustRule.of(clf)
            for part, data in parts_at(clf.image_size).items():
                metrics, result, _ = labelled_evaluation(clf, data)
                trust = metrics["trust"]
                labels = np.array([clf.classes.index(lab or "") for lab in data.labels])
                s = trust["status"]
                print(_row(folder, rule.temperature, part, labels, result.probs, metrics,
                           trust["calibration_after"]["ece"],
                           f"{s.get('ok', 0)} / {s.get('refer', 0)} / {s.get('reject', 0)}",
                           trust["coverage"], trust["error_of_accepted"], result.uncertainty),
                      flush=True)
        for run in args.ensemble:
            _ensemble_rows(run, parts_at)


if __name__ == "__main__":
    main()
