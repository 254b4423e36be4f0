"""Segmentation on this CPU, per runtime: ``mrimaster seg predict`` end to end (fresh process:
imports, model load, NIfTI read, sliding window, writing the mask (seg.nii.gz, or wt.nii.gz
without T1-Gd), the uncertainty map, volumes.json and PNGs),
median of ``--repeats`` cold runs, peak memory, and each row's Dice per region against the
reference and against the first row's labels. Rows: the final model alone (``--fast``: one
pass and the measuring left-right pass) in PyTorch and in the fastest engine (``auto``, the
baseline of the ratios: the single-model path of before the ensemble), then the fold ensemble
(the default where the model folder has ``folds/``) in each installed engine, then ``--fast``
with test-time mirroring (``--tta``, 8 passes).

    MRIMASTER_DATA_ROOT=../shared/datasets python benchmarks/bench_segment.py \\
        --case ../shared/datasets/brats-mini/deepmedic-brats2015/test/brats_2013_pat0001_1

Compare rows only within one run.

With ``--baseline-src DIR`` (the ``src`` folder of another checkout, e.g. ``git worktree add
/tmp/base HEAD~3``) it compares code instead of runtimes: the default run (``auto``, the
ensemble) with that code and with this one, their cold runs interleaved so that both meet the
same machine, the medians and their ratio, and the Dice between the two masks.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mrimaster.inference.graph import ENGINE_OF_RUNTIME, engine_problem
from mrimaster.segmentation.cases import find_case
from mrimaster.segmentation.labels import REGIONS, to_regions
from mrimaster.segmentation.metrics import dice
from mrimaster.segmentation.outputs import result_mask
from mrimaster.segmentation.volumes import load_nifti


def _regions(out: Path) -> np.ndarray:
    mask, convention = result_mask(out)
    labels = np.asarray(load_nifti(mask).dataobj).astype(np.int16)
    return to_regions(labels, convention)[0]


def _cold_run(args: argparse.Namespace, out: Path, runtime: str, extra: list[str],
              src: Path | None = None) -> float:
    """One ``seg predict`` in a fresh process (``src``: run that checkout's code); seconds."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")])
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mrimaster.cli.main", "-q", "seg", "predict",
                    "--model", args.model, "--runtime", runtime, *extra,
                    "--case", str(args.case), "--out", str(out)], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def compare_code(args: argparse.Namespace) -> None:
    """The ``--baseline-src`` mode (see the module docstring)."""
    walls: dict[str, list[float]] = {"baseline": [], "this": []}
    with tempfile.TemporaryDirectory() as tmp:
        outs = {k: Path(tmp) / k for k in walls}
        for _ in range(args.repeats):
            for key, src in (("baseline", args.baseline_src), ("this", None)):
                walls[key].append(_cold_run(args, outs[key], "auto", [], src))
        a, b = _regions(outs["baseline"]), _regions(outs["this"])
        same = ", ".join(f"{name} {dice(a[k], b[k]):.4f}" for k, name in enumerate(REGIONS))
    base = statistics.median(walls["baseline"])
    for key, runs in walls.items():
        median = statistics.median(runs)
        print(f"{key:<9} code: median {median:6.2f} s (runs {', '.join(f'{w:.2f}' for w in runs)})"
              f"  time / baseline {median / base:5.2f}", flush=True)
    print(f"Dice between the two masks: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", type=Path, required=True)
    parser.add_argument("--model", default="default")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline-src", type=Path,
                        help="compare this code with another checkout's src folder")
    args = parser.parse_args()
    if args.baseline_src is not None:
        print(f"case {args.case}; model {args.model}; {args.repeats} cold runs each, "
              f"interleaved; baseline code {args.baseline_src}")
        compare_code(args)
        return
    case = find_case(args.case)
    reference = None
    if case.seg is not None and case.convention is not None:
        ref_labels = np.asarray(load_nifti(case.seg).dataobj).astype(np.int16)
        reference, known = to_regions(ref_labels, case.convention)
    engines = [r for r in ("onnx", "openvino")
               if any(engine_problem(v) is None for v in ENGINE_OF_RUNTIME[r])]
    runtimes = [("torch", ["--fast"]), ("auto", ["--fast"])] + [(r, []) for r in engines] + \
        [("auto", []), ("auto", ["--fast", "--tta"])]
    print(f"case {args.case}; model {args.model}; {args.repeats} cold runs per runtime")
    base = None
    torch_regions = None
    with tempfile.TemporaryDirectory() as tmp:
        for runtime, extra in runtimes:
            out = Path(tmp) / (runtime + "".join(extra))
            walls = [_cold_run(args, out, runtime, extra) for _ in range(args.repeats)]
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            median = statistics.median(walls)
            base = base if base is not None or runtime != "auto" else median
            regions = _regions(out)
            torch_regions = torch_regions if torch_regions is not None else regions
            cells = []
            for k, name in enumerate(REGIONS):
                vs_torch = dice(regions[k], torch_regions[k])
                vs_ref = (f"{dice(regions[k], reference[k]):.4f}"
                          if reference is not None and known[k] else "-")
                cells.append(f"{name} {vs_ref} (vs first row {vs_torch:.4f})")
            name = " ".join([runtime, *extra])
            ratio = f"{median / base:5.2f}" if base else "  -  "
            print(f"{name:<20} {median:6.2f} s  time / auto --fast {ratio}  "
                  f"peak so far {peak:5.0f} MB  Dice: " + ", ".join(cells), flush=True)


if __name__ == "__main__":
    main()
