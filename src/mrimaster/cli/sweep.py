"""``mrimaster sweep``."""

from __future__ import annotations

import argparse
from pathlib import Path

from mrimaster.settings import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="hyper-parameter search (Optuna) over a training config, "
                       "selected on validation, resumable",
                       description="Optuna study over a training config: every trial an "
                       "MLflow child run, median pruning on validation macro F1, the study in "
                       "a database (resume by running the same command again), best.yaml "
                       "written. The space file maps config keys to {type: float|int|"
                       "categorical, low, high, log, choices}.")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--space", type=Path, required=True)
    p.add_argument("--trials", type=int, required=True, help="trials to run now")
    p.add_argument("--out", type=Path, required=True, help="sweep folder")
    p.add_argument("--study", default="", help="study name (default from the file names)")
    p.add_argument("--storage", default="", help="Optuna storage URL (default: "
                   "<runs dir>/optuna.db; a database of its own, not MLflow's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from mrimaster.training.sweep import SweepConfig, run_sweep

    result = run_sweep(SweepConfig(args.config, args.space, args.trials, args.out, args.study,
                                   args.storage, args.overrides), settings)
    print(f"study {result['study']}: {result['trials']} trials, best #{result['best_trial']} "
          f"validation macro F1 {result['best_value']:.4f} with {result['best_params']}; "
          f"config: {args.out / 'best.yaml'}")
    return 0
