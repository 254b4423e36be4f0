"""A tiny segmentation run shared by the segmentation tests (synthetic volumes)."""

from pathlib import Path

import pytest

from mrimaster.cli.main import main
from tests.segmentation.synthetic import write_case


@pytest.fixture(scope="session")
def seg_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("seg")
    data = root / "data"
    write_case(data / "a", "brats2021", seed=1)
    write_case(data / "b", "wt", seed=2)  # WT-only labels, no T1-Gd: modality dropout case
    write_case(data / "v", "brats2015", seed=3)
    run = root / "run"
    code = main(["seg", "train", "--data", str(data), "--out", str(run), "--no-track",
                 "--set", "train_cases=[a, b]", "--set", "val_cases=[v]",
                 "--set", "patch=[16, 16, 16]", "--set", "channels=[8, 16]",
                 "--set", "epochs=1", "--set", "iterations=2", "--set", "num_threads=2"])
    assert code == 0
    return data, run
