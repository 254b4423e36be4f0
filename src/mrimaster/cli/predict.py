"""``mrimaster predict``."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

from mrimaster.device import DEVICES
from mrimaster.inference.runtime import RUNTIMES
from mrimaster.settings import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify image files, DICOM slices and folders")
    p.add_argument("--model", default="default", help="run folder, model.pt, or 'default'")
    p.add_argument("paths", nargs="+", type=Path,
                   help="image files (JPEG, PNG, ...), DICOM slices (read as the web app "
                   "reads them) or folders")
    p.add_argument("--format", choices=["table", "json", "csv"], default="table")
    p.add_argument("--output", type=Path, help="write to this file instead of the screen")
    p.add_argument("--batch-size", type=_positive, default=64)
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="auto: a CUDA GPU when there is one (PyTorch), else the CPU")
    p.add_argument("--runtime", choices=RUNTIMES, default="auto",
                   help="inference engine (default auto: the fastest validated ONNX variant "
                   "whose engine is installed, else torch)")
    p.set_defaults(handler=run)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def _check_output(path: Path | None) -> None:
    """Refuse an ``--output`` that cannot be written before any image is read."""
    from mrimaster.errors import ConfigError

    if path is None:
        return
    if path.is_dir():
        raise ConfigError(f"--output {path} is a folder", "give a file name, e.g. "
                          f"{path / 'predictions.csv'}")
    if not path.parent.is_dir():
        raise ConfigError(f"--output {path}: the folder {path.parent} does not exist",
                          "create it first, or write somewhere else")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ConfigError(f"--output {path}: this user may not write there",
                          "write somewhere else")


def _skipped_row(item: dict[str, str], keys: list[str]) -> dict[str, Any]:
    """A file that was not read, as a row of the output (status ``skipped``, no class)."""
    return {k: None for k in keys} | {"path": item["path"], "status": "skipped",
                                      "reason": item["reason"], "referred": True}


def _render(rows: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        if rows:
            writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return buf.getvalue()
    if not rows:
        return "no images\n"
    probs = [k for k in rows[0] if k.startswith("p_")]
    width = max(len("path"), *(len(r["path"]) for r in rows))
    head = f"{'path':<{width}}  {'status':<6}  {'prediction':<11} {'conf':>5} {'uncert':>6}  " \
        + " ".join(f"{k[2:]:>10}" for k in probs) + "  why"
    lines = [head, "-" * len(head)]
    for r in rows:
        if r["status"] == "skipped":
            lines.append(f"{r['path']:<{width}}  {'SKIP':<6}  {r['reason']}")
            continue
        if r["status"] == "reject":
            lines.append(f"{r['path']:<{width}}  {'REJECT':<6}  {'-':<11} {'-':>5} {'-':>6}  "
                         + " ".join(f"{'-':>10}" for _ in probs) + f"  {r['reason']}")
            continue
        why = f"  REFER TO A RADIOLOGIST: {r['reason']}" if r["status"] == "refer" else ""
        lines.append(f"{r['path']:<{width}}  {r['status']:<6}  {r['prediction']:<11} "
                     f"{r['confidence']:5.3f} {r['uncertainty']:6.3f}  "
                     + " ".join(f"{r[k]:10.3f}" for k in probs) + why)
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace, settings: Settings) -> int:
    from mrimaster.inference.loading import load_for_inference
    from mrimaster.inference.predict import predict_files
    from mrimaster.trust.brain_check import load_brain_check

    _check_output(args.output)
    clf = load_for_inference(args.model, settings.models_dir, args.runtime, args.device,
                             settings.cache_dir)
    choice = clf.meta.get("runtime_choice", {})
    print(f"runtime {clf.runtime.name}: {choice.get('why', 'as loaded')}", file=sys.stderr)
    skipped_variants = choice.get("skipped", [])
    if any("check" in why for why in skipped_variants):  # a faster one was refused here
        for why in skipped_variants:
            print(f"  not used: {why}", file=sys.stderr)
    rows, skipped = predict_files(clf, args.paths, args.batch_size,
                                  progress=sys.stderr.isatty(),
                                  brain_check=load_brain_check(settings.models_dir),
                                  log_skipped=False)
    for item in skipped:
        print(f"skipped {item['path']}: {item['reason']}", file=sys.stderr)
    # the output lists them too, after the reads
    keys = list(rows[0]) if rows else ["path", "status", "reason", "prediction", "confidence"]
    text = _render(rows + [_skipped_row(item, keys) for item in skipped], args.format)
    if args.output:
        args.output.write_text(text)
        print(f"{len(rows)} predictions written to {args.output} "
              f"(runtime {clf.runtime.name})"
              + (f"; {len(skipped)} file(s) skipped, listed with status 'skipped'"
                 if skipped else ""))
    else:
        sys.stdout.write(text)
    return 0 if rows else 2
