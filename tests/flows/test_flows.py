"""The Metaflow flows, run locally (local datastore) on small synthetic data: training end to
end with registration, and batch prediction fanned out with foreach."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import yaml

from tests.conftest import write_class_folders


def run_flow(module: str, args: list[str], tmp_path: Path, env: dict[str, str]) -> float:
    """Run a flow with ``python -m``; returns its wall-clock seconds."""
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", module, "--no-pylint", "run", *args],
        env={**os.environ, "METAFLOW_HOME": str(tmp_path / "mf"), "USERNAME": "tester",
             "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(tmp_path / "mfdata"),
             "METAFLOW_DEFAULT_DATASTORE": "local", "METAFLOW_DEFAULT_METADATA": "local",
             **env},
        cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return time.perf_counter() - start


def test_train_flow_runs_every_stage_and_registers(tmp_path: Path) -> None:
    data = write_class_folders(tmp_path / "data", per_class=10, size=80)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "model": "seed-cnn", "pretrained": False, "image_size": 64, "epochs": 2,
        "batch_size": 8, "warmup_epochs": 0, "num_threads": 2}))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "flow-out"
    seconds = run_flow("mrimaster.flows.train_flow",
                       ["--data", str(data), "--out", str(out), "--config", str(config),
                        "--register-as", "flow-model"], tmp_path,
                       {"MRIMASTER_TRACKING_URI": uri, "MRIMASTER_RUNS_DIR": str(tmp_path)})
    for name in ("audit/audit.json", "split.csv", "run/model.pt", "run/calibration.json",
                 "run/checks.json", "evaluation/metrics.json"):
        assert (out / name).is_file(), name
    versions = mlflow.MlflowClient(uri).search_model_versions("name='flow-model'")
    assert len(versions) == 1
    print(f"train flow wall-clock {seconds:.1f} s")  # reported in the closing note


def test_predict_flow_fans_out_and_joins(tmp_path: Path, data_root: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for i, src in enumerate(sorted((data_root / "sartaj-training" / "glioma_tumor")
                                   .iterdir())[:5]):
        (folder / f"{i}{src.suffix}").write_bytes(src.read_bytes())
    (folder / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "preds.csv"
    run_flow("mrimaster.flows.predict_flow",
             ["--inputs", str(folder), "--out", str(out), "--shard-size", "2"], tmp_path, {})
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    by_name = {Path(r["input"]).name: r for r in rows}
    assert by_name["broken.jpg"]["status"] == "error"
    slices = [r for n, r in by_name.items() if n != "broken.jpg"]
    assert {r["status"] for r in slices} <= {"ok", "refer", "reject"}
    assert all(r["p_glioma"] for r in slices if r["status"] != "reject")
    shards = sorted((tmp_path / "mfdata").rglob("predict"))
    assert shards, "the foreach step ran"


def test_predict_flow_reads_an_s3_prefix(tmp_path: Path, data_root: Path) -> None:
    import boto3
    from moto.server import ThreadedMotoServer

    from tests.serving.server import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    aws = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    try:
        s3 = boto3.client("s3", endpoint_url=aws["AWS_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
        s3.create_bucket(Bucket="scans")
        for i, src in enumerate(sorted((data_root / "sartaj-training" / "no_tumor")
                                       .iterdir())[:3]):
            s3.put_object(Bucket="scans", Key=f"batch/{i}.jpg", Body=src.read_bytes())
        out = tmp_path / "s3preds.csv"
        run_flow("mrimaster.flows.predict_flow", ["--inputs", "s3://scans/batch", "--out",
                                                  str(out), "--shard-size", "2"], tmp_path, aws)
        with open(out) as f:
            rows = list(csv.DictReader(f))
        assert sorted(r["input"] for r in rows) == [f"s3://scans/batch/{i}.jpg"
                                                     for i in range(3)]
        assert all(r["status"] in ("ok", "refer", "reject") for r in rows)
    finally:
        server.stop()
