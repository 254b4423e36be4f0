"""Segmentation speed on this CPU: seconds per 240x240x155 case for ``seg predict`` (load,
preprocess, sliding-window inference, writing seg.nii.gz, volumes.json and PNGs) and peak
resident memory.

    python benchmarks/bench_segment.py --case DIR [--model default] [--repeats 2]

Each repeat runs in a fresh process so that peak memory is per run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import json, resource, sys, time
from pathlib import Path
t0 = time.perf_counter()
from mrimaster.segmentation.cases import find_case
from mrimaster.segmentation.infer import segment_case
from mrimaster.segmentation.model import load_segmenter, resolve_segmenter
from mrimaster.settings import load_settings
seg = load_segmenter(resolve_segmenter(sys.argv[1], load_settings().models_dir))
t1 = time.perf_counter()
segment_case(seg, find_case(Path(sys.argv[2])), Path(sys.argv[3]))
t2 = time.perf_counter()
print(json.dumps({"import_load_s": t1 - t0, "segment_s": t2 - t1,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", type=Path, required=True)
    parser.add_argument("--model", default="default")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; case {args.case}")
    runs = []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", CHILD, args.model, str(args.case), out],
                                  capture_output=True, text=True, check=True)
            wall = time.perf_counter() - start
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result["process_wall_s"] = wall
        runs.append(result)
        print(f"run {i + 1}: segment {result['segment_s']:.1f} s (whole process "
              f"{wall:.1f} s), peak memory {result['peak_rss_mb']:.0f} MB", flush=True)
    print(f"median seconds per case (segment_case): "
          f"{statistics.median(r['segment_s'] for r in runs):.1f}")


if __name__ == "__main__":
    main()
