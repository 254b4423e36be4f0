"""Shared fixtures: synthetic MRI-like slices and the real data root."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image


def synthetic_slice(seed: int, size: int = 128, kind: int = 0) -> np.ndarray:
    """A head-like ellipse with random smooth texture and a class-dependent bright blob.

    Returns ``(size, size)`` uint8 with a black border, like a real axial slice.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    cy, cx = 0.5 + rng.uniform(-0.05, 0.05, 2)
    ry, rx = rng.uniform(0.32, 0.42, 2)
    head = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    texture = np.zeros((size, size))
    for _ in range(6):
        fy, fx = rng.uniform(2, 9, 2)
        py, px = rng.uniform(0, 2 * np.pi, 2)
        texture += np.sin(fy * np.pi * yy + py) * np.cos(fx * np.pi * xx + px)
    img = 90 + 25 * texture
    blob_y, blob_x = [(0.35, 0.35), (0.3, 0.65), (0.5, 0.5), (0.62, 0.5)][kind % 4]
    blob = ((yy - blob_y) ** 2 + (xx - blob_x) ** 2) < (0.06 + 0.03 * (kind % 2)) ** 2
    img = np.where(blob, 230, img) if kind != 2 else img
    return np.clip(np.where(head, img, 0), 0, 255).astype(np.uint8)


def write_class_folders(root: Path, per_class: int = 6, names: tuple[str, ...] = (
        "glioma_tumor", "meningioma", "notumor", "pituitary_tumor"), size: int = 128,
        seed: int = 0) -> Path:
    """Write a small class-per-folder dataset of distinct synthetic slices (JPEG and PNG)."""
    for k, name in enumerate(names):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = Image.fromarray(synthetic_slice(seed + 1000 * k + i, size, k)).convert("RGB")
            suffix = ".png" if i % 3 == 0 else ".jpg"
            img.save(folder / f"img_{i}{suffix}")
    return root


@pytest.fixture
def class_folders(tmp_path: Path) -> Path:
    return write_class_folders(tmp_path / "dataset")


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real shared datasets (``MRIMASTER_DATA_ROOT``); CI points it at ../shared/datasets."""
    value = os.environ.get("MRIMASTER_DATA_ROOT")
    if not value or not (Path(value) / "sartaj-training").is_dir():
        pytest.fail("real-data test: set MRIMASTER_DATA_ROOT to the folder holding "
                    "sartaj-training/ (or deselect with -m 'not realdata')")
    return Path(value)


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs and MLflow stores go to a temporary folder, never the working tree."""
    monkeypatch.setenv("MRIMASTER_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MRIMASTER_TRACKING_URI", raising=False)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny mri-cnn trained for one epoch by the CLI: ``(dataset, run folder)``."""
    from mrimaster.cli.main import main

    root = tmp_path_factory.mktemp("trained")
    data = write_class_folders(root / "data", per_class=6, size=96)
    run = root / "run"
    code = main(["train", "--model", "mri-cnn", "--data", str(data), "--epochs", "1",
                 "--out", str(run), "--no-track", "--set", "pretrained=false",
                 "--set", "image_size=64", "--set", "batch_size=8"])
    assert code == 0
    return data, run


def constant_brain_check(logit: float, threshold: float = 0.5) -> Any:
    """A brain-MRI check whose network outputs ``logit`` for every image (all weights zero)."""
    from mrimaster.trust.brain_check import CHANNELS, BrainCheck

    weights: dict[str, np.ndarray] = {}
    c_in = 1
    for i, c in enumerate(CHANNELS):
        weights[f"conv{i}_w"] = np.zeros((c, c_in, 3, 3), np.float32)
        weights[f"conv{i}_b"] = np.zeros(c, np.float32)
        c_in = c
    weights["fc_w"] = np.zeros((1, 2 * c_in), np.float32)
    weights["fc_b"] = np.array([logit], np.float32)
    return BrainCheck(weights, threshold)


@pytest.fixture
def no_brain_mri_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """The 3D brain-MRI check switched off (``MRIMASTER_CHECK_BRAIN_MRI=off``), for tests of
    the segmentation's plumbing on synthetic volumes, which the check rightly refuses: they are
    not brain MRI. The check's own tests (tests/trust/test_volume_check.py) and every test on
    real volumes run with it on."""
    monkeypatch.setenv("MRIMASTER_CHECK_BRAIN_MRI", "off")


@pytest.fixture
def accepting_brain_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A models folder whose brain-MRI check accepts every image (logit +8), for tests of the
    classifier's plumbing on synthetic slices, which the shipped check rightly rejects; run
    folders still load from their own paths. Returns the models folder."""
    models = tmp_path / "models-accepting-brain-check"
    constant_brain_check(8.0).save(models / "brain-check")
    monkeypatch.setenv("MRIMASTER_MODELS_DIR", str(models))
    return models
