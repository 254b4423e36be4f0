"""The web app's PACS view against a real Orthanc: search, pull (stored de-identified, the link
encrypted), segmentation, a doctor's approval and the send of the SEG + SR into the original
study; the PACS stopped (clear message, nothing recorded as sent, the case unchanged) and back
(the retry sends the same instances); no original identifier in the store, the database or
an export; no route but the approval one ever stores to a PACS."""

from __future__ import annotations

import io
import sqlite3
import zipfile
from pathlib import Path
from typing import Any

import pydicom
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from mrimaster.pacs import Pacs, StoreResult
from mrimaster.serving.app import create_app
from mrimaster.serving.context import AppContext
from mrimaster.serving.jobs import JobRunner
from mrimaster.storage.pacs_tables import PacsLink, PacsSend
from mrimaster.storage.tables import AuditEvent, Case
from tests.pacs.conftest import (  # noqa: F401 (fixtures)
    PATIENT_ID,
    orthanc_factory,
    simulated_study,
    study_uid_of,
)
from tests.serving.conftest import ADMIN_PASSWORD, DOCTOR_PASSWORD, bearer

APPROVAL_ROUTES = {"/cases/{case_id}/send", "/api/pacs/cases/{case_id}/send"}


@pytest.fixture
def pacs_client(ctx: AppContext, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    from cryptography.fernet import Fernet

    monkeypatch.setenv("MRIMASTER_LINK_KEY", Fernet.generate_key().decode())
    monkeypatch.setenv("MRIMASTER_DICOMWEB_RETRIES", "0")
    monkeypatch.setenv("MRIMASTER_DICOMWEB_TIMEOUT", "20")
    return TestClient(create_app(ctx))


def orthanc_results(server: Any, study_uid: str) -> dict[str, list[pydicom.Dataset]]:
    """The SEG and SR instances of the study in Orthanc, per modality (headers)."""
    out: dict[str, list[pydicom.Dataset]] = {}
    study = server.study_id(study_uid)
    for series in server.rest("GET", f"/studies/{study}/series"):
        modality = series["MainDicomTags"]["Modality"]
        if modality in ("SEG", "SR"):
            for instance in series["Instances"]:
                import requests

                r = requests.get(f"{server.root}/instances/{instance}/file", timeout=30)
                r.raise_for_status()
                out.setdefault(modality, []).append(pydicom.dcmread(io.BytesIO(r.content)))
    return out


def api_routes(routes: list[Any], prefix: str = "") -> list[tuple[str, APIRoute]]:
    """Every API route of an app, with its full path (FastAPI keeps included routers as
    branches)."""
    out: list[tuple[str, APIRoute]] = []
    for route in routes:
        if hasattr(route, "original_router"):
            out += api_routes(route.original_router.routes,
                              prefix + (getattr(route.include_context, "prefix", "") or ""))
        elif isinstance(route, APIRoute):
            out.append((prefix + route.path, route))
    return out


def identifiers_in(ctx: AppContext, db_file: Path, needles: list[str]) -> list[str]:
    """Where any of ``needles`` occurs: files under the app folder, the database's dump."""
    found = []
    for path in [*ctx.config.app_dir.rglob("*"), db_file]:
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path.name}: {n}" for n in needles if n.encode() in data]
    dump = "\n".join(sqlite3.connect(db_file).iterdump())
    found += [f"dump: {n}" for n in needles if n in dump]
    return found


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_pull_approve_send_retry_and_no_identifier_kept(
        pacs_client: TestClient, ctx: AppContext, orthanc_factory: Any,  # noqa: F811
        simulated_study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    client = pacs_client
    server = orthanc_factory()
    server.upload(simulated_study)
    uid = study_uid_of(simulated_study)
    monkeypatch.setenv("MRIMASTER_DICOMWEB_URL", server.dicomweb)
    doctor = bearer(client, "doctor", DOCTOR_PASSWORD)

    # search: the API and the page
    r = client.post("/api/pacs/search", headers=doctor, json={"patient_id": PATIENT_ID})
    assert r.status_code == 200, r.text
    [study] = r.json()
    assert study["study_uid"] == uid and study["accession"] == "ACC42"
    page = client.post("/pacs", headers=doctor, data={"patient_id": PATIENT_ID})
    assert page.status_code == 200 and uid in page.text and 'action="/pacs/pull"' in page.text
    needles = [PATIENT_ID, uid, "ACC42"] + ([study["patient_name"]]
                                            if len(study["patient_name"]) > 3 else [])

    # pull: a de-identified case, its link encrypted
    r = client.post("/api/pacs/pull", headers=doctor, json={"study_uid": uid})
    assert r.status_code == 200, r.text
    case_id = r.json()["id"]
    with ctx.sessions() as db:
        link = db.get(PacsLink, case_id)
        assert link is not None and PATIENT_ID.encode() not in link.blob
        assert db.query(AuditEvent).filter_by(action="pacs-pull").one().target == \
            f"case {case_id}"
    r = client.get(f"/api/pacs/cases/{case_id}", headers=doctor)
    assert r.json()["ready"] == "the segmentation is still running"
    r = client.post(f"/api/pacs/cases/{case_id}/send", headers=doctor)
    assert r.status_code == 409 and "still running" in r.json()["error"], r.text

    assert JobRunner(ctx).run_pending() == 1
    before = client.get(f"/api/cases/{case_id}", headers=doctor).json()
    assert before["status"] in ("ai-read", "referred"), before
    panel = client.get(f"/api/pacs/cases/{case_id}", headers=doctor).json()
    assert panel["ready"] is None and panel["sends"] == []

    # the PACS is down: a clear message and a Retry, nothing recorded as sent, case unchanged
    server.stop()
    r = client.post(f"/cases/{case_id}/send", headers=doctor, data={"approve": "true"})
    assert r.status_code == 502, r.text
    assert "cannot reach the PACS" in r.text and 'id="pacs-error"' in r.text
    assert ">Retry</button>" in r.text
    assert client.get(f"/api/cases/{case_id}", headers=doctor).json() == before
    with ctx.sessions() as db:
        [failed] = db.query(PacsSend).filter_by(case_id=case_id).all()
        assert failed.state == "failed" and failed.by == "doctor"
        assert uid not in failed.detail
    # not approved: refused before anything
    server.start()
    r = client.post(f"/cases/{case_id}/send", headers=doctor, data={})
    assert r.status_code == 422 and "approval" in r.text
    assert orthanc_results(server, uid) == {}

    # back: the retry files the SEG and the SR into the original study
    r = client.post(f"/cases/{case_id}/send", headers=doctor, data={"approve": "true"},
                    follow_redirects=False)
    assert r.status_code == 303, r.text
    sent = orthanc_results(server, uid)
    assert set(sent) == {"SEG", "SR"} and all(len(v) == 1 for v in sent.values())
    for ds in (sent["SEG"][0], sent["SR"][0]):
        assert ds.PatientID == PATIENT_ID and ds.StudyInstanceUID == uid
        assert ds.AccessionNumber == "ACC42"
    referenced = sent["SEG"][0].ReferencedSeriesSequence[0].SeriesInstanceUID
    assert any(referenced == s["MainDicomTags"]["SeriesInstanceUID"]
               for s in server.rest("GET", f"/studies/{server.study_id(uid)}/series"))
    from mrimaster.pacs.results import read_volume_report

    sr_file = tmp_path / "sr.dcm"
    sent["SR"][0].save_as(sr_file)
    volumes = read_volume_report(sr_file)
    assert volumes["WT"] == pytest.approx(before["result"]["volumes_ml"]["WT"], rel=1e-6)
    # sending again re-sends the same instances: still one SEG and one SR
    r = client.post(f"/api/pacs/cases/{case_id}/send", headers=doctor)
    assert r.status_code == 200 and r.json()["state"] == "ok", r.text
    again = orthanc_results(server, uid)
    assert {m: [d.SOPInstanceUID for d in v] for m, v in again.items()} == \
        {m: [d.SOPInstanceUID for d in v] for m, v in sent.items()}
    # a PACS that refuses one of the two: recorded failed, with which one and why
    def refuse_sr(self: Pacs, instances: Any) -> StoreResult:
        return StoreResult(stored=[str(instances[0].SOPInstanceUID)],
                           failed={str(instances[1].SOPInstanceUID): "failure reason 272"})

    with monkeypatch.context() as m:
        m.setattr(Pacs, "store", refuse_sr)
        r = client.post(f"/api/pacs/cases/{case_id}/send", headers=doctor)
    assert r.status_code == 502 and "refused part" in r.json()["error"], r.text
    assert "SR: failure reason 272" in r.json()["error"]
    panel = client.get(f"/api/pacs/cases/{case_id}", headers=doctor).json()
    assert [s["state"] for s in panel["sends"]] == ["failed", "ok", "ok", "failed"]
    assert client.get(f"/api/cases/{case_id}", headers=doctor).json() == before
    with ctx.sessions() as db:
        reads = db.query(AuditEvent).filter_by(action="pacs-link-read").all()
        assert len(reads) == 4 and {e.username for e in reads} == {"doctor"}
        assert db.query(AuditEvent).filter_by(action="pacs-send").count() == 4

    # exports and the case's own files carry no original identifier
    client.post(f"/api/cases/{case_id}/review", headers=doctor,
                json={"agrees": True, "mask_ok": True})
    export = client.get("/api/export/reviewed.zip", headers=doctor)
    assert export.status_code == 200
    with zipfile.ZipFile(io.BytesIO(export.content)) as zf:
        blob = b"".join(zf.read(n) for n in zf.namelist())
    shown = client.get(f"/api/cases/{case_id}", headers=doctor).json()
    for url in shown["files"].values():
        blob += client.get(url, headers=doctor).content
    assert not [n for n in needles if n.encode() in blob + str(shown).encode()]
    db_file = Path(str(ctx.engine.url.database))
    assert identifiers_in(ctx, db_file, needles) == []

    # no route but the approval routes ever stores to a PACS
    calls: list[str] = []
    current = [""]

    def fake_store(self: Pacs, instances: Any) -> StoreResult:
        calls.append(current[0])
        return StoreResult(stored=[str(d.SOPInstanceUID) for d in instances])

    monkeypatch.setattr(Pacs, "store", fake_store)
    app = client.app
    assert isinstance(app, FastAPI)
    form = {"csrf": "", "approve": "true", "study_uid": uid, "patient_id": PATIENT_ID,
            "decision": "confirm", "mask": "good", "username": "walker",
            "password": "walker-password-1", "role": "radiologist"}
    body = {"study_uid": uid, "patient_id": PATIENT_ID, "agrees": True, "roles": {},
            "username": "walker", "password": "walker-password-1"}
    changes = {"POST", "PUT", "PATCH", "DELETE"}
    walked = [(p, r) for p, r in api_routes(list(app.routes)) if (r.methods or set()) & changes]
    assert {p for p, _ in walked} >= APPROVAL_ROUTES and len(walked) > 20
    admin = bearer(client, "admin", ADMIN_PASSWORD)
    for template, route in walked:
        path = (template.replace("{case_id}", str(case_id)).replace("{name}", "walker")
                .replace("{action}", "deactivate"))
        for method in (route.methods or set()) & changes:
            for kind in ("form", "json"):
                current[0] = template
                if client.get("/api/me", headers=admin).status_code != 200:  # logged out
                    admin = bearer(client, "admin", ADMIN_PASSWORD)
                kw: dict[str, Any] = {"data": form} if kind == "form" else {"json": body}
                client.request(method, path, headers=admin, **kw)
    assert set(calls) == APPROVAL_ROUTES, calls
    with ctx.sessions() as db:
        assert db.get(Case, case_id) is not None


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_unconfigured_or_unreachable_pacs_is_refused_clearly_and_stores_nothing(
        pacs_client: TestClient, ctx: AppContext, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    client = pacs_client
    doctor = bearer(client, "doctor", DOCTOR_PASSWORD)
    page = client.get("/pacs", headers=doctor)
    assert page.status_code == 200 and 'action="/pacs"' in page.text
    assert 'href="/pacs"' in page.text  # the nav link
    monkeypatch.delenv("MRIMASTER_DICOMWEB_URL", raising=False)
    r = client.post("/api/pacs/search", headers=doctor, json={"patient_id": PATIENT_ID})
    assert r.status_code == 503 and "no PACS configured" in r.json()["error"], r.text
    assert "MRIMASTER_DICOMWEB_URL" in r.json()["hint"]
    r = client.post("/api/pacs/search", headers=doctor, json={})
    assert r.status_code in (422, 503), r.text

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MRIMASTER_DICOMWEB_URL", f"http://127.0.0.1:{port}/dicom-web")
    r = client.post("/pacs", headers=doctor, data={"patient_id": PATIENT_ID})
    assert r.status_code == 502 and "cannot reach the PACS" in r.text and ">Retry<" in r.text
    r = client.post("/pacs/pull", headers=doctor, data={"study_uid": "1.2.3.4"})
    assert r.status_code == 502 and 'id="pull-retry-button"' in r.text, r.text
    with socket.socket() as slow:  # a PACS that accepts the connection and never answers
        slow.bind(("127.0.0.1", 0))
        slow.listen(8)
        monkeypatch.setenv("MRIMASTER_DICOMWEB_URL",
                           f"http://127.0.0.1:{slow.getsockname()[1]}/dicom-web")
        monkeypatch.setenv("MRIMASTER_DICOMWEB_TIMEOUT", "1")
        r = client.post("/api/pacs/pull", headers=doctor, json={"study_uid": "1.2.3.4"})
    assert r.status_code == 504 and "did not answer within 1 s" in r.json()["error"], r.text
    monkeypatch.delenv("MRIMASTER_LINK_KEY")
    r = client.post("/api/pacs/pull", headers=doctor, json={"study_uid": "1.2.3.4"})
    assert r.status_code == 503 and "no link key" in r.json()["error"], r.text
    monkeypatch.setenv("MRIMASTER_LINK_KEY", "not-a-key")
    r = client.post("/api/pacs/pull", headers=doctor, json={"study_uid": "1.2.3.4"})
    assert r.status_code == 503 and "not a Fernet key" in r.json()["error"], r.text
    with ctx.sessions() as db:
        assert db.query(Case).count() == 0 and db.query(PacsLink).count() == 0
        assert db.query(AuditEvent).filter_by(action="pacs-pull").count() == 0
    # a case not pulled from the PACS cannot be sent
    r = client.post("/api/pacs/cases/1/send", headers=doctor)
    assert r.status_code == 404, r.text
