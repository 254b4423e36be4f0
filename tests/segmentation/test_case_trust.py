"""The case trust rule: its figures, its fit on held-out predictions, its decision, and the
fold ensemble loaded from a model folder with the rule beside it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mrimaster.cli.main import main
from mrimaster.errors import ModelError
from mrimaster.segmentation.case_trust import (
    FEATURES,
    CaseTrustRule,
    TrustRow,
    fit_and_report,
    fit_rule,
    load_rule,
    save_rule,
    trust_features,
)
from mrimaster.segmentation.ensemble import SegEnsemble
from mrimaster.segmentation.loading import load_segmenter_for_inference
from tests.segmentation.synthetic import write_case


def _cube(lo: int, hi: int, p: float = 0.95) -> np.ndarray:
    out = np.full((12, 12, 12), 0.02, np.float32)
    out[lo:hi, lo:hi, lo:hi] = p
    return out


def test_features_of_agreeing_and_of_unstable_passes() -> None:
    steady = trust_features(_cube(3, 8), _cube(3, 8))
    assert steady == {"mirror_disagreement": 0.0, "soft_fraction": 0.0, "scattered": 0.0,
                      "unsure_in_mask": pytest.approx(0.05)}
    moved = trust_features(_cube(2, 6), _cube(5, 9))
    assert moved["mirror_disagreement"] > 0.9  # one voxel of 64 shared
    soft = trust_features(_cube(3, 8, 0.6), _cube(3, 8, 0.6))
    assert soft["soft_fraction"] == 1.0 and soft["unsure_in_mask"] == pytest.approx(0.4)
    pieces = _cube(3, 8)
    pieces[10:12, 10:12, 10:12] = 0.95  # a stray piece of 8 voxels beside 125
    assert trust_features(pieces, pieces)["scattered"] == pytest.approx(8 / 133, abs=1e-4)
    assert trust_features(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)))["mirror_disagreement"] == 0


def _row(case: str, dice: float, setting: str = "all", **features: float) -> TrustRow:
    values = {k: 0.0 for k in FEATURES} | features
    return TrustRow(case, setting, values, dice)


def test_rule_refers_every_bad_prediction_and_keeps_the_most() -> None:
    rows = [_row("a", 0.9, mirror_disagreement=0.05), _row("b", 0.88, mirror_disagreement=0.1),
            _row("c", 0.35, mirror_disagreement=0.3), _row("d", 0.91, mirror_disagreement=0.2,
                                                           scattered=0.01)]
    rule = fit_rule(rows, features=("mirror_disagreement",))
    # one figure suffices: halfway between the largest kept (0.2) and the bad one (0.3),
    # then capped at the largest among the acceptable rows (the envelope, 0.2)
    assert rule.envelope == {"mirror_disagreement": pytest.approx(0.2)}
    assert rule.thresholds == {"mirror_disagreement": pytest.approx(0.2)}
    assert [rule.decide(r.features)[0] for r in rows] == ["ok", "ok", "refer", "ok"]
    status, reason = rule.decide(rows[2].features)
    assert "mirroring" in reason and "0.300 > 0.200, beyond every acceptable" in reason
    assert "mirror_disagreement > 0.200" in rule.describe()
    # every figure is bounded by the envelope, the ones the fit did not choose too
    full = fit_rule(rows)
    assert full.thresholds == {"mirror_disagreement": pytest.approx(0.2), "soft_fraction": 0.0,
                               "scattered": pytest.approx(0.01), "unsure_in_mask": 0.0}
    assert [full.decide(r.features)[0] for r in rows] == ["ok", "ok", "refer", "ok"]
    assert full.decide({**rows[0].features, "scattered": 0.02})[0] == "refer"


def test_a_threshold_the_fit_sets_below_the_envelope_is_kept() -> None:
    """A good row above a bad one: the fit refers it, and its threshold (under the envelope)
    is the one used, without the envelope's words."""
    rows = [_row("a", 0.9, mirror_disagreement=0.05), _row("b", 0.9, mirror_disagreement=0.4),
            _row("c", 0.35, mirror_disagreement=0.3)]
    rule = fit_rule(rows, features=("mirror_disagreement",))
    assert rule.thresholds == {"mirror_disagreement": pytest.approx(0.175)}
    assert rule.envelope == {"mirror_disagreement": pytest.approx(0.4)}
    assert [rule.decide(r.features)[0] for r in rows] == ["ok", "refer", "refer"]
    assert "beyond every acceptable" not in rule.decide(rows[2].features)[1]


def test_two_figures_when_no_single_one_separates() -> None:
    rows = [_row("a", 0.9, mirror_disagreement=0.1, scattered=0.1),
            _row("b", 0.9, mirror_disagreement=0.2, scattered=0.05),
            _row("c", 0.4, mirror_disagreement=0.3, scattered=0.0),   # unstable
            _row("d", 0.5, mirror_disagreement=0.0, scattered=0.3)]   # in pieces
    rule = fit_rule(rows, features=("mirror_disagreement", "scattered"))
    assert set(rule.thresholds) == {"mirror_disagreement", "scattered"}
    assert [rule.decide(r.features)[0] for r in rows] == ["ok", "ok", "refer", "refer"]


def test_flair_only_predictions_are_held_to_their_own_target() -> None:
    rows = [_row("a", 0.9, soft_fraction=0.1), _row("a", 0.75, "flair", soft_fraction=0.4),
            _row("b", 0.92, soft_fraction=0.2)]
    rule = fit_rule(rows, features=("soft_fraction",))
    # 0.75 is acceptable with every modality but not from FLAIR alone (target 0.80)
    assert rule.decide(rows[1].features)[0] == "refer"
    assert rule.decide(rows[2].features)[0] == "ok"


def test_cross_validated_report_and_leave_one_out() -> None:
    rows = [_row(f"c{i}", 0.85 + 0.01 * i, mirror_disagreement=0.02 * i) for i in range(5)]
    rows += [_row("bad1", 0.3, mirror_disagreement=0.5), _row("bad2", 0.5,
                                                               mirror_disagreement=0.4)]
    rule = fit_and_report(rows)
    fitted = rule.cv["fitted"]["overall"]
    assert fitted["ok"] == 5 and fitted["risk"] == 0.0 and fitted["min_wt_dice_ok"] == 0.85
    # each bad case left out is still referred by the rule fitted on the other bad case
    loo = {r["case"]: r["status_leave_one_out"] for r in rule.cv["rows"]}
    assert loo["bad1"] == "refer" and loo["bad2"] == "refer"
    # with nothing bad to learn from, the rule refers only beyond every case seen
    lone = fit_rule(rows[:5])
    assert lone.thresholds["mirror_disagreement"] == pytest.approx(0.08)
    assert all(lone.decide(r.features)[0] == "ok" for r in rows[:5])
    assert lone.decide({"mirror_disagreement": 0.9})[0] == "refer"


def test_rule_file_round_trip_and_refusals(tmp_path: Path) -> None:
    rule = CaseTrustRule({"scattered": 0.2}, fitted_on="test")
    save_rule(rule, tmp_path)
    assert load_rule(tmp_path) == rule
    assert load_rule(tmp_path / "nowhere") is None
    (tmp_path / "trust.json").write_text(json.dumps({"thresholds": {"astrology": 1}}))
    with pytest.raises(ModelError, match="unknown figures"):
        load_rule(tmp_path)
    (tmp_path / "trust.json").write_text("{not json")
    with pytest.raises(ModelError, match="not a readable trust rule"):
        load_rule(tmp_path)


@pytest.mark.usefixtures("no_brain_mri_check")
def test_fold_ensemble_from_a_model_folder(seg_run: tuple[Path, Path], tmp_path: Path) -> None:
    _, run = seg_run
    folder = tmp_path / "model"
    shutil.copytree(run, folder)
    for k in range(2):  # two members (the same weights: disagreement 0 in the agreeing parts)
        (folder / "folds" / f"fold_{k}").mkdir(parents=True)
        shutil.copy2(run / "model.pt", folder / "folds" / f"fold_{k}" / "model.pt")
    save_rule(CaseTrustRule({"mirror_disagreement": -1.0}, fitted_on="test: refers all"),
              folder)
    ens = load_segmenter_for_inference(folder, tmp_path, "torch")
    assert isinstance(ens, SegEnsemble) and len(ens.members) == 2
    assert ens.trust is not None and ens.runtime_name.startswith("ensemble of 2")
    single = load_segmenter_for_inference(folder, tmp_path, "torch", fast=True)
    assert not isinstance(single, SegEnsemble) and single.trust == ens.trust

    case = write_case(tmp_path / "case", "brats2021", seed=11)
    out = tmp_path / "out"
    assert main(["seg", "predict", "--model", str(folder), "--case", str(case), "--out",
                 str(out), "--runtime", "torch"]) == 0
    info = json.loads((out / "volumes.json").read_text())
    assert info["ensemble"]["members"] == 2
    assert info["uncertainty"]["method"] == "fold ensemble disagreement (2 members)"
    assert info["status"] == "refer" and "mirroring" in info["reason"]
    assert set(info["trust"]["features"]) == set(FEATURES)
    unc = nib.load(str(out / info["uncertainty_file"]))
    mask = nib.load(str(out / info["mask_file"]))
    assert unc.shape == mask.shape and np.allclose(unc.affine, mask.affine)
    values = np.asarray(unc.get_fdata())
    assert values.min() >= 0 and values.max() <= 1 and values.max() < 1e-3  # same weights

    fast = tmp_path / "fast"
    assert main(["seg", "predict", "--model", str(folder), "--case", str(case), "--out",
                 str(fast), "--runtime", "torch", "--fast"]) == 0
    info = json.loads((fast / "volumes.json").read_text())
    assert info["ensemble"] is None and info["uncertainty"]["method"].startswith("test-time")
    assert (fast / "uncertainty.nii.gz").is_file()
    assert not any("ensemble" in w for w in info["warnings"])  # asked for: nothing to say

    # a member that cannot run in the asked runtime: the final model runs, and the result says so
    (folder / "folds" / "fold_1" / "model.pt").unlink()
    (folder / "folds" / "fold_1" / "model.onnx").write_bytes(b"not a graph")
    alone = tmp_path / "alone"
    assert main(["seg", "predict", "--model", str(folder), "--case", str(case), "--out",
                 str(alone), "--runtime", "torch"]) == 0
    info = json.loads((alone / "volumes.json").read_text())
    assert info["ensemble"] is None
    assert any(w.startswith("the fold ensemble could not run here, so the final model ran "
                            "alone") and "fold_1" in w for w in info["warnings"])


@pytest.mark.usefixtures("no_brain_mri_check")
def test_a_model_without_a_rule_gives_no_status(seg_run: tuple[Path, Path],
                                                tmp_path: Path) -> None:
    _, run = seg_run
    case = write_case(tmp_path / "case", "brats2021", seed=12)
    assert main(["seg", "predict", "--model", str(run), "--case", str(case), "--out",
                 str(tmp_path / "o")]) == 0
    info = json.loads((tmp_path / "o" / "volumes.json").read_text())
    assert "status" not in info and info["trust"]["rule"] is None
    assert info["trust"]["features"]["mirror_disagreement"] >= 0


def test_a_failure_unlike_those_seen_is_referred_when_left_out() -> None:
    """Two failures of different kinds: left out, each is referred by the rule fitted on the
    other. The unstable one (mirroring) is caught by the fitted threshold; the scattered one,
    whose mirror figure looks fine, only by the envelope of the acceptable cases."""
    rows = [_row(f"c{i}", 0.85 + 0.01 * i, mirror_disagreement=0.02 * i, scattered=0.01 * i)
            for i in range(5)]
    rows += [_row("unstable", 0.3, mirror_disagreement=0.5),
             _row("scattered", 0.4, mirror_disagreement=0.01, scattered=0.6)]
    rule = fit_and_report(rows)
    loo = {r["case"]: r["status_leave_one_out"] for r in rule.cv["rows"]}
    assert loo["unstable"] == "refer" and loo["scattered"] == "refer"
    without = fit_rule(rows[:5] + rows[5:6])  # fitted on the unstable failure alone
    status, reason = without.decide(rows[6].features)
    assert status == "refer" and "scattered 0.600 > 0.040, beyond every acceptable" in reason
    assert rule.cv["leave_one_out"]["overall"]["risk"] == 0.0


def test_refit_trust_rewrites_the_rule_and_only_its_words(tmp_path: Path) -> None:
    """`seg refit-trust` on a copy of the shipped folder whose rule, tables and card lines are
    an older fit's: the rule becomes this version's fit of the recorded held-out predictions
    (the shipped one) in ``trust.json`` and ``cv.json`` alike, ``cv.md`` is the tables of the
    new ``cv.json``, and the card changes only in its trust lines, which now say the new rule.
    The shipped folder itself is refused without ``--write-shipped``."""
    from mrimaster.segmentation.crossval import markdown
    from mrimaster.segmentation.export import _trust_limits
    from mrimaster.settings import load_settings

    shipped = load_settings().models_dir / "seg-default"
    folder = tmp_path / "m"
    folder.mkdir()
    for name in ("MODEL_CARD.md", "cv.json", "model.pt"):
        shutil.copy2(shipped / name, folder / name)
    cv = json.loads((folder / "cv.json").read_text())
    cv["trust"].update(thresholds={"scattered": 9.0}, fitted_on="an older fit", envelope={})
    (folder / "cv.json").write_text(json.dumps(cv))
    (folder / "trust.json").write_text(json.dumps(cv["trust"]))
    (folder / "cv.md").write_text("an older table\n")
    old = [("Rule: refer when", "Rule: refer when scattered > 9.000 (an older fit)."),
           ("| each case left out |", "| each case left out | an older row |"),
           ("- The trust rule was fitted on", "- The trust rule was fitted on an older day.")]
    lines = (shipped / "MODEL_CARD.md").read_text().splitlines()
    card = "\n".join(next((o for start, o in old if line.startswith(start)), line)
                     for line in lines) + "\n"
    (folder / "MODEL_CARD.md").write_text(card)
    assert main(["seg", "refit-trust", "--model", str(folder)]) == 0

    trust = json.loads((folder / "trust.json").read_text())
    new_cv = json.loads((folder / "cv.json").read_text())
    assert trust == new_cv["trust"]
    want = json.loads((shipped / "trust.json").read_text())
    assert trust["thresholds"] == want["thresholds"] and trust["envelope"] == want["envelope"]
    assert trust["cv"] == want["cv"]
    assert "refitted" in trust["fitted_on"] and "older" not in trust["fitted_on"]
    assert (folder / "cv.md").read_text() == markdown(new_cv)
    new = (folder / "MODEL_CARD.md").read_text()

    def untouched(text: str) -> list[str]:
        return [line for line in text.splitlines() if not line.startswith(
            ("Rule: refer", "| all cases |", "| each case left out |", "- The trust rule"))]

    assert untouched(new) == untouched(card) and "older" not in new
    assert "Rule: " + CaseTrustRule(**trust).describe() in new
    assert _trust_limits(trust)[0] in new.splitlines()
    loo = trust["cv"]["leave_one_out"]["overall"]
    assert f"| each case left out | overall | 28 | {loo['ok']} | {loo['coverage']:.3f} |" in new
    assert new.count("### Case-level trust rule") == 1 and "\n\n## Limits\n" in new
    assert not list(folder.glob(".*.tmp"))
    with pytest.raises(ModelError, match="--write-shipped"):
        main(["--debug", "seg", "refit-trust", "--model", str(shipped)])


@pytest.mark.parametrize("damage", ["no trust rows", "no tables", "no card section"])
def test_refit_trust_refuses_and_writes_nothing(tmp_path: Path, damage: str) -> None:
    """A folder it cannot refit whole is left exactly as it was."""
    from mrimaster.settings import load_settings

    shipped = load_settings().models_dir / "seg-default"
    folder = tmp_path / "m"
    folder.mkdir()
    for name in ("MODEL_CARD.md", "cv.json", "cv.md", "trust.json", "model.pt"):
        shutil.copy2(shipped / name, folder / name)
    cv = json.loads((folder / "cv.json").read_text())
    if damage == "no trust rows":
        cv["trust"] = {}
    elif damage == "no tables":
        del cv["every_modality"]
    (folder / "cv.json").write_text(json.dumps(cv))
    if damage == "no card section":
        card = (folder / "MODEL_CARD.md").read_text()
        (folder / "MODEL_CARD.md").write_text(card.replace("### Case-level trust rule", "###"))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(ModelError, match="held-out predictions|lacks|cannot be updated"):
        main(["--debug", "seg", "refit-trust", "--model", str(folder)])
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
