"""Issue 27's scaling figures: 2D reads per second with 1 and 2 ``mrimaster serve --no-worker``
processes, and 3D segmentation jobs per minute with 1 and 2 ``mrimaster worker`` processes, all
on one throw-away PostgreSQL 15 server and one S3 endpoint on loopback (moto's server, in its own
process), started as tests/serving/test_scaling.py starts them.

    MRIMASTER_DATA_ROOT=../shared/datasets python benchmarks/bench_scaling.py \\
        [--clients 8] [--seconds 30] [--jobs 6] [--store s3|local]

(a) A 2D read is ``POST /api/cases/2d`` of a real sartaj-training JPEG with Grad-CAM (the
    default), as a doctor's upload: it stores the image, runs the shipped classifier, computes
    the trust fields and writes the case row. N client threads (httpx) send them round-robin over
    the serve processes for S seconds; reads/s = answers 200 / wall time.
(b) K copies of one real 3D study (BraTS-mini brats_2013_pat0001_1, FLAIR + T1-Gd NIfTI) are
    uploaded and queued while no worker runs; then W workers start; jobs/min = K / (the last
    job's end - the first claim), read from the jobs table.

Each configuration gets a fresh database. Ratios are against the 1-process figure of the same
run. Needs initdb and pg_ctl (PostgreSQL 15; /usr/lib/postgresql/15/bin is searched).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.serving.conftest import (  # noqa: E402
    ADMIN_PASSWORD,
    drop_postgres_database,
    fresh_postgres_database,
    serve_env,
)
from tests.serving.server import free_port  # noqa: E402
from tests.serving.test_scaling import launch, wait_healthy  # noqa: E402

BUCKET = "mrimaster-bench"
CASE_3D = "brats-mini/deepmedic-brats2015/test/brats_2013_pat0001_1"


def as_pg_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.getuid() == 0 else cmd


class Postgres:
    """A throw-away PostgreSQL server (.ci/postgres.sh), stopped and removed by ``stop``."""

    def __init__(self) -> None:
        if shutil.which("initdb") is None and Path("/usr/lib/postgresql/15/bin/initdb").exists():
            os.environ["PATH"] += ":/usr/lib/postgresql/15/bin"
        self.folder = Path(tempfile.mkdtemp(prefix="mrimaster-bench-pg-"))
        out = subprocess.run([str(ROOT / ".ci" / "postgres.sh"), str(self.folder),
                              str(free_port())], capture_output=True, text=True,
                             check=True).stdout
        env = dict(line.removeprefix("export ").split("=", 1) for line in out.splitlines()
                   if line)
        self.url = env["MRIMASTER_TEST_DATABASE_URL"]
        self.pgdata = env["MRIMASTER_TEST_PGDATA"]

    def stop(self) -> None:
        subprocess.run(as_pg_user(["pg_ctl", "-D", self.pgdata, "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(self.folder, ignore_errors=True)


def start_moto(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with open(log, "ab") as out:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H",
                                 "127.0.0.1", "-p", str(port)], stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"moto did not start: {log.read_text()[-2000:]}") from None
            time.sleep(0.3)
    import boto3

    boto3.client("s3", endpoint_url=url, aws_access_key_id="testing",
                 aws_secret_access_key="testing", region_name="us-east-1"
                 ).create_bucket(Bucket=BUCKET)
    return proc, url


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Deployment:
    """A fresh database on the server, ``apps`` serve --no-worker processes (started and
    healthy) and, on ``start_workers``, worker processes; ``close`` stops them and drops it."""

    def __init__(self, pg: Postgres, work: Path, shared: dict[str, str], apps: int,
                 tag: str) -> None:
        self.pg, self.work, self.shared, self.tag = pg, work, shared, tag
        self.db_url, self.db_name = fresh_postgres_database(pg.url)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.urls: list[str] = []
        started = []
        for i in range(apps):
            port, log = free_port(), work / f"{tag}-serve{i}.log"
            proc = launch(self.env(f"app{i}"), log, "serve", "--no-worker", "--port", str(port))
            self.procs.append(proc)
            started.append((proc, f"http://127.0.0.1:{port}", log))
        for proc, url, log in started:
            wait_healthy(proc, url, log, 300)
            self.urls.append(url)

    def env(self, name: str) -> dict[str, str]:
        return serve_env(self.work / f"{self.tag}-{name}", self.db_url, **self.shared)

    def start_workers(self, n: int) -> None:
        for i in range(n):
            log = self.work / f"{self.tag}-worker{i}.log"
            self.procs.append(launch(self.env(f"worker{i}"), log, "worker", "--poll", "0.5"))

    def token(self, url: str) -> str:
        r = httpx.post(f"{url}/api/auth/token", timeout=60,
                       json={"username": "admin", "password": ADMIN_PASSWORD})
        r.raise_for_status()
        return str(r.json()["token"])

    def close(self) -> None:
        stop_all(self.procs)
        drop_postgres_database(self.pg.url, self.db_name)


def reads_per_second(dep: Deployment, images: list[tuple[str, bytes]], clients: int,
                     seconds: float) -> tuple[float, int, int]:
    """(reads/s, reads answered 200, errors) over ``seconds`` with ``clients`` threads."""
    tokens = {url: dep.token(url) for url in dep.urls}

    def post(c: httpx.Client, url: str, k: int) -> bool:
        name, data = images[k % len(images)]
        r = c.post(f"{url}/api/cases/2d", headers={"Authorization": f"Bearer {tokens[url]}"},
                   files={"file": (name, data, "image/jpeg")}, data={"patient": f"Bench {k}"})
        return r.status_code == 200

    with httpx.Client(timeout=120) as c:  # warm-up: each process's first read loads the model
        for url in dep.urls:
            post(c, url, 0)
    stop_at = time.monotonic() + seconds

    def client(k: int) -> tuple[int, int]:
        ok = bad = 0
        j = 0
        with httpx.Client(timeout=120) as c:
            while time.monotonic() < stop_at:
                url = dep.urls[(k + j) % len(dep.urls)]
                if post(c, url, k * 1000 + j):
                    ok += 1
                else:
                    bad += 1
                j += 1
        return ok, bad

    start = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        got = list(pool.map(client, range(clients)))
    wall = time.monotonic() - start
    ok, bad = sum(g[0] for g in got), sum(g[1] for g in got)
    return ok / wall, ok, bad


def jobs_per_minute(dep: Deployment, study: dict[str, tuple[str, bytes]], jobs: int,
                    workers: int, timeout: float) -> tuple[float, float, int]:
    """(jobs/min, wall seconds from the first claim to the last end, jobs failed)."""
    import psycopg

    url = dep.urls[0]
    auth = {"Authorization": f"Bearer {dep.token(url)}"}
    with httpx.Client(base_url=url, timeout=300) as c:
        for k in range(jobs):
            r = c.post("/api/cases/3d", headers=auth, data={"patient": f"Study {k}"},
                       files={m: (name, data) for m, (name, data) in study.items()})
            r.raise_for_status()
    dep.start_workers(workers)
    deadline = time.monotonic() + timeout
    conninfo = dep.db_url.replace("postgresql+psycopg", "postgresql")
    while True:
        with psycopg.connect(conninfo) as conn:
            rows = conn.execute("SELECT state, claimed_at, updated_at FROM jobs").fetchall()
        if len(rows) == jobs and all(state in ("done", "failed") for state, _, _ in rows):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"jobs not finished after {timeout:.0f} s: "
                               f"{sorted(state for state, _, _ in rows)}")
        time.sleep(0.5)
    first = min(claimed for _, claimed, _ in rows if claimed is not None)
    last = max(updated for _, _, updated in rows)
    wall = (last - first).total_seconds()
    return jobs / wall * 60, wall, sum(state == "failed" for state, _, _ in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=8, help="concurrent 2D clients")
    ap.add_argument("--seconds", type=float, default=30, help="2D measurement per setting")
    ap.add_argument("--jobs", type=int, default=6, help="3D studies queued per setting")
    ap.add_argument("--store", choices=["s3", "local"], default="s3",
                    help="s3: moto's server on loopback (as the test); local: one shared folder")
    ap.add_argument("--job-timeout", type=float, default=1800)
    args = ap.parse_args()

    data_root = Path(os.environ.get("MRIMASTER_DATA_ROOT", ROOT.parent / "shared" / "datasets"))
    os.environ["MRIMASTER_DATA_ROOT"] = str(data_root)
    images = [(p.name, p.read_bytes()) for p in
              sorted((data_root / "sartaj-training" / "glioma_tumor").iterdir())[:16]]
    folder = data_root / CASE_3D
    study = {m: (p.name, p.read_bytes()) for m, p in
             {"flair": next(folder.glob("Flair*")), "t1ce": next(folder.glob("T1c*"))}.items()}

    work = Path(tempfile.mkdtemp(prefix="mrimaster-bench-scaling-"))
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ[name] = value
    pg = Postgres()
    procs: list[subprocess.Popen[bytes]] = []
    results: list[tuple[str, str, float, str]] = []
    try:
        if args.store == "s3":
            moto, s3 = start_moto(work / "moto.log")
            procs.append(moto)
            store = {"MRIMASTER_STORE_URL": f"s3://{BUCKET}/dept",
                     "MRIMASTER_S3_ENDPOINT_URL": s3}
        else:
            store = {"MRIMASTER_STORE_URL": str(work / "store")}
        shared = {**store, "MRIMASTER_SECRET_KEY": "ef" * 32}
        reads: dict[int, float] = {}
        for n in (1, 2):
            dep = Deployment(pg, work, shared, apps=n, tag=f"reads{n}")
            try:
                rate, ok, bad = reads_per_second(dep, images, args.clients, args.seconds)
            finally:
                dep.close()
            reads[n] = rate
            results.append(("2D reads/s", f"{n} serve", rate,
                            f"{ok} reads, {bad} errors, {args.clients} clients, "
                            f"{args.seconds:.0f} s"))
            print(f"  2D, {n} serve: {rate:.2f} reads/s ({ok} ok, {bad} errors)", flush=True)
        jobs: dict[int, float] = {}
        for w in (1, 2):
            dep = Deployment(pg, work, shared, apps=1, tag=f"jobs{w}")
            try:
                rate, wall, failed = jobs_per_minute(dep, study, args.jobs, w, args.job_timeout)
            finally:
                dep.close()
            jobs[w] = rate
            results.append(("3D jobs/min", f"{w} worker", rate,
                            f"{args.jobs} jobs in {wall:.1f} s, {failed} failed"))
            print(f"  3D, {w} worker: {rate:.2f} jobs/min ({args.jobs} in {wall:.1f} s, "
                  f"{failed} failed)", flush=True)
    finally:
        stop_all(procs)
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)

    base = {"2D reads/s": reads[1], "3D jobs/min": jobs[1]}
    print(f"\nos.cpu_count() = {os.cpu_count()}; PostgreSQL 15 on loopback; store: {args.store}")
    print("| measure | processes | rate | vs 1 | detail |\n|---|---|---|---|---|")
    for measure, procs_label, rate, detail in results:
        ratio = rate / base[measure]
        print(f"| {measure} | {procs_label} | {rate:.2f} | {ratio:.2f}x | {detail} |")
    print(f"\nWhat {os.cpu_count()} cores limit: a segmentation's network already spreads over "
          "every core through its ONNX Runtime/OpenVINO threads, so a second worker gains only "
          "from the single-threaded parts of a job (reading, pre/post-processing, storing) and "
          f"otherwise contends for the same cores (x{jobs[2] / jobs[1]:.2f} here); a 2D read "
          "(classifier + Grad-CAM) is CPU-bound too and the client threads, PostgreSQL and the "
          f"S3 endpoint run on the same cores (x{reads[2] / reads[1]:.2f}). Beyond 2 processes "
          "nothing is left to fill: more throughput needs more cores or hosts.")


if __name__ == "__main__":
    main()
