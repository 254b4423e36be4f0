"""The shipped segmentation model on shared cases held out from its training."""

import json
from pathlib import Path

import pytest

from mrimaster.segmentation.cases import find_case
from mrimaster.segmentation.evaluate import evaluate_cases
from mrimaster.segmentation.runtime import load_segmenter_for_inference
from mrimaster.settings import load_settings

MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "seg-default"


@pytest.mark.realdata
@pytest.mark.parametrize("runtime", ["torch", "auto"])
def test_default_segmenter_on_held_out_cases(data_root: Path, runtime: str) -> None:
    """The card's figures were measured with PyTorch; the fast path (``auto``: the fastest
    engine the export validated) must stay within 0.005 Dice of them."""
    seg = load_segmenter_for_inference("default", load_settings().models_dir, runtime)
    assert (seg.runtime_name == "torch") == (runtime == "torch")
    assert seg.modalities == ["flair", "t1ce"] and seg.modality_dropout
    root = data_root / "brats-mini"
    cases = [find_case(root / "deepmedic-brats2015/test/brats_2013_pat0001_1"),  # FLAIR + T1-Gd
             find_case(root / "deepmedic-brats2015/test/brats_2013_pat0002_1"),
             find_case(root / "deepvoxnet2-brats2018/case_6"),  # FLAIR only, WT labels
             find_case(root / "deepvoxnet2-brats2018/case_7")]
    metrics = evaluate_cases(seg, cases)
    per_case = metrics["per_case"]
    # regression pin: every held-out case still scores what the card reports (PyTorch exactly,
    # the fast path within 0.005)
    card = json.loads((MODEL_DIR / "heldout_metrics.json").read_text())["per_case"]
    assert set(per_case) == set(card)
    tolerance = 1e-4 if runtime == "torch" else 0.005
    for case, regions in card.items():
        for region, scores in regions.items():
            assert per_case[case][region]["dice"] == pytest.approx(scores["dice"], abs=tolerance)
    # independent floors, whatever the card says
    wt = [scores["WT"]["dice"] for scores in per_case.values()]
    assert min(wt) >= 0.65 and sum(wt) / len(wt) >= 0.8
    assert per_case["case_6"]["WT"]["dice"] >= 0.8  # WT from FLAIR alone
    assert per_case["brats_2013_pat0001_1"]["ET"]["dice"] >= 0.5
    assert metrics["missing_modalities"]["case_6"] == ["t1ce"]
