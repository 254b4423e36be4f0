"""``mrimaster pacs segment`` against a real Orthanc with the shipped model on a real BraTS case
(simulated as a scanner's DICOM study): the SEG and SR filed in the source study, a dry run,
Orthanc stopped before the store then ``pacs send``, and a study with a missing instance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest

import mrimaster.segmentation.study as study_module
from mrimaster.cli.main import main
from mrimaster.imaging.dicom_seg import read_dicom_seg
from mrimaster.pacs import Pacs, PacsConfig
from mrimaster.pacs.results import read_volume_report
from tests.pacs.conftest import PATIENT_ID, study_uid_of

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def test_segment_stop_before_store_send_then_round_trip(
        orthanc_factory: Any, simulated_study: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    server = orthanc_factory()
    n = server.upload(simulated_study)
    uid = study_uid_of(simulated_study)
    real = study_module.segment_study

    def then_stop(*args: Any, **kw: Any) -> Any:  # Orthanc goes down after the segmentation
        out = real(*args, **kw)
        server.stop()
        return out

    monkeypatch.setattr(study_module, "segment_study", then_stop)
    monkeypatch.setenv("MRIMASTER_DICOMWEB_URL", server.dicomweb)
    monkeypatch.setenv("MRIMASTER_DICOMWEB_RETRIES", "0")
    out = tmp_path / "run"
    assert main(["pacs", "segment", "--study", uid, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the PACS" in err and "nothing sent of seg.dcm, sr.dcm" in err
    assert f"mrimaster pacs send {out}" in err and "Traceback" not in err
    files = {p.name: str(pydicom.dcmread(p).SOPInstanceUID) for p in (out / "pacs").glob("*.dcm")}
    assert sorted(files) == ["seg.dcm", "sr.dcm"]
    assert json.loads((out / "pacs" / "sent.json").read_text())[-1]["stored"] == []

    server.start()  # same storage: nothing half-stored
    assert server.modalities(uid) == {"MR": n}
    assert main(["pacs", "send", str(out)]) == 0
    assert main(["pacs", "send", str(out)]) == 0  # the same UIDs again: no duplicates
    assert server.modalities(uid) == {"MR": n, "SEG": 1, "SR": 1}

    # what Orthanc holds, read back over DICOMweb
    got = Pacs(PacsConfig(server.dicomweb)).retrieve_study(uid, tmp_path / "back")
    by_modality: dict[str, list[Path]] = {}
    headers = {p: pydicom.dcmread(p, stop_before_pixels=True) for p in got}
    for p, ds in headers.items():
        by_modality.setdefault(str(ds.Modality), []).append(p)
    [seg_file], [sr_file] = by_modality["SEG"], by_modality["SR"]
    seg, sr = headers[seg_file], headers[sr_file]
    assert str(seg.SOPInstanceUID) == files["seg.dcm"] and str(sr.SOPInstanceUID) == files["sr.dcm"]
    for ds in (seg, sr):
        assert (str(ds.StudyInstanceUID), str(ds.PatientID)) == (uid, PATIENT_ID)
        assert str(ds.PatientName) == "SIMULATED^PATIENT"
    mr_series = {str(ds.SeriesInstanceUID) for ds in headers.values() if ds.Modality == "MR"}
    [ref] = seg.ReferencedSeriesSequence
    assert str(ref.SeriesInstanceUID) in mr_series
    source = sorted(p for p, ds in headers.items()
                    if str(ds.SeriesInstanceUID) == str(ref.SeriesInstanceUID))
    labels = nib.load(str(out / "seg.nii.gz"))
    back = read_dicom_seg(seg_file, labels, source)
    assert np.array_equal(back, np.asarray(labels.dataobj).astype(np.uint8))
    assert back.any()
    evidence = {str(s.SeriesInstanceUID) for e in sr.CurrentRequestedProcedureEvidenceSequence
                for s in e.ReferencedSeriesSequence}
    assert {str(ref.SeriesInstanceUID), str(seg.SeriesInstanceUID)} <= evidence

    volumes = json.loads((out / "volumes.json").read_text())["volumes_ml"]
    reported = read_volume_report(sr_file)
    assert set(reported) == {k for k, v in volumes.items() if v is not None} == {"WT", "TC", "ET"}
    for region, ml in reported.items():
        assert ml == pytest.approx(volumes[region], abs=1e-9)


def test_dry_run_stores_nothing(orthanc_factory: Any, simulated_study: Path,
                                tmp_path: Path) -> None:
    server = orthanc_factory()
    n = server.upload(simulated_study)
    uid = study_uid_of(simulated_study)
    out = tmp_path / "dry"
    assert main(["pacs", "segment", "--dicomweb", server.dicomweb, "--study", uid, "--out",
                 str(out), "--dry-run"]) == 0
    assert sorted(p.name for p in (out / "pacs").iterdir()) == ["seg.dcm", "sr.dcm"]
    assert server.modalities(uid) == {"MR": n}


def test_study_with_a_missing_instance(orthanc_factory: Any, simulated_study: Path,
                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    """One FLAIR slice deleted in the PACS. Orthanc's QIDO count follows the deletion, so the
    retrieval's count check passes (it catches transfers cut short, test_client.py); the gap
    is caught by the importer, which names the series, and nothing is stored."""
    server = orthanc_factory()
    n = server.upload(simulated_study)
    uid = study_uid_of(simulated_study)
    flair = next(s for s in server.rest("GET", f"/studies/{server.study_id(uid)}/series")
                 if s["MainDicomTags"].get("SeriesDescription") == "AX FLAIR")
    instances = server.rest("GET", f"/series/{flair['ID']}/instances")
    middle = sorted(instances, key=lambda i: int(i["MainDicomTags"]["InstanceNumber"]))[
        len(instances) // 2]
    server.rest("DELETE", f"/instances/{middle['ID']}")
    [found] = Pacs(PacsConfig(server.dicomweb)).search_studies(patient_id=PATIENT_ID)
    assert found.n_instances == n - 1  # the PACS counts what it still has
    code = main(["pacs", "segment", "--dicomweb", server.dicomweb, "--study", uid, "--out",
                 str(tmp_path / "gap")])
    err = capsys.readouterr().err
    assert code == 2, err
    # the damaged FLAIR is named with why (not "the study has no FLAIR series")
    assert "the FLAIR series 'AX FLAIR' (series 3) cannot be used" in err, err
    assert "not evenly spaced" in err and "Traceback" not in err
    assert server.modalities(uid) == {"MR": n - 1}
    assert not (tmp_path / "gap" / "pacs").exists()
    # why the FLAIR was not used: the importer's own record names the missing slices
    Pacs(PacsConfig(server.dicomweb)).retrieve_study(uid, tmp_path / "got")
    assert main(["dicom", "import", str(tmp_path / "got"), "--out", str(tmp_path / "nii")]) == 0
    series = json.loads((tmp_path / "nii" / "series.json").read_text())
    text = json.dumps([s for s in series if s.get("description") == "AX FLAIR"])
    assert "not evenly spaced" in text and "missing slices" in text, text
