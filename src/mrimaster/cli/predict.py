"""``mrimaster predict``."""

from __future__ import annotations

import argparse
import csv
import io
import json
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
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="auto: a CUDA GPU when there is one (PyTorch), else the CPU")
    p.add_argument("--runtime", choices=RUNTIMES, default="auto",
                   help="inference engine (default auto: the fastest validated ONNX variant "
                   "whose engine is installed, else torch)")
    p.set_defaults(handler=run)


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
                                  brain_check=load_brain_check(settings.models_dir))
    text = _render(rows, args.format)
    if args.output:
        args.output.write_text(text)
        print(f"{len(rows)} predictions written to {args.output} "
              f"(runtime {clf.runtime.name})")
    else:
        sys.stdout.write(text)
    for item in skipped:
        print(f"skipped {item['path']}: {item['reason']}", file=sys.stderr)
    return 0 if rows else 2
