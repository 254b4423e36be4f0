"""Train two iterations on synthetic volumes, then segment and evaluate a case end to end."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mrimaster.cli.main import main
from mrimaster.segmentation.metrics import region_scores
from tests.segmentation.synthetic import write_case


def test_training_writes_a_run_folder(seg_run: tuple[Path, Path]) -> None:
    _, run = seg_run
    for name in ("config.yaml", "model.pt", "history.json", "metrics.json", "curves.png"):
        assert (run / name).is_file()
    (row,) = json.loads((run / "history.json").read_text())
    assert np.isfinite(row["train_loss"]) and 0 <= row["val_dice_WT"] <= 1


@pytest.mark.parametrize("layout", ["brats2023", "msd"])
def test_segment_case_end_to_end(seg_run: tuple[Path, Path], tmp_path: Path,
                                 layout: str) -> None:
    _, run = seg_run
    affine = np.array([[-1.0, 0, 0, 5], [0, -1, 0, 3], [0, 0, 1, 0], [0, 0, 0, 1]])
    case = write_case(tmp_path / "case", layout, seed=4, affine=affine)
    out = tmp_path / "out"
    assert main(["seg", "predict", "--model", str(run), "--case", str(case), "--out",
                 str(out)]) == 0
    seg = nib.load(str(out / "seg.nii.gz"))
    assert seg.shape == (40, 44, 36) and np.allclose(seg.affine, affine)
    assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1, 2, 4}
    volumes = json.loads((out / "volumes.json").read_text())
    assert set(volumes["volumes_ml"]) == {"WT", "TC", "ET"}
    assert (out / "overlay_planes.png").is_file() and (out / "overlay_mosaic.png").is_file()


def test_evaluate_and_missing_modalities(seg_run: tuple[Path, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    data, run = seg_run
    assert main(["seg", "evaluate", "--model", str(run), "--case", str(data / "v"),
                 "--case", str(data / "b"), "--out", str(tmp_path / "ev")]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert set(metrics["per_case"]["v"]) == {"WT", "TC", "ET"}
    assert set(metrics["per_case"]["b"]) == {"WT"}  # WT-only labels
    assert metrics["missing_modalities"]["b"] == ["t1ce"]
    assert metrics["mean"]["WT"]["cases"] == 2
    # a case without T1-Gd (FLAIR + T1) runs with FLAIR alone (trained with modality dropout)
    # and says what it lacked ...
    flair_only = write_case(tmp_path / "flair_only", "wt", seed=6)
    assert main(["seg", "predict", "--model", str(run), "--case", str(flair_only), "--out",
                 str(tmp_path / "f")]) == 0
    info = json.loads((tmp_path / "f" / "volumes.json").read_text())
    assert info["modalities_used"] == ["flair"] and info["modalities_missing"] == ["t1ce"]
    only_t1 = write_case(tmp_path / "t1only", "wt", seed=5)
    (only_t1 / "FLAIR.nii.gz").unlink()
    capsys.readouterr()
    # ... but one with none of the model's modalities is a clear error
    assert main(["seg", "predict", "--model", str(run), "--case", str(only_t1), "--out",
                 str(tmp_path / "x")]) == 2
    assert "lacks flair, t1ce" in capsys.readouterr().err


def test_region_scores_by_hand() -> None:
    truth = np.zeros((3, 10, 10, 10), bool)
    truth[:, 2:6, 2:6, 2:6] = True
    pred = np.zeros_like(truth)
    pred[:, 2:6, 2:6, 2:4] = True  # half of the cube
    scores = region_scores(pred, truth, np.array([True, True, False]))
    assert set(scores) == {"WT", "TC"}
    assert scores["WT"]["dice"] == pytest.approx(2 * 32 / (64 + 32))
    assert scores["WT"]["hd95"] == pytest.approx(2.0)
    empty = region_scores(np.zeros_like(truth), np.zeros_like(truth), np.ones(3, bool))
    assert empty["ET"] == {"dice": 1.0, "hd95": 0.0}


def test_export_with_held_out_evaluation(seg_run: tuple[Path, Path], tmp_path: Path) -> None:
    data, run = seg_run
    assert main(["seg", "evaluate", "--model", str(run), "--case", str(data / "v"),
                 "--out", str(tmp_path / "ev")]) == 0
    assert main(["seg", "export", str(run), "--evaluation", str(tmp_path / "ev"), "--out",
                 str(tmp_path / "m")]) == 0
    card = (tmp_path / "m" / "MODEL_CARD.md").read_text()
    assert "| v |" in card and "Dice WT" in card
    assert (tmp_path / "m" / "model.pt").is_file()


def test_clean_regions_drops_strays_and_nests_regions() -> None:
    from mrimaster.segmentation.infer import clean_regions

    regions = np.zeros((3, 20, 20, 20), bool)
    regions[0, 2:10, 2:10, 2:10] = True  # the tumour
    regions[0, 17:19, 17:19, 17:19] = True  # a far, small false positive
    regions[1, 4:8, 4:8, 4:8] = True
    regions[2, 5:7, 5:7, 5:7] = True
    regions[2, 17, 17, 17] = True  # ET outside the kept tumour
    out = clean_regions(regions)
    assert out[0].sum() == 512 and not out[0, 17:, 17:, 17:].any()
    assert not out[2, 17, 17, 17] and (out[2] <= out[1]).all() and (out[1] <= out[0]).all()


def test_training_without_validation_cases_still_saves_a_model(tmp_path: Path) -> None:
    write_case(tmp_path / "data" / "a", "brats2021", seed=6)
    assert main(["seg", "train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "r"),
                 "--no-track", "--set", "train_cases=[a]", "--set", "patch=[16, 16, 16]",
                 "--set", "channels=[8, 16]", "--set", "epochs=1", "--set", "iterations=1"]) == 0
    assert (tmp_path / "r" / "model.pt").is_file()
