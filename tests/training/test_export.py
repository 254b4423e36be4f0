import json
from pathlib import Path

import pytest

from mrimaster.cli.main import main
from mrimaster.errors import ModelError
from mrimaster.training.export import export_run


def test_export_writes_model_folder_and_card(trained: tuple[Path, Path], tmp_path: Path) -> None:
    _, run = trained
    assert main(["models", "export", str(run), "--out", str(tmp_path / "m"),
                 "--command", "cmd x"]) == 0
    card = (tmp_path / "m" / "MODEL_CARD.md").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    assert f"macro F1 **{metrics['test']['macro_f1']:.4f}**" in card
    assert "`cmd x`" in card and "Temperature: fitted on validation" in card
    for name in ("model.pt", "split.csv", "config.yaml", "calibration.json", "run.json"):
        assert (tmp_path / "m" / name).is_file()
    record = json.loads((run / "run.json").read_text())
    assert "**Run recorded**" in card and record["data"][0]["sha256"][:12] in card


def test_export_refuses_an_unfinished_run(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="lacks"):
        export_run(tmp_path, tmp_path / "out", "cmd")
