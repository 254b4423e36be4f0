"""``mrimaster train`` under torchrun: two CPU processes (gloo) end with the weights of one
process that takes the same global batches."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from tests.conftest import write_class_folders
from tests.serving.server import free_port


def torchrun(nproc: int, config: Path, out: Path) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
           f"--master-port={free_port()}", "-m", "mrimaster.cli.main", "train", "--config",
           str(config), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_two_gloo_processes_match_one_process(tmp_path: Path) -> None:
    data = write_class_folders(tmp_path / "data", per_class=12, size=80)
    config = tmp_path / "ddp.yaml"
    # no BatchNorm and no dropout (seed-cnn), no random augmentation: the same global batches
    # must give the same weights (BatchNorm statistics are per process on CPUs)
    config.write_text(yaml.safe_dump({
        "model": "seed-cnn", "pretrained": False, "data_dir": str(data), "image_size": 64,
        "epochs": 2, "batch_size": 8, "max_steps_per_epoch": 3, "augment": "none",
        "warmup_epochs": 0, "split_fractions": [0.5, 0.25, 0.25], "num_threads": 1,
        "calibrate": False, "track": False, "label_smoothing": 0.0, "device": "cpu"}))
    torchrun(2, config, tmp_path / "two")
    torchrun(1, config, tmp_path / "one")
    two = torch.load(tmp_path / "two" / "last.pt", weights_only=False)
    one = torch.load(tmp_path / "one" / "last.pt", weights_only=False)
    assert two["epoch"] == one["epoch"] == 1
    for key, value in one["net"].items():
        assert torch.allclose(two["net"][key], value, atol=1e-5, rtol=1e-4), key
    # the tolerance tells runs apart: other global batches (another seed) end elsewhere
    other = yaml.safe_load(config.read_text()) | {"seed": 1}
    config.write_text(yaml.safe_dump(other))
    torchrun(1, config, tmp_path / "other")
    moved = torch.load(tmp_path / "other" / "last.pt", weights_only=False)["net"]
    assert not all(torch.allclose(moved[k], v, atol=1e-5, rtol=1e-4)
                   for k, v in one["net"].items())
    history_two = yaml.safe_load((tmp_path / "two" / "history.json").read_text())
    assert len(history_two) == 2  # only rank 0 writes the run folder, once per epoch


def test_seg_train_runs_under_torchrun(tmp_path: Path) -> None:
    from tests.segmentation.synthetic import write_case

    write_case(tmp_path / "data" / "a", "brats2021", seed=6)
    write_case(tmp_path / "data" / "b", "wt", seed=7)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2",
           f"--master-port={free_port()}", "-m", "mrimaster.cli.main", "seg", "train",
           "--data", str(tmp_path / "data"), "--out", str(tmp_path / "r"), "--no-track",
           "--set", "train_cases=[a, b]", "--set", "patch=[16, 16, 16]",
           "--set", "channels=[8, 16]", "--set", "epochs=2", "--set", "iterations=2",
           "--set", "batch_size=2", "--set", "num_threads=1"]
    result = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    history = yaml.safe_load((tmp_path / "r" / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]
    assert (tmp_path / "r" / "model.pt").is_file()
