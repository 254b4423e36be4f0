"""A whole study end to end on this CPU: ``mrimaster seg predict --case STUDY`` (fresh process)
on a DICOM study simulated from a real BraTS case (every sequence on its own oblique grid, a
localizer and a DWI beside them; :mod:`mrimaster.imaging.simulate`), with each step's share:
import (DICOM to NIfTI, roles), bias correction (N4), registration, skull stripping,
segmentation, outputs (mask on the reference grid, DICOM SEG, check pictures). Twice: skull
stripping as decided (the BraTS volumes are stripped already, so deepbet does not run) and
forced (``--strip always``: deepbet runs, as for a scanner's head); and once with the 3D
brain-MRI check switched off (``MRIMASTER_CHECK_BRAIN_MRI=off``), for its cost. The baseline,
measured in the same run, is the same case given pre-aligned as NIfTI (one grid: no
registration, no DICOM).

    MRIMASTER_DATA_ROOT=../shared/datasets python benchmarks/bench_study.py --repeats 3

Compare rows only within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mrimaster.imaging.simulate import build_study

CASE = "brats-mini/deepmedic-brats2015/test/brats_2013_pat0001_1"
STEPS = ("import", "brain_mri_check", "bias_correction", "registration", "skull_strip",
         "segmentation", "outputs")


def _run(args: list[str], out: Path, env: dict[str, str]) -> tuple[float, dict[str, float]]:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mrimaster.cli.main", "seg", "predict", *args,
                    "--out", str(out)], check=True, capture_output=True,
                   env={**os.environ, **env})
    wall = time.perf_counter() - start
    info = json.loads((out / "volumes.json").read_text())
    return wall, info.get("study", {}).get("timings_s", {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    root = Path(os.environ.get("MRIMASTER_DATA_ROOT", "../shared/datasets"))
    src = root / CASE
    print(f"case {CASE}; {os.cpu_count()} CPUs; median of {args.repeats} cold runs")
    with tempfile.TemporaryDirectory() as tmp:
        study = Path(tmp) / "study"
        build_study({"flair": src / "Flair_subtrMeanDivStd.nii.gz",
                     "t1ce": src / "T1c_subtrMeanDivStd.nii.gz"}, study, seed=1)
        on: dict[str, str] = {}
        runs = {"pre-aligned NIfTI (baseline)": (["--case", str(src)], on),
                "DICOM study": (["--case", str(study)], on),
                "DICOM study, brain check off": (["--case", str(study)],
                                                 {"MRIMASTER_CHECK_BRAIN_MRI": "off"}),
                "DICOM study, deepbet forced": (["--case", str(study), "--strip", "always"],
                                                on)}
        base = None
        print(f"{'input':<30} {'wall s':>7} {'x base':>7}  " +
              " ".join(f"{s[:12]:>12}" for s in STEPS))
        for name, (extra, env) in runs.items():
            walls: list[float] = []
            steps: list[dict[str, float]] = []
            for k in range(args.repeats):
                wall, timing = _run(extra, Path(tmp) / f"{len(walls)}-{k}-{name[:3]}", env)
                walls.append(wall)
                steps.append(timing)
            wall = statistics.median(walls)
            base = base or wall
            shares = []
            for step in STEPS:
                values = [t.get(step, 0.0) for t in steps]
                s = statistics.median(values)
                shares.append(f"{s:5.1f} ({s / wall:3.0%})")
            print(f"{name:<30} {wall:7.1f} {wall / base:7.2f}  " + " ".join(
                f"{s:>12}" for s in shares))
    print("steps: seconds (share of the wall time); the rest is start-up (imports, model "
          "load) and writing")


if __name__ == "__main__":
    main()
