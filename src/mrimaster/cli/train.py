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
    ex = sub.add_parser("export", help="copy a finished run into a shipped model folder with a "
                        "model card")
    ex.add_argument("run_dir", type=Path, help="run folder of `mrimaster train`")
    ex.add_argument("--out", type=Path, required=True, help="model folder to write")
    ex.add_argument("--command", default="", help="training command to record in the card")
    ex.add_argument("--no-onnx", dest="onnx", action="store_false",
                    help="skip the ONNX export and its checks (needs the run's data)")
    ex.set_defaults(handler=run_export)
    c = sub.add_parser("calibrate", help="fit temperature, uncertainty, out-of-distribution "
                       "distance and referral on a run's own split, then run its checks "
                       "(updates the run's model file)")
    c.add_argument("--model", required=True, help="run folder (with config.yaml and split.csv)")
    c.add_argument("--data", type=Path, help="dataset the split refers to")
    c.add_argument("--target-error", type=float, default=0.03,
                   help="error allowed among non-referred predictions (default 0.03)")
    c.add_argument("--no-checks", dest="checks", action="store_false",
                   help="skip the shift, presence, OOD and cost checks (checks.json)")
    c.set_defaults(handler=run_calibrate)


def run_calibrate(args: argparse.Namespace, settings: Settings) -> int:
    from mrimaster.training.calibrate import CalibrateConfig, run_calibration
    from mrimaster.training.checks import run_checks

    report = run_calibration(CalibrateConfig(args.model, args.data,
                                             target_error=args.target_error), settings)
    ref, ood = report["referral"], report["ood"]
    print(f"temperature {report['temperature']:.4f} (fitted {report['temperature_fitted']:.4f},"
          f" never below 1); validation ECE {report['before']['ece']:.4f} -> "
          f"{report['after']['ece']:.4f}; uncertainty {ref['method']}, refer above "
          f"{ref['threshold']:.4f}; feature distance: refer above {ood['refer_above']:.2f}, "
          f"reject above {ood['reject_above']:.2f} (validation coverage "
          f"{ref['val_coverage']:.1%})")
    if args.checks:
        model = Path(args.model)
        run_dir = model if model.is_dir() else model.parent
        checks = run_checks(run_dir, settings, model if model.is_file() else None, args.data)
        for key in ("in_source", "source_held_out"):
            if key in checks:
                c, t = checks[key], checks[key]["trust"]
                print(f"{key}: n {c['n']} accuracy {c['accuracy']:.4f} macro F1 "
                      f"{c['macro_f1']:.4f} ECE {t['calibration_after']['ece']:.4f} wrong with "
                      f"p > 0.95: {t['wrong_over_0.95']} status {t['status']}")
        if "presence" in checks:
            pr = checks["presence"]
            print(f"presence (report part): sensitivity {pr['sensitivity']:.4f}, confident "
                  f"misses {pr['confident_misses']} ({pr['confident_misses_not_caught']} not "
                  f"caught), status {pr['status']}")
        print(f"ood probes: {checks['ood']['status']}")
    return 0


def run_export(args: argparse.Namespace, settings: Settings) -> int:
    from mrimaster.training.export import export_run

    command = args.command
    if not command:
        command = f"mrimaster train --config {args.run_dir / 'config.yaml'}"
    out = export_run(args.run_dir, args.out, command, settings if args.onnx else None)
    print(f"exported to {out}")
    return 0


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
