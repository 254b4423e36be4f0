"""Studies routed to MRIMaster by a real PACS: Orthanc (Debian's ``orthanc``) sends a simulated
study of a real BraTS case by DICOM C-STORE to the receiver, which stores it as the web app's
pull does (de-identified, its identifiers encrypted, segmentation queued); a study without
FLAIR is refused with its reason audited and nothing kept; a sender off the allow-list is
refused at association; the C-ECHO of Orthanc's own check is answered; `mrimaster pacs
listen` starts, answers a C-ECHO and refuses to start without the link key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests

from mrimaster.pacs.receiver import ReceivedStudy, Receiver, ReceiverConfig
from mrimaster.serving.context import AppContext
from mrimaster.serving.dicom_receive import RECEIVER_USER, receiver_user, store_received
from mrimaster.storage.pacs_tables import PacsLink
from mrimaster.storage.tables import AuditEvent, Case, Job, User
from tests.pacs.conftest import (  # noqa: F401 (fixtures)
    PATIENT_ID,
    orthanc_factory,
    simulated_study,
    study_uid_of,
)
from tests.pacs.test_receiver import settled
from tests.serving.conftest import serve_env
from tests.serving.server import free_port
from tests.serving.test_pacs_web import identifiers_in

pytestmark = [pytest.mark.realdata]


@dataclass
class Routed:
    ctx: AppContext
    receiver: Receiver
    stored: list[int | None]
    orthanc: Any
    fernet: Any


@pytest.fixture
def routed(ctx: AppContext, orthanc_factory: Any, simulated_study: Path,  # noqa: F811
           tmp_path: Path) -> Iterator[Routed]:
    """The app's receiver (allowing Orthanc's AE title) and an Orthanc holding the study,
    with the receiver registered as its DICOM modality ``mrimaster``."""
    from cryptography.fernet import Fernet

    fernet = Fernet(Fernet.generate_key())
    receiver_user(ctx)
    stored: list[int | None] = []

    def on_study(study: ReceivedStudy) -> None:
        stored.append(store_received(ctx, study, fernet))

    receiver = Receiver(ReceiverConfig(allow=("ORTHANC",), port=0, stable_s=0),
                        ctx.config.app_dir / "dicom-spool", on_study)
    host, port = receiver.start(hand_on=False)
    server = orthanc_factory()
    server.upload(simulated_study)
    server.rest("PUT", "/modalities/mrimaster", json={"AET": "MRIMASTER", "Host": host,
                                                      "Port": port})
    yield Routed(ctx, receiver, stored, server, fernet)
    receiver.stop()


def send(server: Any, resources: list[str]) -> requests.Response:
    """Orthanc's C-STORE of ``resources`` (Orthanc IDs) to the modality ``mrimaster``."""
    return requests.post(f"{server.root}/modalities/mrimaster/store", timeout=120,
                         json={"Resources": resources, "Synchronous": True})


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_routed_study_is_stored_deidentified_linked_and_queued(
        routed: Routed, simulated_study: Path) -> None:  # noqa: F811
    server, ctx = routed.orthanc, routed.ctx
    uid = study_uid_of(simulated_study)
    echo = requests.post(f"{server.root}/modalities/mrimaster/echo", data="{}", timeout=30)
    assert echo.status_code == 200, echo.text  # Orthanc's C-ECHO is answered
    r = send(server, [server.study_id(uid)])
    assert r.status_code == 200, r.text
    settled(routed.receiver)
    assert routed.receiver.hand_on() == 1
    [case_id] = routed.stored
    assert case_id is not None
    with ctx.sessions() as db:
        case = db.get(Case, case_id)
        assert case is not None and case.kind == "3d" and PATIENT_ID not in case.pseudonym
        creator = db.get(User, case.created_by)
        assert creator is not None and creator.username == RECEIVER_USER
        assert not creator.active  # nobody logs in as the receiver
        link = db.get(PacsLink, case_id)
        assert link is not None
        opened = json.loads(routed.fernet.decrypt(link.blob))
        assert (opened["patient_id"], opened["study_uid"]) == (PATIENT_ID, uid)
        assert db.query(Job).filter_by(case_id=case_id).one().state == "queued"
        event = db.query(AuditEvent).filter_by(action="dicom-receive").one()
        assert event.target == f"case {case_id}" and "from ORTHANC" in event.detail
        assert event.username == RECEIVER_USER
    # nothing identifying kept: not the files, the database, nor the spool
    assert not list(routed.receiver.spool.rglob("*.dcm"))
    db_file = Path(ctx.config.database_url.removeprefix("sqlite:///"))
    first = next(p for p in sorted(simulated_study.rglob("*")) if p.is_file())
    name = str(pydicom.dcmread(first, stop_before_pixels=True).PatientName)
    needles = [PATIENT_ID, uid, "ACC42"] + ([name] if len(name) > 3 else [])
    assert identifiers_in(ctx, db_file, needles) == []


PROBES = {"InstitutionName": "St Probe Hospital", "ReferringPhysicianName": "Dr^Probe^Referrer",
          "OtherPatientIDs": "PROBE-OTHER-77", "PatientAddress": "1 Probe Street",
          "StationName": "PROBESTATION"}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_identifying_values_at_any_depth_of_a_received_study_are_not_kept(
        routed: Routed, simulated_study: Path, tmp_path: Path) -> None:  # noqa: F811
    """Every file of the study carries identifying values at the top level and inside a
    nested sequence; after the study is stored none of them, nor its original date, is in the
    app folder or the database."""
    from pydicom.dataset import Dataset

    folder = tmp_path / "probe"
    folder.mkdir()
    files = []
    for k, path in enumerate(p for p in sorted(simulated_study.rglob("*")) if p.is_file()):
        ds = pydicom.dcmread(path)
        for keyword, value in PROBES.items():
            setattr(ds, keyword, value)
        item = Dataset()
        item.RequestedProcedureID = "PROBE-REQ-991"
        item.ScheduledProcedureStepID = "PROBE-SPS-5"
        item.RequestingPhysician = "Probe^Nested^Doctor"
        ds.RequestAttributesSequence = [item]
        files.append(folder / f"{k:05d}.dcm")
        ds.save_as(files[-1])
    date = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyDate)
    case_id = store_received(routed.ctx, ReceivedStudy(folder, files, ["SCANNER1"], 0),
                             routed.fernet)
    assert case_id is not None
    needles = [*PROBES.values(), "Probe^Referrer", "PROBE-REQ-991", "PROBE-SPS-5",
               "Probe^Nested", PATIENT_ID, date]
    db_file = Path(routed.ctx.config.database_url.removeprefix("sqlite:///"))
    assert len(date) == 8 and identifiers_in(routed.ctx, db_file, needles) == []


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_study_without_flair_is_refused_and_nothing_kept(
        routed: Routed, simulated_study: Path) -> None:  # noqa: F811
    server, ctx = routed.orthanc, routed.ctx
    uid = study_uid_of(simulated_study)
    series = server.rest("GET", f"/studies/{server.study_id(uid)}/series")
    others = [s["ID"] for s in series
              if "flair" not in s["MainDicomTags"].get("SeriesDescription", "").lower()]
    assert 0 < len(others) < len(series)
    r = send(server, others)
    assert r.status_code == 200, r.text
    settled(routed.receiver)
    assert routed.receiver.hand_on() == 1
    assert routed.stored == [None]
    with ctx.sessions() as db:
        assert db.query(Case).count() == 0 and db.query(PacsLink).count() == 0
        event = db.query(AuditEvent).filter_by(action="dicom-receive-refused").one()
        assert "FLAIR" in event.detail and "from ORTHANC" in event.detail, event.detail
        assert PATIENT_ID not in event.detail and uid not in event.detail
    assert not list(routed.receiver.spool.rglob("*.dcm"))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_sender_off_the_allow_list_or_misaddressing_is_refused(
        routed: Routed, simulated_study: Path, tmp_path: Path) -> None:  # noqa: F811
    server = routed.orthanc
    study = server.study_id(study_uid_of(simulated_study))
    closed = Receiver(ReceiverConfig(allow=("SCANNER1",), port=0, stable_s=0),
                      tmp_path / "closed", routed.stored.append)
    host, port = closed.start(hand_on=False)
    try:  # Orthanc calls as ORTHANC, which this receiver does not allow
        server.rest("PUT", "/modalities/mrimaster", json={"AET": "MRIMASTER", "Host": host,
                                                          "Port": port})
        assert send(server, [study]).status_code != 200
        settled(closed)
        assert closed.hand_on() == 0
    finally:
        closed.stop()
    host, port = routed.receiver._server.server_address[:2]
    server.rest("PUT", "/modalities/mrimaster", json={"AET": "OTHERNAME", "Host": host,
                                                      "Port": port})
    assert send(server, [study]).status_code != 200  # addressed by another AE title
    settled(routed.receiver)
    assert routed.receiver.hand_on() == 0 and routed.stored == []
    assert not list(tmp_path.rglob("*.dcm"))
    assert not list(routed.receiver.spool.rglob("*.dcm"))


def test_listen_command_answers_echo_and_needs_the_link_key(tmp_path: Path) -> None:
    from cryptography.fernet import Fernet
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    env = {**os.environ, **serve_env(tmp_path / "app", f"sqlite:///{tmp_path / 'app.db'}")}
    env.pop("MRIMASTER_LINK_KEY", None)
    cmd = [sys.executable, "-m", "mrimaster.cli.main", "pacs", "listen", "--allow", "SCANNER1"]
    refused = subprocess.run([*cmd, "--port", "0"], env=env, capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode != 0 and "MRIMASTER_LINK_KEY" in refused.stderr + refused.stdout
    assert "Traceback" not in refused.stderr
    port = free_port()
    env["MRIMASTER_LINK_KEY"] = Fernet.generate_key().decode()
    proc = subprocess.Popen([*cmd, "--port", str(port)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        line = ""
        while "DICOM receiver" not in line:  # a first start prints the admin account first
            line = proc.stdout.readline()
            assert line, "the receiver exited"
        assert f"on 127.0.0.1:{port}" in line and "SCANNER1" in line, line
        ae = AE(ae_title="SCANNER1")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", port, ae_title="MRIMASTER")
        assert assoc.is_established and assoc.send_c_echo().Status == 0
        assoc.release()
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.returncode == 0
