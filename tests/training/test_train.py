import json
from pathlib import Path

import mlflow
import pytest
import torch

from mrimaster.config import load_config
from mrimaster.data.splits import SplitTable
from mrimaster.models.checkpoint import load_classifier
from mrimaster.settings import load_settings
from mrimaster.training.config import TrainConfig
from mrimaster.training.train import run_training
from tests.conftest import write_class_folders


def _config(data: Path, out: Path, **extra: object) -> TrainConfig:
    values = {"model": "mri-cnn", "pretrained": False, "data_dir": data, "image_size": 64,
              "epochs": 2, "batch_size": 8, "out_dir": out, "num_threads": 2, "track": False,
              "split_fractions": [0.5, 0.25, 0.25], "warmup_epochs": 0, **extra}
    return load_config(TrainConfig, None, None, **values)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_class_folders(tmp_path_factory.mktemp("d") / "data", per_class=8, size=96)


def test_run_folder_has_everything_and_resume_continues(small_data: Path, tmp_path: Path) -> None:
    run = run_training(_config(small_data, tmp_path / "run"), load_settings())
    for name in ("config.yaml", "split.csv", "model.pt", "last.pt", "history.json",
                 "metrics.json", "curves.png"):
        assert (run / name).is_file(), name
    history = json.loads((run / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["n"] == len(SplitTable.load(run / "split.csv").indices("test"))
    clf = load_classifier(run / "model.pt")
    assert clf.arch == "mri-cnn" and clf.image_size == 64

    split_before = (run / "split.csv").read_text()
    resumed = run_training(_config(small_data, None, epochs=3, resume=run), load_settings())
    history = json.loads((resumed / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert (run / "split.csv").read_text() == split_before


def test_training_is_seeded(small_data: Path, tmp_path: Path) -> None:
    runs = [run_training(_config(small_data, tmp_path / f"r{i}", epochs=1), load_settings())
            for i in range(2)]
    a, b = (load_classifier(r / "model.pt").net.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_mlflow_tracks_params_metrics_and_artifacts(small_data: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MRIMASTER_TRACKING_URI", uri)
    run = run_training(_config(small_data, tmp_path / "tracked", track=True,
                               experiment="test-exp"), load_settings())
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("test-exp")
    (found,) = client.search_runs([exp.experiment_id])
    assert found.info.run_name == run.name and found.info.status == "FINISHED"
    assert found.data.params["model"] == "mri-cnn"
    assert len(client.get_metric_history(found.info.run_id, "val_macro_f1")) == 2
    artifacts = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"model.pt", "curves.png", "split.csv", "config.yaml"} <= artifacts
