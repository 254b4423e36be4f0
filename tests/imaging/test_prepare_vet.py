"""prepare_study's ``vet``: each chosen series judged as loaded, before the reference is chosen
(the 3D brain-MRI check, mrimaster.segmentation.brain_mri). Stubs stand in for the check and
the model's needs, so that only the stage's bookkeeping is tested; the check itself is tested in
tests/trust/test_volume_check.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from mrimaster.errors import DataError
from mrimaster.imaging.prepare import PrepareConfig, prepare_study
from mrimaster.segmentation.brain_mri import NotBrainMRI

ROLES = ("flair", "t1ce")


def _study(folder: Path, nan_in: str | None = None) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = {}
    for role in ROLES:
        data = np.zeros((40, 40, 30), np.float32)
        data[8:32, 8:32, 6:24] = rng.uniform(100, 200, (24, 24, 18))
        if role == nan_in:
            data[0, 0, 0] = np.nan
        out[role] = folder / f"{role}.nii.gz"
        nib.save(nib.Nifti1Image(data, np.diag([4.0, 4.0, 4.0, 1.0])), out[role])
    return out


def _vet(refuse: str | None, seen: list[str]) -> Any:
    def vet(what: str, image: nib.Nifti1Image) -> dict[str, Any]:
        seen.append(what)
        if refuse and refuse in what:
            raise NotBrainMRI(f"{what} does not look like a brain MRI: 30 of 30 slices",
                              "hint", {"run": True, "refused": True, "slices": 30})
        if not np.isfinite(np.asarray(image.dataobj)).all():
            raise DataError(f"{what} holds NaN or infinite values", "hint")
        return {"run": True, "refused": False}
    return vet


def _needs_t1ce(roles: list[str]) -> None:
    if "t1ce" not in roles:
        raise DataError("case the study lacks t1ce, which this model needs", "hint")


def test_a_refused_series_the_model_needs_is_named_in_the_refusal(tmp_path: Path) -> None:
    seen: list[str] = []
    with pytest.raises(DataError) as err:
        prepare_study(_study(tmp_path / "in"), tmp_path / "work", accept=_needs_t1ce,
                      vet=_vet("T1-Gd", seen))
    assert "lacks t1ce" in err.value.message
    assert "T1-Gd, not used: the T1-Gd (t1ce.nii.gz) does not look like a brain MRI" in \
        err.value.message, err.value.message


def test_a_missing_series_is_refused_before_anything_is_read_or_vetted(tmp_path: Path) -> None:
    seen: list[str] = []
    files = _study(tmp_path / "in")
    del files["t1ce"]
    with pytest.raises(DataError, match="lacks t1ce"):
        prepare_study(files, tmp_path / "work", accept=_needs_t1ce, vet=_vet(None, seen))
    assert seen == []


@pytest.mark.parametrize(("refuse", "nan_in", "by"), [("T1-Gd", None, "brain-MRI check"),
                                                      (None, "t1ce", None)])
def test_a_left_out_series_says_why_and_the_flair_becomes_the_reference(
        tmp_path: Path, refuse: str | None, nan_in: str | None, by: str | None) -> None:
    seen: list[str] = []
    prepared = prepare_study(_study(tmp_path / "in", nan_in), tmp_path / "work",
                             PrepareConfig(bias="none", strip="never"), vet=_vet(refuse, seen))
    assert len(seen) == 2
    sequences = prepared.report["sequences"]
    assert set(prepared.case.images) == {"flair"}
    assert sequences["flair"]["method"] == "reference"
    assert sequences["flair"]["brain_mri_check"] == {"run": True, "refused": False}
    t1ce = sequences["t1ce"]
    assert "t1ce.nii.gz" in t1ce["refused"] and t1ce.get("left_out_by") == by, t1ce
    assert ("brain_mri_check" in t1ce) is (by is not None)
