"""``mrimaster explain``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mrimaster.device import DEVICES
from mrimaster.settings import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="Grad-CAM maps, overlays and the layer-by-layer figure")
    p.add_argument("--model", default="default", help="run folder, model.pt, or 'default'")
    p.add_argument("images", nargs="+", type=Path,
                   help="image files, DICOM slices or folders (read as predict reads them; a "
                   "slice predict rejects gets no map)")
    p.add_argument("--layer", help="any module's name (a conv layer, a block, an activation), "
                   "or 'all' for every conv layer (default: the model's rectified head)")
    p.add_argument("--class", dest="target", help="class to explain (default: predicted)")
    p.add_argument("--method", default="gradcam", choices=["gradcam", "gradcam++"])
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="auto: a CUDA GPU when there is one (PyTorch), else the CPU")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--sanity-check", action="store_true",
                   help="also compare with maps of a randomly re-initialised network "
                   "(Adebayo et al. 2018); writes sanity.json")
    p.set_defaults(handler=run_explain)


def run_explain(args: argparse.Namespace, settings: Settings) -> int:
    from mrimaster.explain.explain import ExplainConfig, run_explain

    cfg = ExplainConfig(args.model, args.images, args.out, args.layer, args.target, args.method,
                        args.sanity_check, args.device)
    for s in run_explain(cfg, settings):
        if s["status"] == "skipped":
            print(f"skipped {s['image']}: {s['reason']}", file=sys.stderr)
        elif s["status"] == "reject":
            print(f"{s['image']}: REJECT, no map: {s['reason']}")
        else:
            refer = f", REFER TO A RADIOLOGIST: {s['reason']}" if s["status"] == "refer" else ""
            print(f"{s['image']}: {s['class']} (p = {s['probability']:.3f}), "
                  f"{len(s['layers'])} layer(s){refer}")
    if args.sanity_check:
        import json

        report = json.loads((args.out / "sanity.json").read_text())
        print(f"randomisation check: mean Spearman rank correlation trained vs random weights "
              f"{report['mean_spearman']:.3f}")
    print(f"results: {args.out}")
    return 0
