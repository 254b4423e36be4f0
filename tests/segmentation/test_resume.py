"""Checkpoints that survive an interruption: ``seg train`` killed after an epoch continues
from ``last.pt`` and ends with the weights of a run that was never interrupted."""

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from mrimaster.atomic import leftovers
from mrimaster.cli.main import main
from mrimaster.segmentation import checkpoint
from mrimaster.segmentation import train as train_module
from mrimaster.segmentation.model import load_segmenter
from tests.segmentation.synthetic import write_case

TINY = ["--no-track", "--set", "train_cases=[a, b]", "--set", "val_cases=[v]",
        "--set", "patch=[16, 16, 16]", "--set", "channels=[8, 16]", "--set", "epochs=3",
        "--set", "iterations=2", "--set", "num_threads=2", "--set", "precision=fp32"]

QUICK = ["--set", "iterations=1", "--set", "val_cases=[]"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("resume") / "data"
    write_case(root / "a", "brats2021", seed=1)
    write_case(root / "b", "wt", seed=2)  # no T1-Gd: modality dropout draws from the rng
    write_case(root / "v", "brats2015", seed=3, shape=(32, 32, 32))  # small: fast validation
    return root


def _train(data: Path, out: Path, *extra: str) -> int:
    return main(["seg", "train", "--data", str(data), "--out", str(out), *TINY, *extra])


def _interrupt_at_epoch(n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the next run die (Ctrl-C) when it starts epoch ``n``."""
    original, calls = train_module.train_one_epoch, [0]

    def dies(*args: Any, **kwargs: Any) -> float:
        calls[0] += 1
        if calls[0] == n:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_one_epoch", dies)


def test_an_interrupted_run_resumes_to_the_uninterrupted_weights(
        data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert _train(data, full) == 0
    assert not (full / checkpoint.LAST).exists()  # a finished run keeps no checkpoint

    with monkeypatch.context() as m:
        _interrupt_at_epoch(3, m)
        assert _train(data, cut) == 130  # KeyboardInterrupt: "interrupted"
    assert (cut / checkpoint.LAST).is_file() and not leftovers(cut / checkpoint.LAST)
    assert not (cut / "metrics.json").exists()  # not finished: cross-validation retrains it
    blob = torch.load(cut / checkpoint.LAST, weights_only=True)
    assert blob["epoch"] == 2 and [r["epoch"] for r in blob["history"]] == [1, 2]

    caplog.clear()
    with caplog.at_level("INFO", logger="mrimaster.segmentation.train"):
        assert _train(data, cut) == 0
    assert "resuming from epoch 3/3 (2 done, from last.pt)" in caplog.text
    epochs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(epochs) == 1 and epochs[0].startswith("epoch 3/3")  # 1 and 2 not trained again
    assert not (cut / checkpoint.LAST).exists()

    history = json.loads((cut / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2, 3]
    expected = json.loads((full / "history.json").read_text())
    for got, want in zip(history, expected, strict=True):
        assert {k: v for k, v in got.items() if k != "elapsed_s"} == \
            {k: v for k, v in want.items() if k != "elapsed_s"}
    resumed, straight = load_segmenter(cut), load_segmenter(full)
    assert resumed.meta["epoch"] == straight.meta["epoch"]
    assert resumed.meta["val_score"] == straight.meta["val_score"]
    for key, value in straight.net.state_dict().items():
        assert torch.equal(resumed.net.state_dict()[key], value), key
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (cut, full)]
    assert metrics[0]["best_epoch"] == metrics[1]["best_epoch"]
    assert metrics[0]["best_val_score"] == metrics[1]["best_val_score"]


def test_a_checkpoint_of_another_recipe_is_refused(
        data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _interrupt_at_epoch(2, m)
        assert _train(data, out, *QUICK) == 130
    assert (out / checkpoint.LAST).is_file()
    capsys.readouterr()
    assert _train(data, out, *QUICK, "--set", "lr=0.01") == 2
    err = capsys.readouterr().err
    assert "checkpoint of another recipe" in err and "lr 0.002 here, 0.01 asked" in err
    assert "new --out folder" in err and "delete" in err
    assert (out / checkpoint.LAST).is_file()  # refused, not overwritten
    assert not (out / "metrics.json").exists()


def test_the_patch_grid_is_part_of_the_recipe_only_where_validation_uses_it() -> None:
    """Without validation cases the grid changes nothing training does, so a fold trained
    before it was recorded (or on another grid) is kept; with them it picks the checkpoint."""
    from mrimaster.segmentation.checkpoint import recipe_differences

    saved = {"grid": "monai", "val_cases": [], "epochs": 2}
    assert recipe_differences(saved, {**saved, "grid": "even"}) == []
    assert recipe_differences(saved, {**saved, "grid": "even", "epochs": 3}) == \
        ["epochs 2 here, 3 asked"]
    validated = {**saved, "val_cases": ["v"]}
    assert recipe_differences(validated, {**validated, "grid": "even"}) == \
        ["grid monai here, even asked"]
