"""Issue 27's must-hold test: two ``serve --no-worker`` processes and two ``worker`` processes,
started at once on one real PostgreSQL database and an S3 endpoint on loopback (moto's server).
A session from one is valid on the other; the log-in limit counts attempts on both together;
8 clients x 10 uploads spread over both: no error, and the database rows and the store's
objects match exactly afterwards."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.serving.conftest import (
    DOCTOR_PASSWORD,
    drop_postgres_database,
    fresh_postgres_database,
    serve_env,
)
from tests.serving.server import free_port

BUCKET = "mrimaster-scaling"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    import boto3

    url = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=url).create_bucket(Bucket=BUCKET)
    try:
        yield url
    finally:
        server.stop()


def launch(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "mrimaster.cli.main", *args], env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def wait_healthy(proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"did not start: {log.read_text()[-3000:]}")


@pytest.mark.slow
def test_two_apps_and_two_workers_share_one_database_and_bucket(
        tmp_path: Path, postgres_url: str, s3: str, data_root: Path) -> None:
    import httpx

    from mrimaster.serving.accounts import create_user
    from mrimaster.serving.config import load_serve_config
    from mrimaster.serving.context import build_context
    from mrimaster.storage import repository as repo
    from mrimaster.storage.tables import Case

    url, name = fresh_postgres_database(postgres_url)
    shared = {"MRIMASTER_STORE_URL": f"s3://{BUCKET}/dept", "MRIMASTER_S3_ENDPOINT_URL": s3,
              "MRIMASTER_SECRET_KEY": "ef" * 32}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        apps = []
        for i in range(2):  # all four start at the same moment, on an empty database
            env = serve_env(tmp_path / f"app{i}", url, **shared)
            port = free_port()
            log = tmp_path / f"serve{i}.log"
            procs.append(launch(env, log, "serve", "--no-worker", "--port", str(port)))
            apps.append((f"http://127.0.0.1:{port}", log))
            procs.append(launch(serve_env(tmp_path / f"worker{i}", url, **shared),
                                tmp_path / f"worker{i}.log", "worker", "--poll", "0.5"))
        for proc, (base, log) in zip(procs[::2], apps, strict=True):
            wait_healthy(proc, base, log, 240)
        assert all(p.poll() is None for p in procs[1::2])  # the workers run too
        ctx = build_context(load_serve_config(serve_env(tmp_path / "test", url, **shared)),
                            load_models=False)
        with ctx.sessions() as db:
            assert repo.count_users(db) == 1  # one admin, however many started
            admin = repo.get_user(db, "admin")
            assert admin is not None
            create_user(db, admin, "doctor", DOCTOR_PASSWORD, "radiologist")
        a, b = (httpx.Client(base_url=base, timeout=120) for base, _ in apps)

        # a session from one is valid on the other, and a log-out on one ends it on both
        r = a.post("/api/auth/token", json={"username": "doctor", "password": DOCTOR_PASSWORD})
        auth = {"Authorization": f"Bearer {r.json()['token']}"}
        assert b.get("/api/me", headers=auth).status_code == 200
        assert b.post("/api/auth/logout", headers=auth).status_code == 200
        assert a.get("/api/me", headers=auth).status_code == 401

        # the log-in limit (5 per user and address) counts both processes' attempts
        codes = [(a, b)[i % 2].post("/api/auth/token", json={
            "username": "doctor", "password": "wrong-password-1"}).status_code
            for i in range(6)]
        assert codes == [401] * 5 + [429]
        with ctx.sessions() as db:
            repo.clear_failures(db, "doctor|127.0.0.1")
            repo.clear_failures(db, "doctor|*")
            db.commit()

        images = sorted((data_root / "sartaj-training" / "glioma_tumor").iterdir())[:10]

        def client_uploads(k: int) -> list[int]:
            clients = [httpx.Client(base_url=base, timeout=120) for base, _ in apps]
            token = clients[k % 2].post("/api/auth/token", json={
                "username": "doctor", "password": DOCTOR_PASSWORD}).json()["token"]
            ids = []
            for j, image in enumerate(images):
                r = clients[(k + j) % 2].post(
                    "/api/cases/2d", headers={"Authorization": f"Bearer {token}"},
                    files={"file": (image.name, image.read_bytes(), "image/jpeg")},
                    data={"patient": f"Patient {k}-{j}"})
                assert r.status_code == 200, r.text
                ids.append(r.json()["id"])
            return ids

        with ThreadPoolExecutor(8) as pool:
            ids = [i for got in pool.map(client_uploads, range(8)) for i in got]
        assert len(set(ids)) == 80
        with ctx.sessions() as db:
            assert db.query(Case).count() == 80
            referenced = repo.referenced_digests(db)
        assert set(ctx.store.all_objects()) == referenced  # not one more, not one fewer
        ctx.engine.dispose()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        drop_postgres_database(postgres_url, name)
