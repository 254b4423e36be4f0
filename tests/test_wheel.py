"""A user's install: build the wheel, install it into a fresh virtual environment outside the
source tree, and run ``predict`` and ``seg predict`` with the shipped models it carries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import synthetic_slice

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out.stdout


def test_wheel_installs_and_runs_the_shipped_models(tmp_path: Path, data_root: Path) -> None:
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q", "-w",
          str(wheels)], tmp_path, dict(os.environ))
    (wheel,) = wheels.glob("mrimaster-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path,
         dict(os.environ))
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                      "['purelib'])"], tmp_path, dict(os.environ)).strip())
    # dependencies come from this environment (no second multi-GB torch install); its own
    # editable mrimaster is not visible: a path line does not run that folder's .pth files
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
          str(wheel)], tmp_path, dict(os.environ))
    env = {k: v for k, v in os.environ.items()
           if k not in ("MRIMASTER_MODELS_DIR", "PYTHONPATH")}
    where = _run([str(python), "-c", "import mrimaster; print(mrimaster.__file__)"], tmp_path,
                 env)
    assert where.startswith(str(site)), where

    image = tmp_path / "slice.png"
    Image.fromarray(synthetic_slice(3, 256)).save(image)
    rows = json.loads(_run([str(venv / "bin" / "mrimaster"), "predict", "--model", "default",
                            str(image), "--format", "json"], tmp_path, env))
    assert len(rows) == 1 and rows[0]["status"] in ("ok", "refer", "reject")
    case = data_root.resolve() / "brats-mini/deepmedic-brats2015/test/brats_2013_pat0001_1"
    _run([str(venv / "bin" / "mrimaster"), "seg", "predict", "--model", "default", "--case",
          str(case), "--out", str(tmp_path / "seg")], tmp_path, env)
    volumes = json.loads((tmp_path / "seg" / "volumes.json").read_text())
    assert volumes["volumes_ml"]["WT"] > 1.0
    # the wheel carries the fold models and the trust rule: the ensemble ran
    assert volumes["ensemble"]["members"] == 5 and volumes["status"] in ("ok", "refer")
