"""The DICOMweb client against a real Orthanc: search, retrieval with its instance count, basic
authentication, and the messages when the PACS is unreachable or refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom
import pytest

from mrimaster.cli.main import main
from mrimaster.pacs import Pacs, PacsConfig, PacsError, pacs_config
from mrimaster.pacs.client import dicom_date_range
from tests.pacs.conftest import PATIENT_ID, study_uid_of

pytestmark = [pytest.mark.realdata]


@pytest.fixture(scope="module")
def loaded(orthanc_factory: Any, simulated_study: Path) -> tuple[Any, int]:
    server = orthanc_factory()
    return server, server.upload(simulated_study)


def test_studies_lists_the_uploaded_study(loaded: tuple[Any, int], simulated_study: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    server, n = loaded
    uid = study_uid_of(simulated_study)
    assert main(["pacs", "studies", "--dicomweb", server.dicomweb, "--patient", PATIENT_ID]) == 0
    out = capsys.readouterr().out
    assert uid in out and PATIENT_ID in out and "ACC42" in out
    pacs = Pacs(pacs_config({"MRIMASTER_DICOMWEB_URL": server.dicomweb}))
    [found] = pacs.search_studies(patient_id=PATIENT_ID)
    assert (found.study_uid, found.n_instances, found.accession) == (uid, n, "ACC42")
    assert pacs.search_studies(date_range="2024-01-01..2024-01-31", accession="ACC42")
    assert pacs.search_studies(patient_id="NOBODY") == []
    assert pacs.search_studies(date_range="20250101-") == []  # the study is of 2024-01-15


def test_retrieve_writes_every_instance(loaded: tuple[Any, int], simulated_study: Path,
                                        tmp_path: Path) -> None:
    server, n = loaded
    pacs = Pacs(PacsConfig(server.dicomweb))
    files = pacs.retrieve_study(study_uid_of(simulated_study), tmp_path)
    assert len(files) == n
    sent = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
            for p in simulated_study.rglob("*") if p.is_file()}
    assert {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
            for p in files} == sent


def test_incomplete_transfer_is_an_error(loaded: tuple[Any, int], simulated_study: Path,
                                         tmp_path: Path) -> None:
    """Fewer instances arrive than QIDO's NumberOfStudyRelatedInstances: an error, not a
    smaller study (the transfer is cut short after all but one instance)."""
    server, n = loaded
    pacs = Pacs(PacsConfig(server.dicomweb))
    real = pacs._client.iter_study
    pacs._client.iter_study = lambda *a, **k: list(real(*a, **k))[:-1]  # type: ignore
    with pytest.raises(PacsError, match=f"lists {n} instances but sent {n - 1}"):
        pacs.retrieve_study(study_uid_of(simulated_study), tmp_path)


def test_unknown_study_and_unreachable_pacs(loaded: tuple[Any, int], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    server, _ = loaded
    with pytest.raises(PacsError, match="no study 1.2.3.4 on the PACS") as err:
        Pacs(PacsConfig(server.dicomweb)).retrieve_study("1.2.3.4", tmp_path)
    assert err.value.status == 404
    dead = PacsConfig("http://127.0.0.1:9/dicom-web", retries=1, backoff_s=0.01)
    with pytest.raises(PacsError, match="cannot reach the PACS at http://127.0.0.1:9"):
        Pacs(dead).search_studies()
    assert main(["pacs", "studies", "--dicomweb", "http://127.0.0.1:9/dicom-web"]) == 2
    msg = capsys.readouterr().err
    assert "cannot reach the PACS" in msg and "hint:" in msg and "Traceback" not in msg
    with pytest.raises(PacsError, match="no PACS configured"):
        pacs_config({})
    with pytest.raises(PacsError, match="bad date"):
        dicom_date_range("last week")
    assert dicom_date_range("2024-01-01..") == "20240101-"


def test_basic_auth(orthanc_factory: Any, capsys: pytest.CaptureFixture[str]) -> None:
    server = orthanc_factory(users={"doctor": "s3cret-pw"})
    env = {"MRIMASTER_DICOMWEB_URL": server.dicomweb, "MRIMASTER_DICOMWEB_USER": "doctor",
           "MRIMASTER_DICOMWEB_PASSWORD": "s3cret-pw"}
    assert pacs_config(env).auth == "basic"
    assert Pacs(pacs_config(env)).search_studies() == []
    wrong = pacs_config({**env, "MRIMASTER_DICOMWEB_PASSWORD": "nope"})
    with pytest.raises(PacsError, match="refused the credentials") as err:
        Pacs(wrong).search_studies()
    assert err.value.status == 401 and "MRIMASTER_DICOMWEB_PASSWORD" in str(err.value)
    assert "nope" not in repr(wrong)  # secrets stay out of logs
    with pytest.raises(PacsError, match="refused the credentials"):
        Pacs(PacsConfig(server.dicomweb)).search_studies()  # none given
    with pytest.raises(PacsError, match="both a user and a password"):
        pacs_config({**env, "MRIMASTER_DICOMWEB_PASSWORD": ""})
