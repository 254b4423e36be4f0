"""``mrimaster seg train|cv|predict|evaluate|export|export-onnx|export-dataset|refit-trust``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from mrimaster.device import DEVICES
from mrimaster.inference.runtime import RUNTIMES
from mrimaster.settings import Settings

if TYPE_CHECKING:
    from mrimaster.segmentation.infer import SegmentResult

DEVICE_HELP = "auto: a CUDA GPU when there is one (PyTorch), else the CPU"
TTA_HELP = ("test-time augmentation: average the 8 mirrorings of the volume (about 8 times "
            "the network time)")
FAST_HELP = ("the final model alone instead of the ensemble of the cross-validation folds "
             "(about a fifth of the network time; its uncertainty comes from one mirrored pass)")
RUNTIME_HELP = ("inference engine (default auto: the fastest validated variant of the model's "
                "ONNX export whose engine is installed, else torch + MONAI)")


def _case_args(p: argparse.ArgumentParser, study: bool = False) -> None:
    p.add_argument("--case", type=Path, action="append", default=[],
                   help=("a study (repeatable): a DICOM folder or zip as the scanner wrote it, "
                         "or a folder of NIfTI volumes (layout recognised by file names); "
                         "sequences on different grids are registered onto the reference"
                         if study else
                         "case folder (repeatable); its layout is recognised by file names"))
    for m in ("flair", "t1", "t1ce", "t2"):
        p.add_argument(f"--{m}", type=Path, help=f"explicit {m} volume (instead of --case)")
    p.add_argument("--seg", type=Path, help="explicit label map")
    p.add_argument("--labels", help="label convention: brats2015, brats2021, msd, brats2023, wt")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("seg", help="3D tumour segmentation (BraTS-style multimodal MRI)")
    seg_sub = p.add_subparsers(dest="seg_command", required=True)
    tr = seg_sub.add_parser("train", help="train a 3D U-Net into a run folder")
    tr.add_argument("--config", type=Path, help="YAML config (see configs/seg-default.yaml)")
    tr.add_argument("--set", dest="overrides", action="append", default=[],
                    metavar="KEY=VALUE")
    tr.add_argument("--data", type=Path, dest="data_dir",
                    help="root of train_cases; with --init: a reviewed export (from "
                    "`seg export-dataset` or the web app), all of whose cases are trained on")
    tr.add_argument("--init", type=Path,
                    help="fine-tune: start from this model's weights (run folder or model.pt) "
                    "at the config's init_lr; without --config the recipe saved next to it "
                    "is used, and its train_cases are replayed beside the export's cases")
    tr.add_argument("--replay", type=Path,
                    help="with --init: root of the replayed train_cases (default: the "
                    "recipe's data_dir)")
    tr.add_argument("--out", type=Path, dest="out_dir")
    tr.add_argument("--no-track", dest="track", action="store_false", default=None)
    tr.set_defaults(handler=run_train)
    ed = seg_sub.add_parser("export-dataset", help="write labelled case folders as a "
                            "de-identified training set (BraTS 2021 layout + dataset.json), "
                            "their reference label maps standing for reviewed masks")
    ed.add_argument("--case", type=Path, action="append", required=True,
                    help="labelled case folder (repeatable); layout recognised by file names")
    ed.add_argument("--labels", help="label convention of the cases' label maps (default: "
                    "from the layout)")
    ed.add_argument("--source", default="reference label map of {case}",
                    help="source recorded per case ({case}: the folder name)")
    ed.add_argument("--licence", help="licence note for dataset.json")
    ed.add_argument("--out", type=Path, required=True, help="new or empty folder")
    ed.set_defaults(handler=run_export_dataset)
    cv = seg_sub.add_parser("cv", help="k-fold cross-validation of a recipe by patient, the "
                            "post-processing chosen per region, and the final model trained on "
                            "every case")
    cv.add_argument("--config", type=Path, required=True,
                    help="recipe (configs/seg-default.yaml); its train_cases are split")
    cv.add_argument("--set", dest="overrides", action="append", default=[],
                    metavar="KEY=VALUE", help="override a recipe key")
    cv.add_argument("--folds", type=int, default=5)
    cv.add_argument("--no-final", dest="final", action="store_false",
                    help="skip training the final model on every case")
    cv.add_argument("--data", type=Path, dest="data_dir")
    cv.add_argument("--out", type=Path, dest="out_dir", required=True,
                    help="run folder (an unfinished one is resumed)")
    cv.add_argument("--fold", dest="only", metavar="K|final",
                    help="train only fold K (0 to folds-1) or the final model, then stop; "
                    "run the folds side by side this way, then once more without --fold to "
                    "score them and write the tables")
    cv.set_defaults(handler=run_cv)
    pr = seg_sub.add_parser("predict", help="segment a case: seg.nii.gz (wt.nii.gz without "
                            "T1-Gd), volumes.json, PNGs")
    pr.add_argument("--model", default="default", help="run folder, model.pt, or 'default'")
    _case_args(pr, study=True)
    pr.add_argument("--out", type=Path, required=True)
    pr.add_argument("--role", action="append", default=[], metavar="SERIES=ROLE",
                    help="DICOM input: set a series' role (SERIES: its number or NIfTI name in "
                    "series.json; ROLE: flair, t1, t1ce, t2 or none), overriding the detector")
    pr.add_argument("--strip", choices=["auto", "always", "never"], default="auto",
                    help="skull stripping: auto (when the reference is not stripped already)")
    pr.add_argument("--bias", choices=["n4", "none"], default="n4",
                    help="intensity bias correction of every sequence (N4, a coarse field)")
    pr.add_argument("--tta", action="store_true", help=TTA_HELP)
    pr.add_argument("--fast", action="store_true", help=FAST_HELP)
    pr.add_argument("--runtime", choices=RUNTIMES, default="auto", help=RUNTIME_HELP)
    pr.add_argument("--device", choices=DEVICES, default="auto", help=DEVICE_HELP)
    pr.set_defaults(handler=run_predict)
    ev = seg_sub.add_parser("evaluate", help="Dice and HD95 per region on labelled cases")
    ev.add_argument("--model", default="default")
    _case_args(ev)
    ev.add_argument("--out", type=Path, required=True)
    ev.add_argument("--tta", action="store_true", help=TTA_HELP)
    ev.add_argument("--fast", action="store_true", help=FAST_HELP)
    ev.add_argument("--runtime", choices=RUNTIMES, default="auto", help=RUNTIME_HELP)
    ev.add_argument("--device", choices=DEVICES, default="auto", help=DEVICE_HELP)
    ev.set_defaults(handler=run_evaluate)
    ox = seg_sub.add_parser("export-onnx", help="export a model folder's U-Net to ONNX and "
                            "validate each engine on labelled cases (writes model.onnx and "
                            "model.onnx.json into the folder)")
    ox.add_argument("--model", required=True, help="model or run folder (not `default`)")
    ox.add_argument("--write-shipped", action="store_true",
                    help="allow writing into a model inside the shipped models folder")
    _case_args(ox)
    ox.set_defaults(handler=run_export_onnx)
    rt = seg_sub.add_parser("refit-trust", help="refit a model folder's case trust rule on "
                            "the held-out predictions its cross-validation recorded (this "
                            "version's fit), rewriting trust.json, cv.json, cv.md and the "
                            "card's trust sections; the networks are unchanged")
    rt.add_argument("--model", required=True, help="model folder (not `default`)")
    rt.add_argument("--write-shipped", action="store_true",
                    help="allow writing into a model inside the shipped models folder")
    rt.set_defaults(handler=run_refit_trust)
    ex = seg_sub.add_parser("export", help="copy a cross-validation run's final model into a "
                            "model folder with a model card (the cross-validation table)")
    ex.add_argument("run_dir", type=Path, help="folder of `mrimaster seg cv`")
    ex.add_argument("--out", type=Path, required=True)
    ex.add_argument("--command", default="", help="cross-validation command to record")
    ex.set_defaults(handler=run_export)


def _cases(args: argparse.Namespace) -> list:
    from mrimaster.errors import DataError
    from mrimaster.segmentation.cases import explicit_case, find_case

    explicit = {m: getattr(args, m) for m in ("flair", "t1", "t1ce", "t2") if getattr(args, m)}
    cases = [find_case(c, args.labels) for c in args.case]
    if explicit:
        cases.append(explicit_case("case", explicit, args.seg, args.labels))
    if not cases:
        raise DataError("no case given", "pass --case DIR or --flair/--t1ce/... files")
    return cases


def run_train(args: argparse.Namespace, settings: Settings) -> int:
    from mrimaster.config import load_config
    from mrimaster.errors import ConfigError
    from mrimaster.segmentation.train import SegTrainConfig, run_seg_training

    if args.init is None:
        if args.replay is not None:
            raise ConfigError("--replay needs --init", "pass the model to fine-tune")
        cfg = load_config(SegTrainConfig, args.config, args.overrides, data_dir=args.data_dir,
                          out_dir=args.out_dir, track=args.track)
    else:  # fine-tuning: --data is the reviewed export, --replay the root of train_cases
        recipe = args.config or _init_recipe(args.init, settings)
        cfg = load_config(SegTrainConfig, recipe, args.overrides, data_dir=args.replay,
                          out_dir=args.out_dir, track=args.track, init=args.init,
                          reviewed_dir=args.data_dir)
    print(f"run folder: {run_seg_training(cfg, settings)}")
    return 0


def _init_recipe(init: Path, settings: Settings) -> Path | None:
    """The ``config.yaml`` saved next to the init model, if any."""
    from mrimaster.models.paths import resolve_model_path

    path = resolve_model_path(init, settings.models_dir, "seg-default").parent / "config.yaml"
    return path if path.is_file() else None


def run_export_dataset(args: argparse.Namespace, settings: Settings) -> int:
    from mrimaster.segmentation.cases import find_case
    from mrimaster.segmentation.reviewed import (
        DEFAULT_LICENCE,
        reviewed_from_case,
        write_reviewed_dataset,
    )

    cases = [reviewed_from_case(c, args.source.format(case=c.name))
             for c in (find_case(f, args.labels) for f in args.case)]
    out = write_reviewed_dataset(cases, args.out, licence=args.licence or DEFAULT_LICENCE)
    print(f"exported {len(cases)} cases to {out}")
    return 0


def run_cv(args: argparse.Namespace, settings: Settings) -> int:
    from mrimaster.config import load_config
    from mrimaster.segmentation.crossval import CrossValConfig, run_cross_validation
    from mrimaster.segmentation.train import SegTrainConfig

    train = load_config(SegTrainConfig, args.config, args.overrides, data_dir=args.data_dir)
    cfg = CrossValConfig(train, args.folds, args.final, args.out_dir, args.only)
    run = run_cross_validation(cfg, settings)
    if cfg.only is not None:
        name = "final" if cfg.only == "final" else f"fold_{cfg.only}"
        print(f"trained: {run / name}")
        return 0
    print((run / "cv.md").read_text(), end="")
    print(f"run folder: {run}")
    return 0


def _describe(result: SegmentResult) -> str:
    from mrimaster.segmentation.infer import NOT_ASSESSABLE

    parts = [f"{k} {v:.1f} mL" if v is not None else f"{k} {NOT_ASSESSABLE}"
             for k, v in result.volumes_ml.items()]
    used = f"used {'+'.join(result.plan.used)}"
    ignored = "".join(f"; {m} not used ({why})" for m, why in result.plan.ignored.items())
    return ", ".join(parts) + f" ({used}{ignored})"


def _roles(pairs: list[str]) -> dict[str, str | None]:
    from mrimaster.errors import DataError

    roles: dict[str, str | None] = {}
    for pair in pairs:
        series, sep, role = pair.partition("=")
        if not sep or not series:
            raise DataError(f"--role {pair!r} is not SERIES=ROLE", "e.g. --role 7=t1ce")
        roles[series.strip()] = None if role.strip().lower() in ("", "none") else role.strip()
    return roles


def _sources(args: argparse.Namespace) -> list[Path | dict[str, Path]]:
    from mrimaster.errors import DataError

    explicit = {m: getattr(args, m) for m in ("flair", "t1", "t1ce", "t2") if getattr(args, m)}
    sources: list[Path | dict[str, Path]] = list(args.case)
    if explicit:
        sources.append(explicit)
    if not sources:
        raise DataError("no case given", "pass --case DIR|ZIP or --flair/--t1ce/... files")
    return sources


def run_predict(args: argparse.Namespace, settings: Settings) -> int:
    from mrimaster.imaging.prepare import PrepareConfig
    from mrimaster.models.paths import file_sha256, resolve_model_path
    from mrimaster.segmentation.cases import find_case
    from mrimaster.segmentation.infer import segment_case
    from mrimaster.segmentation.loading import load_segmenter_for_inference
    from mrimaster.segmentation.study import segment_study

    seg = load_segmenter_for_inference(args.model, settings.models_dir, args.runtime,
                                       args.device, args.fast, settings.check_brain_mri)
    model_file = resolve_model_path(args.model, settings.models_dir, "seg-default")
    version = f"{args.model}@{file_sha256(model_file)[:12]}"
    config = PrepareConfig(spacing_mm=float(min(seg.spacing)), strip=args.strip,
                           bias=args.bias, overrides=_roles(args.role))
    sources = _sources(args)
    for source in sources:
        name = "case" if isinstance(source, dict) else source.name.removesuffix(".zip")
        out = args.out if len(sources) == 1 else args.out / name
        if isinstance(source, Path) and source.is_dir() and \
                (msd := find_case_4d(source)) is not None:
            result = segment_case(seg, find_case(msd), out, args.tta)
        else:
            study = segment_study(seg, source, out, config, args.tta, version)
            result = study.result
            steps = ", ".join(f"{k} {v:.1f} s" for k, v in study.timings_s.items())
            print(f"{name}: reference {study.prepared.reference.name}; {steps}")
        print(f"{name}: {_describe(result)} -> {result.seg_path}")
        if result.status is not None:
            print(f"  status {result.status}" + (f": {result.reason}" if result.reason else ""))
        for note in result.notes:
            print(f"  warning: {note}")
    return 0


def find_case_4d(folder: Path) -> Path | None:
    """``folder`` when it is a Decathlon case (one 4D image of all sequences), else None."""
    from mrimaster.errors import DataError
    from mrimaster.segmentation.cases import find_case

    try:
        return folder if find_case(folder).image4d is not None else None
    except DataError:
        return None


def run_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from mrimaster.segmentation.evaluate import evaluate_cases, markdown_table, write_evaluation
    from mrimaster.segmentation.loading import load_segmenter_for_inference

    seg = load_segmenter_for_inference(args.model, settings.models_dir, args.runtime,
                                       args.device, args.fast, settings.check_brain_mri)
    metrics = evaluate_cases(seg, _cases(args), args.tta)
    write_evaluation(metrics, args.out)
    print(markdown_table(metrics), end="")
    print(f"results: {args.out}")
    return 0


def run_export(args: argparse.Namespace, settings: Settings) -> int:
    from mrimaster.segmentation.export import export_seg_run

    command = args.command or f"mrimaster seg cv --config CONFIG --out {args.run_dir}"
    print(f"exported to {export_seg_run(args.run_dir, args.out, command)}")
    return 0


def _model_to_write(args: argparse.Namespace, settings: Settings) -> Path:
    """``args.model``'s model file, refused when it is the shipped default named implicitly,
    or any shipped model without ``--write-shipped``."""
    from mrimaster.errors import ModelError
    from mrimaster.models.paths import refuse_shipped, resolve_model_path

    if args.model == "default":
        raise ModelError("refusing to write into the shipped default model implicitly",
                         "name its folder explicitly: --model models/seg-default")
    path = resolve_model_path(args.model, settings.models_dir, default="seg-default")
    refuse_shipped(path, settings.models_dir, args.write_shipped)
    return path


def run_refit_trust(args: argparse.Namespace, settings: Settings) -> int:
    import datetime

    from mrimaster.segmentation.export import refit_trust

    path = _model_to_write(args, settings)
    rule = refit_trust(path.parent, datetime.date.today().isoformat())
    print(rule.describe())
    for how in ("fitted", "leave_one_out"):
        v = rule.cv[how]["overall"]
        print(f"{how.replace('_', '-')}: {v['ok']} of {v['predictions']} ok, risk {v['risk']}, "
              f"lowest ok Dice {v['min_wt_dice_ok']}")
    return 0


def run_export_onnx(args: argparse.Namespace, settings: Settings) -> int:
    from mrimaster.segmentation.model import load_segmenter
    from mrimaster.segmentation.onnx_export import export_segmenter

    path = _model_to_write(args, settings)
    report = export_segmenter(load_segmenter(path), path, _cases(args))
    for name, v in report["variants"].items():
        why = v.get("why") or f"largest Dice difference {v['largest_dice_difference']:.4f}"
        print(f"{name:<14} {'kept' if v['kept'] else 'not kept'}: {why}")
    return 0
