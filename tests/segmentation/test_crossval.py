"""Cross-validation end to end on synthetic cases: folds, post-processing, final model,
export with the table in the card, and resuming."""

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from mrimaster.cli.main import main
from mrimaster.segmentation.crossval import assign_folds
from mrimaster.segmentation.model import load_segmenter
from mrimaster.segmentation.postprocess import CANDIDATES, choose_postprocessing
from tests.segmentation.synthetic import write_case

TINY = ["--set", "patch=[16, 16, 16]", "--set", "channels=[8, 16]", "--set", "epochs=1",
        "--set", "iterations=2", "--set", "num_threads=2"]


def test_folds_hold_out_every_case_once_and_mix_sources() -> None:
    cases = [f"a/{i}" for i in range(6)] + [f"b/{i}" for i in range(8)]
    folds = assign_folds(cases, 5)
    assert sorted(set(folds)) == [0, 1, 2, 3, 4]
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 1
    # each source is spread over the folds, not stacked in one
    assert len({f for c, f in zip(cases, folds, strict=True) if c.startswith("a/")}) == 5


def test_cross_validation_run_and_export(seg_run: tuple[Path, Path], tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    shutil.copytree(seg_run[0], data)
    # a case whose FLAIR covers less than its T1-Gd: FLAIR alone has another brain box
    d = write_case(data / "d", "brats2015", seed=9)
    flair = nib.load(str(d / "Flair_subtrMeanDivStd.nii.gz"))
    short = np.asarray(flair.dataobj).copy()
    short[:6] = 0
    nib.save(nib.Nifti1Image(short, flair.affine), str(d / "Flair_subtrMeanDivStd.nii.gz"))
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump({"train_cases": ["a", "b", "v", "d"]}))
    out = tmp_path / "cv"
    args = ["seg", "cv", "--config", str(config), "--folds", "3", "--data", str(data),
            "--out", str(out), *TINY]
    assert main(args) == 0
    cv = json.loads((out / "cv.json").read_text())
    assert set(cv["all"]["per_case"]) == set(cv["flair"]["per_case"]) == {"a", "b", "v", "d"}
    assert len(set(cv["folds"].values())) == 3
    assert set(cv["flair"]["per_case"]["a"]) == {"WT"}  # FLAIR alone: WT only
    assert set(cv["all"]["per_case"]["b"]) == {"WT"}  # no T1-Gd, WT labels
    assert set(cv["all"]["per_case"]["a"]) == {"WT", "TC", "ET"}
    assert set(cv["postprocess"]) == {"WT", "TC", "ET"}
    assert all(v in CANDIDATES for v in cv["postprocess"].values())
    assert (out / "cv.png").is_file() and "FLAIR alone" in (out / "cv.md").read_text()
    final = load_segmenter(out / "final" / "model.pt")
    assert final.postprocess == cv["postprocess"]
    assert ["flair", "t1"] in final.combinations and final.spacing == (1.0, 1.0, 1.0)
    assert final.grid == "even"  # the recipe's patch grid, with which the folds were scored
    # resuming: finished folds are not trained again
    stamp = (out / "fold_0" / "model.pt").stat().st_mtime_ns
    assert main(args) == 0
    assert (out / "fold_0" / "model.pt").stat().st_mtime_ns == stamp
    # export: the final model and the table in the card
    assert main(["seg", "export", str(out), "--out", str(tmp_path / "m")]) == 0
    card = (tmp_path / "m" / "MODEL_CARD.md").read_text()
    assert "| a |" in card and "Dice WT" in card and "FLAIR alone" in card
    assert "patches spread evenly" in card  # the grid the model runs
    assert (tmp_path / "m" / "model.pt").is_file() and (tmp_path / "m" / "cv.json").is_file()
    # the trust rule, fitted on the held-out predictions, goes with the model ...
    trust = cv["trust"]
    rows = trust["cv"]["rows"]
    assert {(r["case"], r["setting"]) for r in rows} >= {("a", "all"), ("a", "flair")}
    assert all(r["status"] in ("ok", "refer") for r in rows)
    under = [r for r in rows if r["dice"] < trust["targets"][r["setting"]]]
    assert all(r["status"] == "refer" for r in under)  # every bad prediction is referred
    assert json.loads((tmp_path / "m" / "trust.json").read_text()) == trust
    assert "Case-level trust rule" in card
    # ... and so do the fold models: the default inference is their ensemble
    folds = sorted(p.name for p in (tmp_path / "m" / "folds").iterdir())
    assert folds == ["fold_0", "fold_1", "fold_2"]
    assert all((tmp_path / "m" / "folds" / f / "model.pt").is_file() for f in folds)
    assert {load_segmenter(tmp_path / "m" / "folds" / f / "model.pt").grid
            for f in folds} == {"even"}
    # a run whose rule an earlier version fitted is exported as recorded, with a warning
    assert "refit-trust" not in caplog.text
    cv["trust"]["thresholds"] = {"scattered": 9.0}
    (out / "cv.json").write_text(json.dumps(cv))
    with caplog.at_level("WARNING"):
        assert main(["seg", "export", str(out), "--out", str(tmp_path / "m2")]) == 0
    assert "fitted by an earlier version" in caplog.text and "refit-trust" in caplog.text


def test_export_refuses_an_unfinished_run(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "cv").mkdir()
    assert main(["seg", "export", str(tmp_path / "cv"), "--out", str(tmp_path / "m")]) == 2
    assert "not a finished cross-validation run" in capsys.readouterr().err


def test_postprocessing_is_chosen_only_where_it_helps() -> None:
    """WT: every case has a far stray blob the reference lacks -> a clean-up wins. TC: the
    second blob is real tumour -> clean-up would hurt, stays off."""
    raw, truth = [], []
    for _ in range(3):
        pred = np.zeros((3, 30, 30, 30), bool)
        pred[:, 5:15, 5:15, 5:15] = True
        pred[0, 25:27, 25:27, 25:27] = True  # stray WT blob, false positive
        pred[1, 19:23, 19:23, 19:23] = True  # TC satellite (64 voxels), real
        pred[0, 19:23, 19:23, 19:23] = True
        ref = pred.copy()
        ref[0, 25:27, 25:27, 25:27] = False
        raw.append(pred)
        truth.append(ref)

    def score(k: int, i: int, mask: np.ndarray) -> float | None:
        t = truth[k][i]
        return 2 * float((mask & t).sum()) / float(mask.sum() + t.sum())

    chosen, table = choose_postprocessing(raw, score)
    assert chosen["WT"] == 0.05  # the only setting that drops the stray, keeps the satellite
    assert chosen["TC"] is None
    assert table["WT"][f"{chosen['WT']:g}"] > table["WT"]["off"]


def test_folds_train_one_at_a_time_then_the_run_scores_them(
        seg_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, _ = seg_run
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump({"train_cases": ["a", "b", "v"]}))
    out = tmp_path / "cv"
    args = ["seg", "cv", "--config", str(config), "--folds", "3", "--data", str(data),
            "--out", str(out), *TINY]
    assert main([*args, "--fold", "1"]) == 0
    # fold 1 as trained before the patch grid was recorded: neither its model nor its recipe
    # names one
    blob = torch.load(out / "fold_1" / "model.pt", weights_only=True)
    del blob["grid"]
    torch.save(blob, out / "fold_1" / "model.pt")
    recipe = yaml.safe_load((out / "fold_1" / "config.yaml").read_text())
    del recipe["grid"]
    (out / "fold_1" / "config.yaml").write_text(yaml.safe_dump(recipe))
    assert load_segmenter(out / "fold_1" / "model.pt").grid == "monai"
    assert main([*args, "--fold", "final"]) == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["final", "fold_1"]
    assert not (out / "cv.json").exists()  # one fold alone is not scored
    fold_1 = (out / "fold_1" / "history.json").stat().st_mtime_ns
    final = (out / "final" / "history.json").stat().st_mtime_ns
    assert main(args) == 0  # trains folds 0 and 2, keeps 1 and final, scores all
    assert (out / "fold_1" / "history.json").stat().st_mtime_ns == fold_1  # not retrained
    # ... scored on the recipe's grid, which its model file now records
    assert load_segmenter(out / "fold_1" / "model.pt").grid == "even"
    assert (out / "final" / "history.json").stat().st_mtime_ns == final  # not retrained
    assert (out / "fold_0" / "model.pt").is_file() and (out / "fold_2" / "model.pt").is_file()
    assert set(json.loads((out / "cv.json").read_text())["all"]["per_case"]) == {"a", "b", "v"}
    # ... and given the post-processing the scores chose
    assert load_segmenter(out / "final" / "model.pt").meta["postprocess_from"] == \
        "cross-validation"
    # run again: the same fold models are not segmented again, a retrained one is
    table = (out / "cv.json").read_bytes()
    cv = json.loads(table)
    assert set(cv["fold_models"]) == {"fold_0", "fold_1", "fold_2"}
    (out / "cv.json").write_text(json.dumps({**cv, "marker": 1}))
    assert main(args) == 0
    assert json.loads((out / "cv.json").read_text())["marker"] == 1  # kept as it was
    blob = torch.load(out / "fold_2" / "model.pt", weights_only=True)
    blob["meta"] = {**blob.get("meta", {}), "retrained": True}
    torch.save(blob, out / "fold_2" / "model.pt")
    assert main(args) == 0
    rescored = json.loads((out / "cv.json").read_text())
    assert "marker" not in rescored and rescored["fold_models"]["fold_2"] != \
        cv["fold_models"]["fold_2"]
    # ... and so is a table of another patch grid, or one that cannot be read
    for damage in ("unreadable", "grid"):
        (out / "cv.json").write_text(json.dumps({**rescored, "marker": 1}))
        if damage == "unreadable":
            (out / "cv.json").write_text('{"marker": 1, "fold_models": ')
        assert main([*args, "--set", "grid=monai"] if damage == "grid" else args) == 0
        again = json.loads((out / "cv.json").read_text())
        assert "marker" not in again
        assert again["scored_on"]["grid"] == ("monai" if damage == "grid" else "even")
        assert load_segmenter(out / "fold_0" / "model.pt").grid == again["scored_on"]["grid"]
    capsys.readouterr()
    assert main([*args, "--fold", "3"]) == 2
    assert "fold '3' does not exist" in capsys.readouterr().err
    # a finished fold of another recipe is not mixed into the table
    assert main([*args, "--set", "epochs=2"]) == 2
    assert "fold_0 was trained with another recipe (epochs 1 here, 2 asked)" in \
        capsys.readouterr().err
    (out / "fold_2" / "config.yaml").unlink()
    assert main(args) == 2
    assert "fold_2 holds a model without its config.yaml" in capsys.readouterr().err
