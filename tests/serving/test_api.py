"""The JSON API end to end on SQLite and on PostgreSQL: upload a real slice, read the AI read
and its evidence, review, export, report."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from mrimaster.serving.context import AppContext
from mrimaster.storage import repository as repo


def real_slice(data_root: Path, folder: str = "glioma_tumor", index: int = 0) -> Path:
    return sorted((data_root / "sartaj-training" / folder).iterdir())[index]


def upload(client: TestClient, headers: dict[str, str], path: Path, patient: str = ""
           ) -> dict:
    with open(path, "rb") as f:
        r = client.post("/api/cases/2d", files={"file": (path.name, f, "image/jpeg")},
                        data={"patient": patient}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def test_upload_read_review_export(client: TestClient, doctor: dict[str, str],
                                   ctx: AppContext, data_root: Path) -> None:
    case = upload(client, doctor, real_slice(data_root), patient="Jane Example 1970")
    r = case["result"]
    assert case["kind"] == "2d" and case["status"] in ("ai-read", "referred")
    assert r["status"] in ("ok", "refer")
    assert abs(sum(r["probabilities"].values()) - 1) < 1e-6
    assert set(r["probabilities"]) == set(ctx.models.classifier.classes)  # type: ignore[union-attr]
    assert 0 <= r["uncertainty"] < 1 and r["label"] == max(r["probabilities"],
                                                           key=r["probabilities"].get)
    # the typed reference is not stored, only its pseudonym, which is stable
    assert "Jane" not in str(case) and case["pseudonym"].startswith("P-")
    again = upload(client, doctor, real_slice(data_root, index=1), patient="jane example 1970")
    assert again["pseudonym"] == case["pseudonym"]
    # the heatmaps lie on the original image's grid, one per selectable layer: the upload
    # stored the default (last) layer's, the others are made when first asked for (at the
    # file's URL), then kept and listed with the case's files
    original = Image.open(io.BytesIO(client.get(case["files"]["image"], headers=doctor).content))
    assert len(r["layers"]) >= 3
    cams = [f"cam/{layer['name']}" for layer in r["layers"]]

    def stored() -> list[str]:
        with ctx.sessions() as db:
            row = repo.get_case(db, case["id"])
            assert row is not None
            return sorted(k for k in row.files if k.startswith("cam/"))

    assert stored() == cams[-1:] and [k for k in case["files"] if k.startswith("cam/")] == \
        cams[-1:]
    pngs = []
    for role in cams:
        png = client.get(f"/api/cases/{case['id']}/files/{role}", headers=doctor)
        assert png.status_code == 200
        cam = Image.open(io.BytesIO(png.content))
        assert cam.mode == "RGBA" and cam.size == original.size
        assert np.asarray(cam)[..., 3].max() > 0
        pngs.append(png.content)
    assert stored() == sorted(cams) and len(set(pngs)) == len(cams)
    listed = client.get(f"/api/cases/{case['id']}", headers=doctor).json()["files"]
    assert sorted(k for k in listed if k.startswith("cam/")) == sorted(cams)
    again = client.get(listed[cams[0]], headers=doctor)  # kept: the same bytes
    assert again.content == pngs[0]
    missing = client.get(f"/api/cases/{case['id']}/files/cam/no.such.layer", headers=doctor)
    assert missing.status_code == 404 and "has no file" in missing.text
    # a case read by another model gets no new map from the one loaded now
    other = upload(client, doctor, real_slice(data_root, index=2))
    with ctx.sessions() as db:
        row = repo.get_case(db, other["id"])
        assert row is not None
        row.model = "another@model"
        db.commit()
    refused = client.get(f"/api/cases/{other['id']}/files/{cams[0]}", headers=doctor)
    assert refused.status_code == 404
    # the doctor corrects it: reviewed, in the worklist filter, in the export under the new class
    wrong = next(c for c in ctx.models.classifier.classes  # type: ignore[union-attr]
                 if c != r["label"])
    # a confirmation naming another class, a mask verdict on a slice, "yes" for true: refused
    for body in ({"agrees": True, "label": wrong}, {"agrees": False, "label": wrong,
                                                    "mask_ok": True},
                 {"agrees": "yes"}):
        bad = client.post(f"/api/cases/{case['id']}/review", headers=doctor, json=body)
        assert bad.status_code == 422, (body, bad.text)
    assert client.get(f"/api/cases/{case['id']}", headers=doctor).json()["reviews"] == []
    rv = client.post(f"/api/cases/{case['id']}/review", headers=doctor,
                     json={"agrees": False, "label": wrong, "comment": "see the T1-Gd\x00"})
    assert rv.status_code == 200 and rv.json()["status"] == "reviewed"
    assert rv.json()["reviews"][0]["label"] == wrong
    listed = client.get("/api/cases", params={"status": "reviewed"}, headers=doctor).json()
    assert [c["id"] for c in listed["cases"]] == [case["id"]]
    assert client.get("/api/cases", params={"q": case["pseudonym"].lower()},
                      headers=doctor).json()["total"] == 2
    export = client.get("/api/export/reviewed.zip", headers=doctor)
    names = zipfile.ZipFile(io.BytesIO(export.content)).namelist()
    assert f"{wrong}/case-{case['id']}.png" in names and "decisions.csv" in names
    import csv

    with zipfile.ZipFile(io.BytesIO(export.content)) as zf:
        (row,) = [r for r in csv.DictReader(io.StringIO(zf.read("decisions.csv").decode()))
                  if r["case"] == str(case["id"])]
    assert row["ai_status"] == case["result"]["status"] and row["reviews"] == "1"
    assert row["comment"] == "see the T1-Gd"  # the NUL sent with it is not stored
    assert row["label"] == wrong and row["corrected"] == "true"
    pdf = client.get(f"/api/cases/{case['id']}/report.pdf", headers=doctor)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    # every action is in the audit log
    with ctx.sessions() as db:
        actions = {e.action for e in repo.audit_events(db)}
    assert {"login", "upload-2d", "review", "export-reviewed", "report"} <= actions


def test_not_a_brain_slice_is_rejected_without_a_class_or_heatmap(
        client: TestClient, doctor: dict[str, str], tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    photo = tmp_path / "holiday.png"
    Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(photo)
    case = upload(client, doctor, photo)
    assert case["result"]["status"] == "reject" and case["status"] == "referred"
    assert case["result"]["label"] is None and case["result"]["layers"] == []
    assert not any(k.startswith("cam/") for k in case["files"])
    # a rejected case has no class to confirm: the doctor must choose one
    r = client.post(f"/api/cases/{case['id']}/review", headers=doctor, json={"agrees": True})
    assert r.status_code == 422


def test_dicom_upload_is_deidentified(client: TestClient, doctor: dict[str, str],
                                      data_root: Path, tmp_path: Path) -> None:
    from tests.serving.test_deid import identified_dicom

    path = identified_dicom(tmp_path / "slice.dcm", np.asarray(
        Image.open(real_slice(data_root, "meningioma_tumor")).convert("L")))
    case = upload(client, doctor, path)
    stored = client.get(case["files"]["dicom"], headers=doctor).content
    for secret in (b"Doe^John", b"PID-12345", b"19700101", b"General Hospital", b"Dr^Who"):
        assert secret not in stored
    assert case["pseudonym"].startswith("P-")


def test_the_uploads_heatmap_comes_from_the_served_graph_without_pytorch(
        client: TestClient, doctor: dict[str, str], ctx: AppContext, data_root: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The served runtime is an exported graph: the default layer's map (CAM) comes from that
    graph's pass (explain.forward_cam.graph_cam), so PyTorch's forward is not run for it."""
    from mrimaster.explain.forward_cam import ForwardCAM

    runtime = ctx.models.classifier.model.runtime  # type: ignore[union-attr]
    assert runtime.name != "torch"

    def no_pytorch(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the default heatmap ran PyTorch's forward pass")

    monkeypatch.setattr(ForwardCAM, "__call__", no_pytorch)
    case = upload(client, doctor, real_slice(data_root, "meningioma_tumor", 3))
    roles = [k for k in case["files"] if k.startswith("cam/")]
    assert len(roles) == 1
    png = client.get(case["files"][roles[0]], headers=doctor)
    cam = np.asarray(Image.open(io.BytesIO(png.content)))
    assert cam.shape[-1] == 4 and cam[..., 3].max() > 0


def test_a_browser_gets_error_pages_and_the_api_json(client: TestClient,
                                                    doctor: dict[str, str]) -> None:
    """A person opening a missing case or page gets a page saying so (it got raw JSON); an
    API client, or anything not asking for HTML, keeps the JSON."""
    html = {**doctor, "accept": "text/html,application/xhtml+xml"}
    r = client.get("/cases/999999", headers=html)
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert "Not found" in r.text and "there is no case 999999" in r.text
    assert 'href="/"' in r.text
    r = client.get("/no-such-page", headers=html)
    assert r.status_code == 404 and "there is no such page" in r.text
    assert client.get("/cases/999999", headers=doctor).json()["error"]
    assert client.get("/api/cases/999999", headers=html).json()["error"]
    assert client.get("/api/no-such-endpoint", headers=html).json() == {"detail": "Not Found"}
