"""Latency of the web app's 2D classify endpoint (``POST /api/cases/2d``) on loopback: a real
``mrimaster serve`` process on a fresh SQLite database, 1, 4 and 16 concurrent clients, with
and without Grad-CAM; p50/p95 in ms, throughput and the error count, and each p50 as a ratio
to the single-client p50 without Grad-CAM of the same run.

    MRIMASTER_DATA_ROOT=../shared/datasets python benchmarks/bench_serve.py [--per-client 8]
        [--clients 1,4,16]

Every request stores a case (upload, AI read, files, database row), as a doctor's upload does.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.serving.server import Server  # noqa: E402


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        name = next(line.split(":", 1)[1].strip() for line in out.splitlines()
                    if line.startswith("Model name"))
        return f"{name}, {os.cpu_count()} cores"
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def run(server: Server, token: str, images: list[bytes], clients: int, per_client: int,
        gradcam: bool) -> tuple[list[float], int, float]:
    def one(i: int) -> tuple[float, bool]:
        with httpx.Client(base_url=server.url, timeout=120) as c:
            t = time.perf_counter()
            r = c.post("/api/cases/2d", params={"gradcam": str(gradcam).lower()},
                       headers={"Authorization": f"Bearer {token}"},
                       files={"file": ("slice.jpg", images[i % len(images)])})
            return (time.perf_counter() - t) * 1000, r.status_code == 200

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, range(clients * per_client)))
    wall = time.perf_counter() - start
    return [ms for ms, _ in results], sum(not ok for _, ok in results), wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-client", type=int, default=8, help="requests per client")
    ap.add_argument("--clients", default="1,4,16",
                    help="concurrent clients, comma-separated (the first one's p50 without "
                         "Grad-CAM is the baseline)")
    args = ap.parse_args()
    data_root = Path(os.environ["MRIMASTER_DATA_ROOT"])
    images = [p.read_bytes() for p in sorted(
        (data_root / "sartaj-training" / "glioma_tumor").iterdir())[:16]]
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp) / "app", f"sqlite:///{tmp}/app.db",
                        MRIMASTER_ADMIN_PASSWORD="bench-password-1").start()
        try:
            token = httpx.post(f"{server.url}/api/auth/token", json={
                "username": "admin", "password": "bench-password-1"}).json()["token"]
            run(server, token, images, 1, 2, True)  # warm-up: model loads, first CAM
            print(f"2D classify endpoint on loopback, {cpu_name()}")
            print("| Grad-CAM | clients | requests | p50 ms | p95 ms | req/s | errors | "
                  "p50 / baseline |")
            print("|---|---:|---:|---:|---:|---:|---:|---:|")
            baseline = None
            for gradcam in (False, True):
                for clients in [int(c) for c in args.clients.split(",")]:
                    ms, errors, wall = run(server, token, images, clients, args.per_client,
                                           gradcam)
                    p50 = statistics.median(ms)
                    p95 = statistics.quantiles(ms, n=20)[-1]
                    baseline = baseline or p50
                    print(f"| {'yes' if gradcam else 'no'} | {clients} | {len(ms)} | {p50:.0f} "
                          f"| {p95:.0f} | {len(ms) / wall:.1f} | {errors} | "
                          f"{p50 / baseline:.2f}x |", flush=True)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
