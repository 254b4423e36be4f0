"""The 3D segmentation's trust decision and uncertainty map in the web app: the job stores
``uncertainty.nii.gz`` beside the mask and keeps ``status``/``reason`` in the result; a
referred result makes the case ``referred`` (as a referred 2D read) and shows the verdict, the
reason, the rule and its features on the case page, the worklist and the PDF; a result written
before the trust decision existed shows none of it. The segmentation is stubbed (no model
runs): it writes what :func:`mrimaster.segmentation.infer.segment_case` writes."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient
from markupsafe import escape

from mrimaster.serving import report
from mrimaster.serving.app import create_app
from mrimaster.serving.context import AppContext
from mrimaster.serving.jobs import JobRunner
from mrimaster.storage import repository as repo
from tests.serving.conftest import DOCTOR_PASSWORD, bearer, make_ctx
from tests.serving.test_mask_versions import add_3d_case

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
SHAPE = (16, 16, 8)
REASON = ("whole tumour unstable under left-right mirroring (1 - Dice 0.21 > 0.12); "
          "members disagree on 31% of the whole tumour")
TRUST = {"rule": "refer when 1 - mirrored WT Dice > 0.12 (fitted on brats-mini validation)",
         "features": {"mirror_wt_1_minus_dice": 0.2101, "members_disagree": True}}


def mask_and_uncertainty() -> tuple[np.ndarray, np.ndarray]:
    """A small BraTS mask and an uncertainty map on its grid (high on the tumour's rim)."""
    mask = np.zeros(SHAPE, np.uint8)
    mask[4:12, 4:12, 2:6] = 2
    mask[6:10, 6:10, 3:5] = 1
    unc = np.zeros(SHAPE, np.float32)
    unc[3:13, 3:13, 1:7] = 0.6
    unc[mask == 1] = 0.1
    return mask, unc


def fake_segment_study(trust: dict[str, Any] | None) -> Any:
    """A stand-in for :func:`mrimaster.segmentation.study.segment_study`: writes the mask, the
    brain mask, ``volumes.json`` (with the trust keys of ``trust``, none when ``None``) and,
    when ``trust`` names one (``uncertainty_file``), ``uncertainty.nii.gz``."""
    def segment_study(_seg: Any, _source: Any, out: Path, *_a: Any, **_kw: Any) -> None:
        out.mkdir(parents=True, exist_ok=True)
        mask, unc = mask_and_uncertainty()
        nib.save(nib.Nifti1Image(mask, AFFINE), str(out / "seg.nii.gz"))
        nib.save(nib.Nifti1Image((mask > 0).astype(np.uint8), AFFINE),
                 str(out / "brain_mask.nii.gz"))
        info: dict[str, Any] = {
            "volumes_ml": {"WT": 2.05, "TC": 0.5, "ET": None}, "label_convention": "brats2021",
            "mask_file": "seg.nii.gz", "labels": "brats2021", "modalities_used": ["flair"],
            "modalities_missing": ["t1ce"], "warnings": []}
        if trust is not None:
            info.update(trust)
        if info.get("uncertainty_file"):
            nib.save(nib.Nifti1Image(unc, AFFINE), str(out / info["uncertainty_file"]))
        (out / "volumes.json").write_text(json.dumps(info))

    return segment_study


@pytest.fixture
def tctx(tmp_path: Path, db_url: str) -> Iterator[AppContext]:
    """The app's context with a stub segmenter (the segmentation itself is stubbed)."""
    models = SimpleNamespace(segmenter=lambda: SimpleNamespace(model=SimpleNamespace(
        spacing=(1.0, 1.0, 1.0))), seg_version=lambda: "seg-test@1",
        classifier=SimpleNamespace(classes=["glioma_tumor", "no_tumor"]))
    context = make_ctx(tmp_path, db_url, models)  # type: ignore[arg-type]
    yield context
    context.engine.dispose()


def gunzip_nifti(data: bytes) -> np.ndarray:
    return np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(data)).dataobj)


def worklist_row(page: str, case_id: int) -> str:
    found = re.search(rf'<tr data-case="{case_id}">(.*?)</tr>', page, re.S)
    assert found, page
    return found.group(1)


def test_referred_result_stored_and_shown(tctx: AppContext, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    client = TestClient(create_app(tctx))
    doctor = bearer(client, "doctor", DOCTOR_PASSWORD)
    mask, unc = mask_and_uncertainty()
    flair = gzip.compress(nib.Nifti1Image((mask * 40).astype(np.int16), AFFINE).to_bytes())
    r = client.post("/api/cases/3d", headers=doctor, data={"patient": "Trust 1"},
                    files={"flair": ("flair.nii.gz", flair)})
    assert r.status_code == 200, r.text
    case_id = r.json()["id"]
    monkeypatch.setattr("mrimaster.segmentation.study.segment_study", fake_segment_study({
        "status": "refer", "reason": REASON, "trust": TRUST,
        "uncertainty_file": "uncertainty.nii.gz",
        "ensemble": {"members": 5, "runtime": "openvino-bf16"}}))
    assert JobRunner(tctx).run_pending() == 1
    done = client.get(f"/api/cases/{case_id}", headers=doctor).json()
    # the case is referred, the result keeps the trust decision as written
    assert done["status"] == "referred", done
    assert done["result"]["status"] == "refer" and done["result"]["reason"] == REASON
    assert done["result"]["trust"] == TRUST
    assert done["result"]["ensemble"] == {"members": 5, "runtime": "openvino-bf16"}
    # the uncertainty map is a case file, served as written
    url = done["files"]["uncertainty.nii.gz"]
    served = client.get(url, headers=doctor)
    assert served.status_code == 200
    assert np.array_equal(gunzip_nifti(served.content), unc)
    # the case page: the verdict, the reason, the rule and its features, the overlay's toggle
    page = client.get(f"/cases/{case_id}", headers=doctor).text
    assert '<p class="verdict refer" id="seg-verdict">' in page
    assert f"Referred to a radiologist: {escape(REASON)}" in page
    trust = re.search(r'<p class="meta" id="seg-trust">(.*?)</p>', page, re.S)
    assert trust, page
    assert "Ensemble of 5 models (openvino-bf16)" in trust.group(1)
    assert "fitted on brats-mini validation" in trust.group(1)
    assert "mirror_wt_1_minus_dice 0.21," in trust.group(1)
    assert "members_disagree True" in trust.group(1)
    assert '<input type="checkbox" id="uncertainty">' in page
    assert '<option value="uncertainty">' not in page  # an overlay, not an image to show
    assert '<span class="status referred">referred</span>' in page
    # the worklist: referred, as a referred 2D read, the reason on hover
    row = worklist_row(client.get("/", headers=doctor).text, case_id)
    assert 'class="status referred"' in row and "members disagree on 31%" in row
    # the PDF report's text
    with tctx.sessions() as db:
        case = repo.get_case(db, case_id)
        assert case is not None
        lines = report._ai_lines(case)
    assert lines[0].startswith("AI status: refer (whole tumour unstable"), lines
    assert "members disagree on 31% of the whole tumour" in " ".join(
        line.strip() for line in lines)  # wrapped
    assert all(len(line) <= 100 for line in lines[:-1]), lines
    pdf = client.get(f"/api/cases/{case_id}/report.pdf", headers=doctor)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    # segmented again, trusted and without a map: the earlier map is not kept
    with tctx.sessions() as db:
        case = repo.get_case(db, case_id)
        assert case is not None
        repo.add_job(db, case)
        db.commit()
    monkeypatch.setattr("mrimaster.segmentation.study.segment_study", fake_segment_study({
        "status": "ok", "reason": "", "trust": TRUST, "ensemble": None}))
    assert JobRunner(tctx).run_pending() == 1
    again = client.get(f"/api/cases/{case_id}", headers=doctor).json()
    assert again["status"] == "ai-read" and "uncertainty.nii.gz" not in again["files"]
    page = client.get(f"/cases/{case_id}", headers=doctor).text
    assert '<p class="verdict ok" id="seg-verdict">' in page
    assert "Referred to a radiologist" not in page and 'id="uncertainty"' not in page
    assert "Ensemble of" not in page and "Trust rule: refer when" in page


def test_result_without_trust_decision_renders_as_before(tctx: AppContext) -> None:
    mask, _ = mask_and_uncertainty()
    case_id = add_3d_case(tctx, mask, AFFINE)  # a result as written before the trust keys
    client = TestClient(create_app(tctx))
    doctor = bearer(client, "doctor", DOCTOR_PASSWORD)
    page = client.get(f"/cases/{case_id}", headers=doctor)
    assert page.status_code == 200
    assert 'id="volumes"' in page.text and 'id="viewer"' in page.text
    for new in ('id="seg-verdict"', 'id="seg-reason"', 'id="seg-trust"', 'id="uncertainty"',
                "Referred to a radiologist", "verdict"):
        assert new not in page.text, new
    row = worklist_row(client.get("/", headers=doctor).text, case_id)
    assert '<span class="status ai-read">ai-read</span>' in row
    with tctx.sessions() as db:
        case = repo.get_case(db, case_id)
        assert case is not None
        lines = report._ai_lines(case)
    assert not any(line.startswith("AI status") for line in lines), lines
    assert lines[0].startswith("AI segmentation, volumes (mL):")
