"""The commands end to end on synthetic data, and their answers to bad input."""

import json
from pathlib import Path

import pytest

from mrimaster.cli.main import main
from tests.conftest import write_class_folders


def test_evaluate_writes_all_outputs(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, run = trained
    assert main(["evaluate", "--model", str(run), "--data", str(data), "--out",
                 str(tmp_path / "ev")]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["n"] == 24
    assert set(metrics["per_class"]) == {"glioma", "meningioma", "no_tumor", "pituitary"}
    assert {"precision", "recall", "f1", "support"} == set(metrics["per_class"]["glioma"])
    assert metrics["labels"] == ["glioma", "meningioma", "no_tumor", "pituitary"]
    assert sum(map(sum, metrics["confusion_matrix"])) == 24
    for name in ("confusion_matrix.png", "misclassified.png", "report.md", "predictions.csv"):
        assert (tmp_path / "ev" / name).is_file()
    assert len((tmp_path / "ev" / "predictions.csv").read_text().splitlines()) == 25


def test_predict_formats(trained: tuple[Path, Path], tmp_path: Path,
                         capsys: pytest.CaptureFixture[str], accepting_brain_check: Path
                         ) -> None:
    # synthetic slices are not brain MRI: the shipped brain-MRI check rejects them, so this
    # test of the output formats runs with a check that accepts everything
    data, run = trained
    one = next((data / "glioma_tumor").glob("*.jpg"))
    assert main(["predict", "--model", str(run / "model.pt"), str(one), str(data / "notumor"),
                 "--format", "json", "--output", str(tmp_path / "p.json")]) == 0
    rows = json.loads((tmp_path / "p.json").read_text())
    assert len(rows) == 7
    shown = [row for row in rows if row["status"] != "reject"]
    assert shown  # synthetic slices pass the input checks
    for row in shown:
        probs = [row[f"p_{c}"] for c in ("glioma", "meningioma", "no_tumor", "pituitary")]
        assert sum(probs) == pytest.approx(1.0, abs=1e-6)
        assert row["confidence"] == pytest.approx(max(probs))
        assert row["status"] in ("ok", "refer") and row["referred"] == (row["status"] != "ok")
    capsys.readouterr()
    assert main(["predict", "--model", str(run), str(one), "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith(
        "path,status,reason,prediction,confidence,uncertainty,distance,referred,p_glioma")
    assert main(["predict", "--model", str(run), str(one)]) == 0
    out = capsys.readouterr()
    assert "prediction" in out.out
    # which runtime ran and why (a run folder without an ONNX export: PyTorch)
    assert out.err.startswith("runtime torch: no exported variant can run here"), out.err


def test_predict_rejects_a_colour_photo_and_a_one_pixel_image(
        trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np
    from PIL import Image

    _, run = trained
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (128, 128, 3), np.uint8)).save(tmp_path / "c.png")
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(tmp_path / "one.png")
    assert main(["predict", "--model", str(run), str(tmp_path), "--format", "json"]) == 0
    rows = {Path(r["path"]).name: r for r in json.loads(capsys.readouterr().out)}
    assert rows["c.png"]["status"] == "reject" and "colour" in rows["c.png"]["reason"]
    assert rows["one.png"]["status"] == "reject" and "too small" in rows["one.png"]["reason"]
    assert rows["one.png"]["prediction"] is None
    assert main(["predict", "--model", str(run), str(tmp_path / "one.png")]) == 0
    assert "REJECT" in capsys.readouterr().out


def test_evaluate_a_presence_only_folder_with_boxes(trained: tuple[Path, Path], tmp_path: Path
                                                    ) -> None:
    from PIL import Image

    from tests.conftest import synthetic_slice

    _, run = trained
    root = tmp_path / "tumours"
    (root / "images").mkdir(parents=True)
    rows = ["file,width,height,x_center,y_center,box_width,box_height"]
    for i in range(5):
        Image.fromarray(synthetic_slice(50 + i, 96, i % 4)).save(root / "images" / f"y{i}.png")
        rows.append(f"y{i}.png,96,96,0.5,0.5,0.6,0.6")
    (root / "boxes.csv").write_text("\n".join(rows) + "\n")
    assert main(["evaluate", "--model", str(run), "--data", str(root), "--out",
                 str(tmp_path / "ev")]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["n"] == 5 and 0 <= metrics["sensitivity"] <= 1
    assert metrics["pointing_game"]["n"] == 5
    assert sum(metrics["status"].values()) == 5
    for name in ("report.md", "predictions.csv", "missed_gradcam.png", "pointing_gradcam.png"):
        assert (tmp_path / "ev" / name).is_file()


@pytest.mark.parametrize("case", ["text_as_jpg", "corrupt_jpeg", "empty_folder", "unknown_class",
                                  "missing_model", "bad_model_file", "unknown_model"])
def test_bad_input_gives_a_clear_message_not_a_traceback(
        case: str, trained: tuple[Path, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    data, run = trained
    fake = tmp_path / "scan.jpg"
    if case == "text_as_jpg":
        fake.write_text("hello")
        args = ["predict", "--model", str(run), str(fake)]
    elif case == "corrupt_jpeg":
        good = next((data / "glioma_tumor").glob("*.jpg")).read_bytes()
        fake.write_bytes(good[:200])
        args = ["predict", "--model", str(run), str(fake)]
    elif case == "empty_folder":
        (tmp_path / "empty").mkdir()
        args = ["evaluate", "--model", str(run), "--data", str(tmp_path / "empty"), "--out",
                str(tmp_path / "o")]
    elif case == "unknown_class":
        only = write_class_folders(tmp_path / "x", per_class=1, names=("astrocytoma",))
        args = ["evaluate", "--model", str(run), "--data", str(only), "--out", str(tmp_path / "o")]
    elif case == "missing_model":
        args = ["predict", "--model", str(tmp_path / "nothing"), str(fake)]
    elif case == "bad_model_file":
        (tmp_path / "m.pt").write_text("not a model")
        args = ["predict", "--model", str(tmp_path / "m.pt"), str(fake)]
    else:
        args = ["train", "--model", "resnet9000", "--no-track"]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    expected = {"text_as_jpg": "not an image", "corrupt_jpeg": "corrupt or truncated",
                "empty_folder": "no images found", "unknown_class": "unknown class folder",
                "missing_model": "no model at", "bad_model_file": "not a readable model file",
                "unknown_model": "choose one of"}[case]
    assert expected in err
