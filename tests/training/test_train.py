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


def test_mixed_loss_by_hand() -> None:
    import math

    from mrimaster.training.train import mixed_loss

    logits = torch.tensor([[2.0, 0.0, 1.0, 0.0], [0.0, 1.0, 3.0, 0.0]])
    y = torch.tensor([0, -1])  # a labelled glioma, and a tumour of unknown type
    z0, z1 = logits[0], logits[1]
    ce = -(z0[0] - torch.logsumexp(z0, 0))
    p_tumour = (math.exp(0) + math.exp(1) + math.exp(0)) / sum(math.exp(v) for v in z1.tolist())
    want = (ce.item() - 0.5 * math.log(p_tumour)) / 2
    got = mixed_loss(logits, y, label_smoothing=0.0, presence_weight=0.5, no_tumor=2)
    assert got.item() == pytest.approx(want, rel=1e-6)
    # the presence loss only pushes P(no tumour) down: it is 0 when P(no tumour) -> 0
    far = mixed_loss(torch.tensor([[5.0, 5.0, -50.0, 5.0]]), torch.tensor([-1]), 0.0, 1.0, 2)
    assert far.item() == pytest.approx(0.0, abs=1e-12)


def test_shift_augmentation_keeps_shape_and_range() -> None:
    import numpy as np

    from mrimaster.data.transforms import (
        RandomIntensityCurve,
        RandomJPEG,
        train_transform,
    )
    from tests.conftest import synthetic_slice

    torch.manual_seed(0)
    img = torch.from_numpy(synthetic_slice(0, 96))[None]
    t = train_transform("shift", 64)
    for _ in range(20):
        out = t(img)
        assert out.shape == (1, 64, 64) and out.dtype == torch.float32
        assert out.min() >= 0 and out.max() <= 1
    x = torch.linspace(0, 1, 101)[None, None].repeat(1, 4, 1)
    curve = RandomIntensityCurve()(x)
    assert curve[0, 0, 0] == 0 and curve[0, 0, -1] == pytest.approx(1)  # black stays black
    assert (curve[0, 0].diff() >= -1e-6).all()  # monotone
    jpeg = RandomJPEG(90, 90)(img)
    assert jpeg.shape == img.shape and np.abs(jpeg.numpy().astype(int) - img.numpy()).mean() < 8


def test_training_registers_and_models_uri_resolves(small_data: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from mrimaster.cli.main import main
    from mrimaster.errors import ModelError
    from mrimaster.models.paths import resolve_model_path

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MRIMASTER_TRACKING_URI", uri)
    monkeypatch.setenv("MRIMASTER_RUNS_DIR", str(tmp_path / "runs"))
    runs = [run_training(_config(small_data, tmp_path / f"reg{i}", track=True, epochs=1,
                                 calibrate=False, registered_model="mri-test", seed=i),
                         load_settings()) for i in range(2)]
    client = mlflow.MlflowClient(uri)
    versions = sorted(int(v.version) for v in client.search_model_versions("name='mri-test'"))
    assert versions == [1, 2]
    assert main(["models", "promote", "mri-test", "1", "--alias", "production"]) == 0
    path = resolve_model_path("models:/mri-test@production", Path("unused"))
    assert (path.parent / "MODEL_CARD.md").is_file() and (path.parent / "split.csv").is_file()
    got = load_classifier(path).net.state_dict()
    want = load_classifier(runs[0] / "model.pt").net.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert resolve_model_path("models:/mri-test/2", Path("unused")).is_file()
    with pytest.raises(ModelError, match="registry"):
        resolve_model_path("models:/mri-test@nope", Path("unused"))


def test_bf16_autocast_training_option(small_data: Path, tmp_path: Path) -> None:
    from mrimaster.errors import ConfigError

    fp32 = run_training(_config(small_data, tmp_path / "fp32", epochs=1, calibrate=False),
                        load_settings())
    bf16 = run_training(_config(small_data, tmp_path / "bf16", epochs=1, calibrate=False,
                                precision="bf16"), load_settings())
    a = load_classifier(fp32 / "model.pt").net.state_dict()
    b = load_classifier(bf16 / "model.pt").net.state_dict()
    assert all(v.dtype == torch.float32 for v in b.values() if v.is_floating_point())
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the autocast path really ran
    with pytest.raises(ConfigError, match="precision"):
        _config(small_data, tmp_path / "x", precision="fp16")
