"""Runs record how they were made, and their configs hold no machine paths."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import yaml

from mrimaster.provenance import data_fingerprint, portable


def test_trained_run_records_command_versions_commit_and_data(trained: tuple[Path, Path]
                                                              ) -> None:
    data, run = trained
    record = json.loads((run / "run.json").read_text())
    assert record["mrimaster"] and record["python"] and "torch" in record["libraries"]
    assert record["command"] == shlex.join(sys.argv)  # the process that ran it (here pytest)
    assert record["git"] is None or set(record["git"]) == {"commit", "dirty"}
    (fingerprint,) = record["data"]
    assert fingerprint == data_fingerprint(data)  # the data it was trained on, recomputed
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["out_dir"] is None and cfg["resume"] is None


def test_fingerprint_changes_with_any_byte_and_path(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"123")
    first = data_fingerprint(tmp_path)
    (tmp_path / "a" / "x.png").write_bytes(b"124")
    second = data_fingerprint(tmp_path)
    (tmp_path / "a" / "x.png").rename(tmp_path / "a" / "y.png")
    third = data_fingerprint(tmp_path)
    assert len({first["sha256"], second["sha256"], third["sha256"]}) == 3
    assert first["files"] == 1


def test_dataset_paths_are_saved_relative_to_the_data_root(tmp_path: Path) -> None:
    assert portable(tmp_path / "root" / "sartaj-training", tmp_path / "root") == Path(
        "sartaj-training")
    assert portable(Path("/elsewhere/data"), tmp_path / "root") == Path("/elsewhere/data")
    assert portable(None, tmp_path) is None
