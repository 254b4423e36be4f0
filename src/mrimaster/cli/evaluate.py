"""``mrimaster evaluate``."""

from __future__ import annotations

import argparse
from pathlib import Path

from mrimaster.settings import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a classifier on a class-per-folder dataset")
    p.add_argument("--model", required=True, help="run folder, model.pt file, or 'default'")
    p.add_argument("--data", required=True, type=Path, help="class-per-folder dataset")
    p.add_argument("--out", required=True, type=Path, help="folder for the results")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--split", type=Path, dest="split_file",
                   help="only the images of one part of this split.csv (paths relative to --data)")
    p.add_argument("--part", default="test", choices=["train", "val", "test"])
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from mrimaster.evaluation.evaluate import EvaluateConfig, run_evaluation

    metrics = run_evaluation(EvaluateConfig(args.model, args.data, args.out, args.batch_size,
                                            split_file=args.split_file, part=args.part), settings)
    trust = metrics["trust"]
    print(f"{metrics['n']} images  accuracy {metrics['accuracy']:.4f}  "
          f"macro F1 {metrics['macro_f1']:.4f}  ({len(metrics['skipped'])} skipped)")
    print(f"ECE {trust['calibration_before']['ece']:.4f} -> "
          f"{trust['calibration_after']['ece']:.4f} (T = {trust['temperature']:.3f})  "
          f"AURC {trust['risk_coverage']['aurc']:.4f}  error at 90% coverage "
          f"{trust['risk_coverage']['error_at_90']:.4f}")
    print(f"results: {args.out}")
    return 0
