"""``mrimaster evaluate``."""

from __future__ import annotations

import argparse
from pathlib import Path

from mrimaster.device import DEVICES
from mrimaster.settings import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a classifier on a class-per-folder or "
                       "presence-only dataset")
    p.add_argument("--model", required=True, help="run folder, model.pt file, or 'default'")
    p.add_argument("--data", required=True, type=Path,
                   help="class-per-folder dataset, or a presence-only one (a folder of tumour "
                   "images, optionally with boxes.csv, or the box CSV itself)")
    p.add_argument("--out", required=True, type=Path, help="folder for the results")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="auto: a CUDA GPU when there is one (PyTorch), else the CPU")
    p.add_argument("--split", type=Path, dest="split_file",
                   help="only the images of one part of this split.csv (paths relative to --data)")
    p.add_argument("--part", default=None,
                   choices=["train", "val", "test", "shift", "fit", "report"],
                   help="the part of --split (default: test, or report for presence-only sets)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from mrimaster.evaluation.evaluate import EvaluateConfig, run_evaluation

    metrics = run_evaluation(EvaluateConfig(args.model, args.data, args.out, args.batch_size,
                                            split_file=args.split_file, part=args.part,
                                            device=args.device), settings)
    if "sensitivity" in metrics:  # a presence-only set
        print(f"{metrics['n']} tumour images  sensitivity {metrics['sensitivity']:.4f}  "
              f"called 'no tumour' {metrics['missed']} (confident {metrics['confident_misses']},"
              f" of which caught by referral/rejection {metrics['confident_misses_caught']})")
        print(f"status {metrics['status']}")
        if "pointing_game" in metrics:
            pg = metrics["pointing_game"]
            print(f"pointing game {pg['accuracy']:.3f} ({pg['hits']}/{pg['n']}; centre "
                  f"baseline {pg['centre_baseline']:.3f})")
        print(f"results: {args.out}")
        return 0
    trust = metrics["trust"]
    print(f"{metrics['n']} images  accuracy {metrics['accuracy']:.4f}  "
          f"macro F1 {metrics['macro_f1']:.4f}  ({len(metrics['skipped'])} skipped)")
    print(f"ECE {trust['calibration_before']['ece']:.4f} -> "
          f"{trust['calibration_after']['ece']:.4f} (T = {trust['temperature']:.3f})  "
          f"AURC {trust['risk_coverage']['aurc']:.4f}  error at 90% coverage "
          f"{trust['risk_coverage']['error_at_90']:.4f}")
    print(f"status {trust['status']}  error of accepted {trust['error_of_accepted']:.4f}  "
          f"wrong with p > 0.95: {trust['wrong_over_0.95']} "
          f"({trust['wrong_over_0.95_not_caught']} not referred or rejected)")
    print(f"results: {args.out}")
    return 0
