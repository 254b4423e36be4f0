"""SIGKILL in the middle of an upload and of a segmentation job, with a real server process:
no earlier case is lost, nothing half-written is ever referenced, the job is taken over once
its lease expires (or marked failed), and ``mrimaster cleanup`` removes what the kill left."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.serving.conftest import ADMIN_PASSWORD
from tests.serving.server import Server
from tests.serving.test_studies import case_files


def wait_for(predicate, timeout: float = 180, step: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("timed out")


def start_partial_upload(server: Server, token: str) -> socket.socket:
    """An upload whose body is only half sent when the server dies."""
    boundary = "b0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"big.png\"\r\nContent-Type: image/png\r\n\r\n").encode()
    body_len = len(head) + 4_000_000
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall((f"POST /api/cases/2d HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}"
                  f"\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
                  f"Content-Length: {body_len}\r\n\r\n").encode() + head + b"\x89PNG"
                 + b"\0" * 1_500_000)
    return sock


def test_sigkill_mid_upload_and_mid_job(tmp_path: Path, data_root: Path) -> None:
    app_dir, db = tmp_path / "app", f"sqlite:///{tmp_path / 'app.db'}"
    lease = {"MRIMASTER_JOB_LEASE_S": "5"}
    server = Server(app_dir, db, **lease).start()
    try:
        api = httpx.Client(base_url=server.url, timeout=60)
        token = api.post("/api/auth/token", json={"username": "admin",
                                                  "password": ADMIN_PASSWORD}).json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        image = sorted((data_root / "sartaj-training" / "meningioma_tumor").iterdir())[0]
        first = api.post("/api/cases/2d", headers=auth,
                         files={"file": (image.name, image.read_bytes())}).json()
        before = api.get(first["files"]["image"], headers=auth).content
        # a 3D study; kill the server while its segmentation runs, with an upload half sent
        files = case_files(data_root)
        study = api.post("/api/cases/3d", headers=auth, files={
            m: (p.name, p.read_bytes()) for m, p in files.items()}).json()
        wait_for(lambda: api.get(f"/api/cases/{study['id']}/job",
                                 headers=auth).json()["state"] == "running")
        store = app_dir / "store"
        # the job has made its work folder (on a busy machine "running" comes first)
        wait_for(lambda: (store / "tmp").is_dir() and any((store / "tmp").iterdir()))
        sock = start_partial_upload(server, token)
        time.sleep(0.5)
        server.kill()
        sock.close()
        assert list((store / "tmp").iterdir()), "the killed job left its work folder"
        # restart on the same database and files: the start deletes nothing
        server = Server(app_dir, db, **lease).start()
        assert list((store / "tmp").iterdir())
        api = httpx.Client(base_url=server.url, timeout=60)
        token = api.post("/api/auth/token", json={"username": "admin",
                                                  "password": ADMIN_PASSWORD}).json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        listed = api.get("/api/cases", headers=auth).json()
        assert sorted(c["id"] for c in listed["cases"]) == [first["id"], study["id"]]
        after = api.get(first["files"]["image"], headers=auth).content
        assert hashlib.sha256(after).digest() == hashlib.sha256(before).digest()
        # the interrupted job is taken over once its lease expired (and finishes) or marked
        # failed: never left running
        job = wait_for(lambda: (lambda j: j if j["state"] in ("done", "failed") else None)(
            api.get(f"/api/cases/{study['id']}/job", headers=auth).json()))
        assert job["attempts"] == 2 or job["state"] == "failed"
        done = api.get(f"/api/cases/{study['id']}", headers=auth).json()
        assert (done["status"] in ("ai-read", "referred")) == (job["state"] == "done")
        # the clean-up (a separate step) removes the work files and objects the kill left
        subprocess.run([sys.executable, "-m", "mrimaster.cli.main", "cleanup",
                        "--grace-minutes", "0"], env=server.env, check=True)
        assert list((store / "tmp").iterdir()) == []
        objects = {p.name for p in (store / "objects").glob("*/*")}
        cases = [api.get(f"/api/cases/{c['id']}", headers=auth).json()
                 for c in listed["cases"]]
        referenced = set()
        for case in cases:
            for url in case["files"].values():
                referenced.add(hashlib.sha256(api.get(url, headers=auth).content).hexdigest())
        assert objects == referenced
    finally:
        server.stop()
