"""Saving an edited 240x240x155 mask through the API on loopback: the median time of
``POST /api/cases/{id}/masks`` (a real ``mrimaster serve`` process, the body a gzip NIfTI as the
viewer sends it), against the GET of the AI mask measured in the same run. Prints figures.

    python benchmarks/bench_mask_save.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.serving.conftest import ADMIN_PASSWORD  # noqa: E402
from tests.serving.server import Server  # noqa: E402
from tests.serving.test_mask_versions import (  # noqa: E402
    add_3d_case,
    context_beside,
    token_of,
)

SHAPE = (240, 240, 155)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        server = Server(folder / "app", f"sqlite:///{folder / 'app.db'}").start()
        try:
            ctx = context_beside(server)
            ai = np.zeros(SHAPE, np.uint8)
            ai[90:150, 90:150, 50:100] = 2
            ai[105:135, 105:135, 60:90] = 1
            ai[112:128, 112:128, 68:82] = 4
            case_id = add_3d_case(ctx, ai, np.eye(4))
            ctx.engine.dispose()
            auth = token_of(server, "admin", ADMIN_PASSWORD)
            api = httpx.Client(base_url=server.url, headers=auth, timeout=60)
            url = f"/api/cases/{case_id}/masks"
            gets, saves, sizes = [], [], []
            for k in range(args.repeats):
                t0 = time.perf_counter()
                r = api.get(f"{url}/0")
                gets.append(time.perf_counter() - t0)
                assert r.status_code == 200
                edit = ai.copy()
                edit[60 + k:80 + k, 60:80, 40:60] = 2  # a different edit each time
                body = gzip.compress(nib.Nifti1Image(edit, np.eye(4)).to_bytes(), 6)
                sizes.append(len(body))
                t0 = time.perf_counter()
                r = api.post(f"{url}?base=0", content=body,
                             headers={"Content-Type": "application/octet-stream"})
                saves.append(time.perf_counter() - t0)
                assert r.status_code == 200, r.text
            print(f"mask {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} uint8, gzip body "
                  f"{statistics.median(sizes) / 1e3:.0f} kB, {args.repeats} repeats, loopback")
            print(f"baseline GET AI mask   median {statistics.median(gets) * 1e3:7.1f} ms  "
                  f"max {max(gets) * 1e3:7.1f} ms")
            print(f"POST save new version  median {statistics.median(saves) * 1e3:7.1f} ms  "
                  f"max {max(saves) * 1e3:7.1f} ms  (limit 1000 ms)")
            raw = nib.Nifti1Image(ai, np.eye(4)).to_bytes()
            t0 = time.perf_counter()
            r = api.post(f"{url}?base=0", content=raw,
                         headers={"Content-Type": "application/octet-stream"})
            print(f"POST save, raw body ({len(raw) / 1e6:.1f} MB)  "
                  f"{(time.perf_counter() - t0) * 1e3:7.1f} ms")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
