"""``mrimaster models list|export|calibrate|promote|registry``: what acts on models."""

from __future__ import annotations

import argparse
from pathlib import Path

from mrimaster.settings import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list, export and calibrate models")
    models_sub = p.add_subparsers(dest="models_command", required=True)
    ls = models_sub.add_parser("list", help="the registered networks")
    ls.set_defaults(handler=run_list)
    ex = models_sub.add_parser("export", help="copy a finished run into a shipped model "
                               "folder with a model card and its ONNX export")
    ex.add_argument("run_dir", type=Path, help="run folder of `mrimaster train`")
    ex.add_argument("--out", type=Path, required=True, help="model folder to write")
    ex.add_argument("--command", default="", help="training command to record in the card")
    ex.add_argument("--no-onnx", dest="onnx", action="store_false",
                    help="skip the ONNX export and its checks (needs the run's data)")
    ex.set_defaults(handler=run_export)
    cs = models_sub.add_parser("check-set", help="store the slices and PyTorch logits each "
                               "machine checks an exported variant against before using it "
                               "(for folders exported before check sets; export writes it)")
    cs.add_argument("folder", type=Path, help="exported model folder (with onnx.json)")
    cs.add_argument("--data", type=Path, help="dataset the split refers to")
    cs.set_defaults(handler=run_check_set)
    c = models_sub.add_parser("calibrate", help="fit temperature, uncertainty, "
                              "out-of-distribution distance and referral on a run's own split, "
                              "then run its checks (updates the run's model file)")
    c.add_argument("--model", required=True, help="run folder (with config.yaml and split.csv)")
    c.add_argument("--data", type=Path, help="dataset the split refers to")
    c.add_argument("--target-error", type=float, default=0.03,
                   help="error allowed among non-referred predictions (default 0.03)")
    c.add_argument("--threshold-rule", choices=("empirical", "sgr"), default="empirical",
                   help="empirical: the largest threshold whose validation error meets the "
                   "target; sgr: selection with guaranteed risk (Geifman & El-Yaniv 2017), the "
                   "largest whose binomial upper bound at --delta meets it")
    c.add_argument("--delta", type=float, default=0.05,
                   help="sgr: the bound holds with probability 1 - delta (default 0.05)")
    c.add_argument("--temperature-rule", choices=("shift-aware", "validation"),
                   default="shift-aware",
                   help="shift-aware: the temperature fitted on the validation images and "
                   "their copies under the shift augmentation; validation: on them alone "
                   "(either shipped as fitted)")
    c.add_argument("--write-shipped", action="store_true",
                   help="allow rewriting a model inside the shipped models folder")
    c.add_argument("--no-checks", dest="checks", action="store_false",
                   help="skip the shift, presence, OOD and cost checks (checks.json)")
    c.set_defaults(handler=run_calibrate)
    pr = models_sub.add_parser("promote", help="point an alias (production, staging) of the "
                               "MLflow model registry at a version")
    pr.add_argument("name", help="registered model name (e.g. mrimaster-classifier)")
    pr.add_argument("version", help="version number")
    pr.add_argument("--alias", default="production")
    pr.set_defaults(handler=run_promote)
    rg = models_sub.add_parser("registry", help="registered models, versions and aliases")
    rg.set_defaults(handler=run_registry)


def run_list(args: argparse.Namespace, settings: Settings) -> int:
    from mrimaster.models.registry import MODELS

    for name, spec in MODELS.items():
        pre = "ImageNet" if spec.pretrainable else "scratch"
        print(f"{name:<20} {spec.image_size:>4} px  {pre:<8}  {spec.description}")
    return 0


def run_promote(args: argparse.Namespace, settings: Settings) -> int:
    import mlflow
    from mlflow.exceptions import MlflowException

    from mrimaster.errors import ModelError

    client = mlflow.MlflowClient(settings.tracking_uri)
    try:
        client.get_model_version(args.name, args.version)
        client.set_registered_model_alias(args.name, args.alias, args.version)
    except MlflowException as exc:
        raise ModelError(f"cannot promote {args.name} version {args.version} ({exc.message})",
                         "list them with `mrimaster models registry`") from exc
    print(f"models:/{args.name}@{args.alias} -> version {args.version}")
    return 0


def run_registry(args: argparse.Namespace, settings: Settings) -> int:
    import mlflow

    client = mlflow.MlflowClient(settings.tracking_uri)
    for model in client.search_registered_models():
        aliases = {v: a for a, v in (model.aliases or {}).items()}
        for v in client.search_model_versions(f"name='{model.name}'"):
            alias = f"  @{aliases[v.version]}" if v.version in aliases else ""
            print(f"{model.name:<28} v{v.version:<4} run {v.run_id}{alias}")
    return 0


def run_calibrate(args: argparse.Namespace, settings: Settings) -> int:
    from mrimaster.training.checks import run_checks
    from mrimaster.training.fit_trust import CalibrateConfig, run_calibration

    report = run_calibration(CalibrateConfig(args.model, args.data,
                                             target_error=args.target_error,
                                             write_shipped=args.write_shipped,
                                             threshold_rule=args.threshold_rule,
                                             delta=args.delta,
                                             temperature_rule=args.temperature_rule), settings)
    ref, ood = report["referral"], report["ood"]
    print(f"temperature {report['temperature']:.4f} ({report['temperature_rule']}; on "
          f"validation alone {report['temperature_fitted']:.4f}); validation ECE "
          f"{report['before']['ece']:.4f} -> "
          f"{report['after']['ece']:.4f}; uncertainty {ref['method']}, refer above "
          f"{ref['threshold']:.4f} ({ref.get('rule', 'empirical')} rule); feature distance: "
          f"refer above {ood['refer_above']:.2f}, "
          f"reject above {ood['reject_above']:.2f} (validation coverage "
          f"{ref['val_coverage']:.1%})")
    sgr = report["sgr"]
    print(f"selection with guaranteed risk: accept uncertainty <= {sgr['threshold']:.4f}, "
          f"validation coverage {sgr['coverage']:.1%}, error {sgr['risk']:.3f}, bound "
          f"{sgr['bound']:.3f} at delta {sgr['delta']} (target {sgr['target_risk']})")
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


def run_check_set(args: argparse.Namespace, settings: Settings) -> int:
    from mrimaster.inference.onnx_export import add_site_check

    site = add_site_check(args.folder, settings, args.data)
    print(f"check set of {site['n']} validation slices written to {args.folder / site['file']};"
          f" rule: {site['rule']}")
    return 0


def run_export(args: argparse.Namespace, settings: Settings) -> int:
    from mrimaster.training.export import export_run

    command = args.command
    if not command:
        command = f"mrimaster train --config {args.run_dir / 'config.yaml'}"
    out = export_run(args.run_dir, args.out, command, settings if args.onnx else None)
    print(f"exported to {out}")
    return 0
