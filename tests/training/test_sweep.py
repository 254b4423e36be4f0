"""``mrimaster sweep``: an Optuna study over tiny trainings, selected on validation, every
trial an MLflow child run, resumable, best config written."""

from __future__ import annotations

import csv
from pathlib import Path

import mlflow
import optuna
import pytest
import yaml

from mrimaster.cli.main import main
from mrimaster.config import load_config
from mrimaster.errors import ConfigError
from mrimaster.training.config import TrainConfig
from mrimaster.training.sweep import load_space
from tests.conftest import write_class_folders


def test_sweep_runs_resumes_and_writes_the_best_config(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_class_folders(tmp_path / "data", per_class=8, size=80)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MRIMASTER_TRACKING_URI", uri)
    monkeypatch.setenv("MRIMASTER_RUNS_DIR", str(tmp_path / "runs"))
    config = tmp_path / "base.yaml"
    config.write_text(yaml.safe_dump({
        "model": "seed-cnn", "pretrained": False, "data_dir": str(data), "image_size": 64,
        "epochs": 2, "batch_size": 8, "warmup_epochs": 0, "num_threads": 2,
        "split_fractions": [0.5, 0.25, 0.25], "experiment": "sweep-test"}))
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({
        "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "batch_size": {"type": "categorical", "choices": [4, 8]}}))
    out = tmp_path / "sweep"
    args = ["sweep", "--config", str(config), "--space", str(space), "--out", str(out)]
    assert main([*args, "--trials", "3"]) == 0
    assert main([*args, "--trials", "1"]) == 0  # the same command resumes the study
    study = optuna.load_study(study_name="base-space",
                              storage=f"sqlite:///{tmp_path / 'runs' / 'optuna.db'}")
    assert len(study.trials) == 4
    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    best = load_config(TrainConfig, out / "best.yaml")
    assert best.lr == pytest.approx(study.best_params["lr"])
    assert best.batch_size == study.best_params["batch_size"]
    # selection used validation only: the best value is the best trial's validation macro F1
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("sweep-test")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.info.run_name.startswith("sweep-")]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 2 and len(children) == 4
    assert {r.data.tags["mlflow.parentRunId"] for r in children} <= {
        p.info.run_id for p in parents}
    completed = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert study.best_value == max(t.value for t in completed)


def test_space_errors_say_what_is_wrong(tmp_path: Path) -> None:
    bad = tmp_path / "s.yaml"
    bad.write_text(yaml.safe_dump({"learning_rate": {"type": "float", "low": 0, "high": 1}}))
    with pytest.raises(ConfigError, match="not a training config key"):
        load_space(bad)
    bad.write_text(yaml.safe_dump({"lr": {"type": "float", "low": 1, "high": 0}}))
    with pytest.raises(ConfigError, match="low < high"):
        load_space(bad)
