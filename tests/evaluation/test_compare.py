"""``mrimaster compare`` on real run folders and an MLflow run ID of tiny trainings."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from mrimaster.cli.main import main
from mrimaster.errors import DataError
from mrimaster.evaluation.compare import compare_runs
from mrimaster.settings import load_settings
from mrimaster.training.train import run_training
from tests.conftest import write_class_folders
from tests.training.test_train import _config


def test_compare_folders_and_an_mlflow_run(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_class_folders(tmp_path / "data", per_class=8, size=96)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MRIMASTER_TRACKING_URI", uri)
    a = run_training(_config(data, tmp_path / "a", epochs=2, calibrate=False), load_settings())
    b = run_training(_config(data, tmp_path / "b", epochs=3, lr=3e-3, calibrate=False,
                             track=True, registered_model=""), load_settings())
    (found,) = mlflow.MlflowClient(uri).search_runs(
        [mlflow.MlflowClient(uri).get_experiment_by_name("mrimaster-classification")
         .experiment_id])
    out = tmp_path / "cmp"
    assert main(["compare", str(a), found.info.run_id, "--out", str(out)]) == 0
    report = json.loads((out / "compare.json").read_text())
    assert [r["name"] for r in report["runs"]] == ["a", b.name]
    assert [r["epochs"] for r in report["runs"]] == [2, 3]
    assert report["differing_config"]["epochs"] == [2, 3]
    assert report["differing_config"]["lr"] == [0.001, 0.003]
    assert "model" not in report["differing_config"]  # same in both: not listed
    want = json.loads((a / "metrics.json").read_text())["test"]["macro_f1"]
    assert report["runs"][0]["held_out"]["test_macro_f1"] == pytest.approx(want)
    md = (out / "compare.md").read_text()
    assert "| `lr` | 0.0010 | **0.0030** |" in md
    assert (out / "curves.png").stat().st_size > 10_000
    with pytest.raises(DataError, match="at least two"):
        compare_runs([str(a)], out, uri)
    with pytest.raises(DataError, match="no MLflow run"):
        compare_runs([str(a), "0123456789abcdef"], out, uri)
