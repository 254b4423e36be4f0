import json
from pathlib import Path

import numpy as np
import pytest

from mrimaster.cli.main import main


@pytest.mark.usefixtures("accepting_brain_check")  # synthetic slices: see the fixture
def test_explain_all_layers_writes_maps_and_figures(trained: tuple[Path, Path],
                                                    tmp_path: Path) -> None:
    data, run = trained
    image = next((data / "glioma_tumor").glob("*.jpg"))
    out = tmp_path / "ex"
    assert main(["explain", "--model", str(run), str(image), "--layer", "all",
                 "--method", "gradcam++", "--class", "pituitary", "--out", str(out)]) == 0
    (summary,) = json.loads((out / "explain.json").read_text())
    assert summary["class"] == "pituitary" and len(summary["layers"]) == 21  # every conv
    assert (out / f"000_{image.stem}_overlay.png").is_file()
    assert (out / f"000_{image.stem}_layers.png").is_file()
    maps = sorted((out / f"000_{image.stem}_maps").glob("*.npy"))
    assert len(maps) == 21
    arr = np.load(maps[0])
    assert arr.ndim == 2 and (arr >= 0).all()


@pytest.mark.parametrize("args,message", [
    (["--layer", "classifier.2"], "does not output feature maps"),
    (["--layer", "nope"], "choose a module name"),
    (["--class", "astrocytoma"], "unknown class"),
])
@pytest.mark.usefixtures("accepting_brain_check")
def test_explain_bad_input(trained: tuple[Path, Path], tmp_path: Path, args: list[str],
                           message: str, capsys: pytest.CaptureFixture[str]) -> None:
    data, run = trained
    image = next((data / "glioma_tumor").glob("*.jpg"))
    assert main(["explain", "--model", str(run), str(image), "--out", str(tmp_path),
                 *args]) == 2
    assert message in capsys.readouterr().err


def test_explain_unreadable_image(trained: tuple[Path, Path], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    _, run = trained
    bad = tmp_path / "x.png"
    bad.write_text("no")
    assert main(["explain", "--model", str(run), str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "not an image" in capsys.readouterr().err


def test_trained_run_is_calibrated_and_predict_reports_referral(
        trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    data, run = trained
    cal = json.loads((run / "calibration.json").read_text())
    assert cal["temperature"] > 0 and cal["chosen_method"] in ("softmax", "tta", "mc-dropout")
    assert (run / "reliability_val.png").is_file() and (run / "risk_coverage_val.png").is_file()
    assert main(["predict", "--model", str(run), str(data / "notumor"), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert all(isinstance(r["referred"], bool) and 0 <= r["uncertainty"] < 1 for r in rows)
