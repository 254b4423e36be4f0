"""``mrimaster train``."""

from __future__ import annotations

import argparse
from pathlib import Path

from mrimaster.settings import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a classifier into a run folder",
                       description="Train a classifier. Settings come from --config (YAML), "
                       "then --set key=value overrides, then the explicit flags.")
    p.add_argument("--config", type=Path, help="YAML config (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key (repeatable), e.g. --set epochs=5")
    p.add_argument("--model", help="registered model name")
    p.add_argument("--data", type=Path, dest="data_dir", help="class-per-folder dataset")
    p.add_argument("--epochs", type=int)
    p.add_argument("--out", type=Path, dest="out_dir", help="run folder to write")
    p.add_argument("--resume", type=Path, help="run folder to continue")
    p.add_argument("--no-track", dest="track", action="store_false", default=None,
                   help="do not log to MLflow")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from mrimaster.config import load_config
    from mrimaster.training.config import TrainConfig
    from mrimaster.training.train import run_training

    config_path = args.config
    if args.resume and config_path is None and (args.resume / "config.yaml").is_file():
        config_path = args.resume / "config.yaml"
    cfg = load_config(TrainConfig, config_path, args.overrides, model=args.model,
                      data_dir=args.data_dir, epochs=args.epochs, out_dir=args.out_dir,
                      resume=args.resume, track=args.track)
    run_dir = run_training(cfg, settings)
    print(f"run folder: {run_dir}")
    return 0
