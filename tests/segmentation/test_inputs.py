"""Which modalities the network gets: only combinations it was trained on, T1-Gd preferred,
and what is not used said with its reason."""

from pathlib import Path

import pytest

from mrimaster.errors import DataError, ModelError
from mrimaster.segmentation.cases import Case
from mrimaster.segmentation.infer import NOT_ASSESSABLE, plan_inputs
from mrimaster.segmentation.runtime import SegInfo

# as the shipped recipe: DeepMedic cases (FLAIR + T1-Gd), DeepVoxNet2 cases (FLAIR + T1)
MODEL = SegInfo(["flair", "t1", "t1ce", "t2"], (96, 96, 96), True,
                combinations=[["flair", "t1"], ["flair", "t1ce"]])


def case(*modalities: str) -> Case:
    return Case("c", {m: Path(f"{m}.nii.gz") for m in modalities})


@pytest.mark.parametrize(("have", "used", "regions"), [
    (("flair", "t1", "t1ce", "t2"), ["flair", "t1ce"], ["WT", "TC", "ET"]),
    (("flair", "t1ce"), ["flair", "t1ce"], ["WT", "TC", "ET"]),
    (("flair", "t1"), ["flair", "t1"], ["WT"]),
    (("flair",), ["flair"], ["WT"]),
    (("flair", "t2"), ["flair"], ["WT"]),
    (("t1ce", "t2"), ["t1ce"], ["WT", "TC", "ET"]),
])
def test_the_largest_trained_combination_is_used(have: tuple[str, ...], used: list[str],
                                                 regions: list[str]) -> None:
    plan = plan_inputs(MODEL, case(*have))
    assert plan.used == used and plan.regions == regions
    assert plan.missing == [m for m in MODEL.modalities if m not in have]
    assert set(plan.ignored) == set(have) - set(used)
    assert {r: NOT_ASSESSABLE for r in ("TC", "ET") if r not in regions} == plan.not_assessable


def test_reasons_for_what_is_not_used() -> None:
    plan = plan_inputs(MODEL, case("flair", "t1", "t1ce", "t2"))
    assert "no training case had it" in plan.ignored["t2"]
    assert "never seen together with flair+t1ce" in plan.ignored["t1"]


def test_no_usable_modality_is_a_clear_error() -> None:
    with pytest.raises(DataError, match="has t2; the model needs flair\\+t1 or flair\\+t1ce"):
        plan_inputs(MODEL, case("t2"))


def test_without_dropout_only_whole_training_combinations() -> None:
    strict = SegInfo(["flair", "t1ce"], (96, 96, 96), False, combinations=[["flair", "t1ce"]])
    assert plan_inputs(strict, case("flair", "t1ce")).used == ["flair", "t1ce"]
    with pytest.raises(DataError):
        plan_inputs(strict, case("flair"))


def test_older_model_files_use_what_the_case_has() -> None:
    old = SegInfo(["flair", "t1ce"], (96, 96, 96), True)  # no recorded combinations
    plan = plan_inputs(old, case("flair", "t1", "t1ce"))
    assert plan.used == ["flair", "t1ce"] and plan.ignored == {"t1": "the model does not take it"}


def test_a_modality_cross_validation_excluded_is_not_fed_unless_it_is_all_there_is() -> None:
    why = "cross-validation: whole-tumour Dice 0.824 with it, 0.836 without it"
    model = SegInfo(MODEL.modalities, MODEL.patch, True, combinations=MODEL.combinations,
                    excluded={"t1": why})
    plan = plan_inputs(model, case("flair", "t1"))
    assert plan.used == ["flair"] and plan.ignored == {"t1": why}
    assert plan_inputs(model, case("t1")).used == ["t1"]  # nothing else to read


def test_a_model_file_from_before_the_grid_was_recorded_reads_as_monai_s() -> None:
    from mrimaster.segmentation.runtime import info_from_dict

    saved = MODEL.info_dict()
    assert saved["grid"] == "monai" and info_from_dict(saved)["grid"] == "monai"
    assert info_from_dict({**saved, "grid": "even"})["grid"] == "even"
    del saved["grid"]
    assert info_from_dict(saved)["grid"] == "monai"
    with pytest.raises(ModelError, match="grid 'dense' is unknown"):
        info_from_dict({**saved, "grid": "dense"})
