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
@pytest.mark.usefixtures("no_brain_mri_check")
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
    assert all(v is not None for v in volumes["volumes_ml"].values())
    assert volumes["modalities_used"] == ["flair", "t1", "t1ce", "t2"]
    assert volumes["label_convention"] == "brats2021" and volumes["not_assessable"] == {}
    # the volumes are those of the written mask on the input grid (1 mm voxels)
    written = np.asarray(seg.dataobj)
    assert volumes["volumes_ml"]["WT"] == pytest.approx((written > 0).sum() / 1000)
    assert (out / "overlay_planes.png").is_file() and (out / "overlay_mosaic.png").is_file()


@pytest.mark.usefixtures("no_brain_mri_check")
def test_evaluate_and_missing_modalities(seg_run: tuple[Path, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    data, run = seg_run
    assert main(["seg", "evaluate", "--model", str(run), "--case", str(data / "v"),
                 "--case", str(data / "b"), "--out", str(tmp_path / "ev")]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert set(metrics["per_case"]["v"]) == {"WT", "TC", "ET"}
    assert set(metrics["per_case"]["b"]) == {"WT"}  # WT-only labels
    assert metrics["missing_modalities"]["b"] == ["t1ce", "t2"]
    assert metrics["mean"]["WT"]["cases"] == 2
    assert {"volume_diff_ml", "hd95"} <= set(metrics["per_case"]["v"]["ET"])
    # a case without T1-Gd (FLAIR + T1) runs with what it has and writes the whole tumour
    # only: tumour core and enhancing tumour are not assessable
    no_gd = write_case(tmp_path / "no_gd", "wt", seed=6)
    capsys.readouterr()
    assert main(["seg", "predict", "--model", str(run), "--case", str(no_gd), "--out",
                 str(tmp_path / "f")]) == 0
    assert "TC not assessable without T1-Gd" in capsys.readouterr().out
    info = json.loads((tmp_path / "f" / "volumes.json").read_text())
    assert info["modalities_used"] == ["flair", "t1"]
    assert info["modalities_missing"] == ["t1ce", "t2"]
    assert info["volumes_ml"]["TC"] is None and info["volumes_ml"]["ET"] is None
    assert info["not_assessable"] == {"TC": "not assessable without T1-Gd",
                                      "ET": "not assessable without T1-Gd"}
    assert info["label_convention"] == "wt"
    # a whole-tumour-only mask is wt.nii.gz, never seg.nii.gz (BraTS readers take 1 for NCR)
    assert info["mask_file"] == "wt.nii.gz" and not (tmp_path / "f" / "seg.nii.gz").exists()
    written = np.asarray(nib.load(str(tmp_path / "f" / "wt.nii.gz")).dataobj)
    assert set(np.unique(written)) <= {0, 1}  # no TC / ET label anywhere
    assert set(info["sequences"]) == {"flair", "t1"} and info["sequence_problems"] == []


@pytest.mark.usefixtures("no_brain_mri_check")
def test_a_case_with_part_of_a_trained_combination_runs(seg_run: tuple[Path, Path],
                                                        tmp_path: Path) -> None:
    """The synthetic model trained on FLAIR+T1+T1-Gd+T2 and FLAIR+T1 cases with modality
    dropout: a T2-only case is part of the first combination, so it runs."""
    _, run = seg_run
    case = write_case(tmp_path / "c", "brats2021", seed=7)
    for m in ("flair", "t1", "t1ce"):
        (case / f"x_{m}.nii.gz").unlink()
    from mrimaster.segmentation.cases import find_case
    from mrimaster.segmentation.infer import segment_case
    from mrimaster.segmentation.loading import load_segmenter_for_inference

    seg = load_segmenter_for_inference(str(run), tmp_path, "torch", check_brain_mri=False)
    assert segment_case(seg, find_case(case), tmp_path / "o").plan.used == ["t2"]
    # a study given to `seg predict` needs its FLAIR (the reference of every check)
    assert main(["seg", "predict", "--model", str(run), "--case", str(case), "--out",
                 str(tmp_path / "p")]) == 2
    assert not (tmp_path / "p").exists()


def test_region_scores_by_hand() -> None:
    truth = np.zeros((3, 10, 10, 10), bool)
    truth[:, 2:6, 2:6, 2:6] = True
    pred = np.zeros_like(truth)
    pred[:, 2:6, 2:6, 2:4] = True  # half of the cube
    scores = region_scores(pred, truth, np.array([True, True, False]))
    assert set(scores) == {"WT", "TC"}
    assert scores["WT"]["dice"] == pytest.approx(2 * 32 / (64 + 32))
    assert scores["WT"]["hd95"] == pytest.approx(2.0)
    assert scores["WT"]["volume_diff_ml"] == pytest.approx((32 - 64) / 1000)
    empty = region_scores(np.zeros_like(truth), np.zeros_like(truth), np.ones(3, bool))
    assert empty["ET"]["dice"] == 1.0 and empty["ET"]["hd95"] == 0.0
    # one mask empty: HD95 is the diagonal of the whole input grid, not of the masks' crop
    missed = region_scores(np.zeros_like(truth), truth, np.ones(3, bool), (1.0, 1.0, 2.0),
                           grid_shape=(240, 240, 155))
    assert missed["WT"]["dice"] == 0.0
    assert missed["WT"]["hd95"] == pytest.approx(np.sqrt(240**2 + 240**2 + 310**2))


def test_clean_regions_drops_strays_and_nests_regions() -> None:
    from mrimaster.segmentation.postprocess import clean_regions

    regions = np.zeros((3, 20, 20, 20), bool)
    regions[0, 2:10, 2:10, 2:10] = True  # the tumour
    regions[0, 17:19, 17:19, 17:19] = True  # a far, small false positive
    regions[1, 4:8, 4:8, 4:8] = True
    regions[2, 5:7, 5:7, 5:7] = True
    regions[2, 17, 17, 17] = True  # ET outside the kept tumour
    out = clean_regions(regions, {"WT": 0.1})
    assert out[0].sum() == 512 and not out[0, 17:, 17:, 17:].any()
    assert not out[2, 17, 17, 17] and (out[2] <= out[1]).all() and (out[1] <= out[0]).all()


def test_training_without_validation_cases_still_saves_a_model(tmp_path: Path) -> None:
    write_case(tmp_path / "data" / "a", "brats2021", seed=6)
    assert main(["seg", "train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "r"),
                 "--no-track", "--set", "train_cases=[a]", "--set", "patch=[16, 16, 16]",
                 "--set", "channels=[8, 16]", "--set", "epochs=1", "--set", "iterations=1"]) == 0
    assert (tmp_path / "r" / "model.pt").is_file()


@pytest.mark.usefixtures("no_brain_mri_check")
def test_test_time_mirroring_is_an_option(seg_run: tuple[Path, Path], tmp_path: Path) -> None:
    from mrimaster.segmentation.passes import MIRRORS, predict_raw

    _, run = seg_run
    case = write_case(tmp_path / "c", "brats2021", seed=8)
    assert main(["seg", "predict", "--model", str(run), "--case", str(case), "--out",
                 str(tmp_path / "o"), "--tta"]) == 0
    assert json.loads((tmp_path / "o" / "volumes.json").read_text())["tta"] is True
    assert len(MIRRORS) == 8 and len(set(MIRRORS)) == 8

    class Counting:  # the network is run once per mirroring, each flipped back
        def __init__(self) -> None:
            self.calls = 0
            self.image = np.zeros((4, 16, 16, 16), np.float32)

        def logits(self, image: np.ndarray) -> np.ndarray:
            self.calls += 1
            out = np.full((3, *image.shape[1:]), -5.0, np.float32)
            out[:, image[0] > 0] = 5.0  # "tumour" where channel 0 is positive
            return out

    fake = Counting()
    fake.image[0, 2:5, 3:9, 1:4] = 1.0
    raw = predict_raw(fake, fake.image, tta=True)  # type: ignore[arg-type]
    assert fake.calls == 8 and np.array_equal(raw[0], fake.image[0] > 0)
