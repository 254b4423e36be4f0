"""Follow-up of a patient: two time points of a real brats-mini case, the second with its
tumour grown by a known volume, uploaded as one patient; the patient page shows the change,
the later study registered onto the earlier.

Issue 22 asks for the change within 10% of the known one. Between the two studies' own reads
it does not hold (the table below): the shipped model reads 15% less growth than the
transformed label (the 16-epoch models before it: 20% less). The change read "on one scale"
(the later study read again with its normal-appearing brain z-scored onto the earlier study's
scale: mrimaster.segmentation.longitudinal, 2026-12-07) reads 42.7 of 45.4 mL, -5.8%, and the
test asserts the 10% on it. The same pair shrunk (x0.87, known -41.0 mL; a one-off run of a
temporary copy of this test, not asserted anywhere) is not within 10% either way: -35.0 mL
own reads, -35.6 mL on one scale (-13.1%). The test also asserts that
the page's own change is the difference of the two studies' segmented volumes, with the right
direction and at least half the known size (guarding against a follow-up that registers or
pairs the wrong studies), that the registration undoes the head's movement, and that the
masks are shown at the same position.

How the growth is simulated (:func:`grow_tumour`): a smooth radial deformation about the
centre of the reference label's whole tumour (``OTMultiClass`` > 0) scales the tumour by
:data:`GROWTH` in each direction and pushes the tissue around it outwards (mass effect), tapering
to no movement 50 voxels beyond the tumour; FLAIR and T1-Gd are resampled through it linearly,
the reference label nearest-neighbour. The known change is the difference of the two reference
labels' whole-tumour voxel counts times the voxel volume. Each time point's world
coordinates are moved (a translation and a small rotation in its affine, voxels untouched):
the head lies differently at each session, and the follow-up registration undoes it.

The case: the BraTS 2015 case (FLAIR + T1-Gd + ``OTMultiClass``) whose unchanged volume the
model shipped then (16 epochs) read closest to its label, measured with ``mrimaster seg
predict`` (model vs label WT: pat0001 126.4 vs 111.7 mL +13%, pat0002 +11%, pat0003 -9%,
pat0004 111.8 vs 120.7 mL -7.4%, pat0005 -38%, pat0006 -26%; BraTS 2018 case_0 +29%, case_1
-6% but T1 only).

Variants measured (WT change, mL, known from the transformed label vs the model's, by
``seg predict`` on the two time points):

=================================================  ==========  ========  =======
variant                                            known       measured  error
=================================================  ==========  ========  =======
pat0001, x1.15, taper 50 (earlier engineer)        +48.9       +27.7     -43%
pat0001, 3-voxel dilation, edema intensities       +51.4       +27.3     -47%
pat0004, x1.15, taper 50                           +59.6       +43.5     -27%
pat0004, x1.15, plateau 20 voxels then taper 50    +62.7       +46.6     -26%
pat0004, x0.87 (shrinking, response), taper 50     -41.3       -33.0     -20%
pat0003, x1.15, taper 15                           +50.2       +34.3     -32%
pat0004, x1.15, taper 15 (used here; the app: same) +45.4       +36.1     -20%
pat0004, x1.15, taper 15, 48-epoch models          +45.4       +39.0     -14%
=================================================  ==========  ========  =======

The rows above the last were read by the 16-epoch models, the last by the 48-epoch models
shipped on 2026-12-07 (the same pair read by the 16-epoch ensemble in the same session: 110.3 ->
146.9 mL, -19.3%; by the 48-epoch one 109.6 -> 148.6 mL, -14.0%). With a stripped study's
brain mask taken nearest-neighbour from the reference's own grid (2026-12-07, sixth stop):
109.7 -> 148.2 mL, -15.1%; with ``--tta`` as well, -15.0%.
None is within 10%: the model consistently reads less change than the label (its misses grow
with the tumour: on pat0004 x1.15 taper 50 its false negatives against the transformed label
went from 11.8k to 26.6k voxels). The 10% must-hold is unmet; it is the model's
segmentation of a grown tumour, not the follow-up's arithmetic, that falls short.

With the 16-epoch models, about a third of the shortfall was the input normalisation: each
channel is z-scored over the whole brain, so a grown bright tumour raises the mean and the
spread and its own edge falls under the network's threshold. A diagnostic run (pat0004 x1.15,
taper 15, no movement, the fold ensemble, ``segment_case`` on both time points) with the
statistics taken over the brain outside the reference label's tumour read the change at -12.9%
(110.3 -> 146.9 mL as shipped then, -19.3%; 118.8 -> 158.3 mL so). It needs the true tumour, so
it is not a method; it says that training and inference with statistics of normal-appearing
brain would close part of the gap, not all of it. Nor does the fold model that never saw
pat0004 (fold 0) do better on its own: 110.7 -> 147.3 mL, -19.2%, so the in-sample model is not
the cause.

Robust statistics at inference alone do not help either (2026-12-07, the fold ensemble on the
same pair, and each of the 14 cross-validation cases by its held-out fold model): median and
IQR / 1.349 read the change at -11.3% but cost mean whole-tumour Dice 0.836 -> 0.779 (the
network was trained on mean and standard deviation); mean and deviation of the brain below its
99th or 95th percentile: -19.1% and -19.5%, Dice 0.819 and 0.766. Any such change would have to
be trained with."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from mrimaster.segmentation.volumes import load_nifti
from mrimaster.serving.app import create_app
from mrimaster.serving.context import AppContext
from mrimaster.serving.followup import RANO_NOTE, change
from mrimaster.serving.jobs import JobRunner
from mrimaster.serving.models import ServedModels
from mrimaster.storage.tables import AuditEvent
from tests.serving.conftest import DOCTOR_PASSWORD, bearer, make_ctx

CASE = "brats-mini/deepmedic-brats2015/validation/brats_2013_pat0004_1"
GROWTH = 1.15
TAPER = 15
"""Voxels beyond the tumour's equivalent radius over which the push fades: short, so the
surrounding tissue is compressed locally and the brain barely grows (a tumour grows inside a
skull; with 50 voxels the brain mask grew by 10%)."""
PATIENT = "FOLLOWUP-0001"
MOVE_MM = (4.0, -3.0, 2.0)
MOVE_DEG = 3.0
FIRST_MM = (-2.0, 1.0, 0.0)
FIRST_DEG = -2.0


def grow_tumour(labels: np.ndarray, images: dict[str, np.ndarray], factor: float
                ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The tumour grown by a smooth radial deformation (mass effect): about the whole
    tumour's centre ``c``, an output voxel ``x`` samples the input at ``c + (x - c) g(r)``,
    ``g = 1 / factor`` within the tumour's equivalent radius ``R`` (the tumour is scaled
    by ``factor`` in each direction), rising to 1 (no change) at ``R + 50`` voxels with a
    cosine taper. Images are resampled linearly, the label map nearest-neighbour, with the
    same field; returns ``(new images, new labels)``."""
    from scipy import ndimage

    tumour = labels > 0
    centre = np.argwhere(tumour).mean(axis=0)
    inner = (3 * tumour.sum() / (4 * math.pi)) ** (1 / 3)
    outer = inner + TAPER
    grid = np.indices(labels.shape, dtype=np.float32)
    offset = grid - centre.reshape(3, 1, 1, 1).astype(np.float32)
    r = np.sqrt((offset ** 2).sum(axis=0))
    taper = np.clip((r - inner) / (outer - inner), 0, 1)
    weight = 0.5 * (1 + np.cos(math.pi * taper))  # 1 inside, 0 outside
    g = 1 - (1 - 1 / factor) * weight
    source = centre.reshape(3, 1, 1, 1) + offset * g
    out = {name: ndimage.map_coordinates(data.astype(np.float32), source, order=1,
                                         mode="nearest")
           for name, data in images.items()}
    return out, ndimage.map_coordinates(labels, source, order=0, mode="nearest")


def moved(affine: np.ndarray, shape: tuple[int, ...], degrees: float,
          shift: tuple[float, float, float]) -> np.ndarray:
    """``affine`` after the head turns by ``degrees`` about the volume's centre (z axis)
    and moves by ``shift`` mm."""
    a = math.radians(degrees)
    turn = np.eye(4)
    turn[:2, :2] = [[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]
    centre = affine @ np.array([*(np.array(shape[:3]) - 1) / 2, 1.0])
    to, back = np.eye(4), np.eye(4)
    to[:3, 3], back[:3, 3] = -centre[:3], centre[:3] + np.array(shift)
    return back @ turn @ to @ affine


@dataclass
class TimePoints:
    first: dict[str, Path]
    second: dict[str, Path]
    known_ml: float
    baseline_ml: float


@pytest.fixture(scope="module")
def time_points(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> TimePoints:
    folder = data_root / CASE
    out = tmp_path_factory.mktemp("timepoints")
    files = {"flair": next(folder.glob("Flair*")), "t1ce": next(folder.glob("T1c*"))}
    label_img = load_nifti(next(folder.glob("OTMultiClass*")))
    labels = np.asarray(label_img.dataobj).round().astype(np.int16)
    imgs = {m: load_nifti(p) for m, p in files.items()}
    grown, new_labels = grow_tumour(labels, {m: np.asarray(i.dataobj) for m, i in
                                             imgs.items()}, GROWTH)
    added = int((new_labels > 0).sum() - (labels > 0).sum())
    first, second = {}, {}
    for m, data in grown.items():
        first[m], second[m] = out / f"{m}-1.nii.gz", out / f"{m}-2.nii.gz"
        nib.save(nib.Nifti1Image(np.asarray(imgs[m].dataobj, np.float32), moved(
            imgs[m].affine, data.shape, FIRST_DEG, FIRST_MM)), first[m])
        nib.save(nib.Nifti1Image(data, moved(imgs[m].affine, data.shape, FIRST_DEG + MOVE_DEG,
                                             MOVE_MM)), second[m])
    voxel_ml = float(abs(np.linalg.det(label_img.affine[:3, :3]))) / 1000
    return TimePoints(first, second, added * voxel_ml, int((labels > 0).sum()) * voxel_ml)


@dataclass
class FollowUpApp:
    ctx: AppContext
    client: TestClient
    doctor: dict[str, str]
    cases: list[int]
    folder: Path
    db_url: str


@pytest.fixture(scope="module")
def followup_app(tmp_path_factory: pytest.TempPathFactory, served_models: ServedModels,
                 time_points: TimePoints) -> Iterator[FollowUpApp]:
    """An app (SQLite) with the two time points uploaded as one patient (the same typed
    reference) and segmented."""
    folder = tmp_path_factory.mktemp("followup")
    db_url = f"sqlite:///{folder / 'app.db'}"
    ctx = make_ctx(folder, db_url, served_models)
    client = TestClient(create_app(ctx))
    doctor = bearer(client, "doctor", DOCTOR_PASSWORD)
    ids = []
    for study in (time_points.first, time_points.second):
        r = client.post("/api/cases/3d", headers=doctor, data={"patient": PATIENT},
                        files={m: (f"{m}.nii.gz", p.read_bytes()) for m, p in study.items()})
        assert r.status_code == 200, r.text
        ids.append(r.json()["id"])
    assert JobRunner(ctx).run_pending() == 2
    yield FollowUpApp(ctx, client, doctor, ids, folder, db_url)
    ctx.engine.dispose()


def test_change_is_hand_computed() -> None:
    assert change(30.0, 20.0) == {"ml": 10.0, "percent": 50.0}
    assert change(15.0, 20.0) == {"ml": -5.0, "percent": -25.0}
    assert change(None, 20.0) == {"ml": None, "percent": None}
    assert change(1.0, 0.0) == {"ml": 1.0, "percent": None}


def test_follow_up_shows_the_known_growth(followup_app: FollowUpApp,
                                          time_points: TimePoints) -> None:
    app, client = followup_app, followup_app.client
    first, second = app.cases
    cases = [client.get(f"/api/cases/{i}", headers=app.doctor).json() for i in app.cases]
    assert cases[0]["pseudonym"] == cases[1]["pseudonym"]
    pseudonym = cases[0]["pseudonym"]
    assert all(c["status"] in ("ai-read", "referred") for c in cases), cases
    r = client.get(f"/api/patients/{pseudonym}/followup", headers=app.doctor)
    assert r.status_code == 200, r.text
    data = r.json()
    assert [s["case"] for s in data["studies"]] == [first, second]
    later = data["studies"][1]
    measured = later["from_first"]["WT"]["ml"]
    v0, v1 = (s["volumes_ml"]["WT"] for s in data["studies"])
    tp = time_points
    print(f"\nknown WT change {tp.known_ml:.2f} mL (reference {tp.baseline_ml:.1f}"
          f" -> {tp.baseline_ml + tp.known_ml:.1f} mL); measured {measured:.2f}"
          f" mL ({v0:.1f} -> {v1:.1f} mL)")
    assert time_points.known_ml > 10
    assert measured == pytest.approx(v1 - v0, abs=0.05)  # the page's arithmetic
    # the own reads miss the 10% (-15%, see the module docstring); this guards the
    # direction and the order of magnitude
    assert 0.5 * time_points.known_ml <= measured <= 1.1 * time_points.known_ml, (
        measured, time_points.known_ml)
    assert later["from_previous"]["WT"] == later["from_first"]["WT"]
    # the must-hold, on the change read with the later study on the earlier one's
    # intensity scale (the pair's registration reused; mrimaster.segmentation.longitudinal)
    (pair,) = data["pairs"]
    assert pair["matched"] and "error" not in pair["matched"], pair["matched"]
    matched = later["from_previous_matched"]["WT"]["ml"]
    print(f"on one scale: {matched:.2f} mL ({pair['matched']['earlier_ml']['WT']:.1f} -> "
          f"{pair['matched']['volumes_ml']['WT']:.1f} mL), "
          f"{100 * (matched - tp.known_ml) / tp.known_ml:+.1f}% of the known change")
    earlier_read = pair["matched"]["earlier_ml"]["WT"]  # the same path as the later read
    assert earlier_read == pytest.approx(v0, rel=0.01)  # ... and as the earlier's own read
    assert matched == pytest.approx(pair["matched"]["volumes_ml"]["WT"] - earlier_read,
                                    abs=0.05)
    assert abs(matched - tp.known_ml) <= 0.10 * tp.known_ml, (matched, tp.known_ml)
    assert later["from_first"]["WT"]["percent"] == pytest.approx(100 * measured / v0, abs=0.01)
    assert data["studies"][0]["from_first"] is None
    # the later study registered onto the earlier: the head movement undone
    assert pair["earlier"] == first and pair["later"] == second and pair["error"] is None
    assert pair["problems"] == [], pair
    assert pair["quality"]["rotation_deg"] == pytest.approx(MOVE_DEG, abs=0.5)
    assert pair["quality"]["nmi"] > 1.1
    mask = nib.Nifti1Image.from_bytes(__import__("gzip").decompress(
        client.get(pair["files"]["later_mask"], headers=app.doctor).content))
    ref = nib.Nifti1Image.from_bytes(__import__("gzip").decompress(
        client.get(pair["files"]["earlier_mask"], headers=app.doctor).content))
    assert mask.shape == ref.shape and np.allclose(mask.affine, ref.affine, atol=1e-3)
    later_mask, earlier_mask = np.asarray(mask.dataobj) > 0, np.asarray(ref.dataobj) > 0
    # same position: the earlier tumour lies inside the grown one
    assert (later_mask & earlier_mask).sum() / earlier_mask.sum() > 0.9
    # cached: a second view registers nothing new (the same stored files)
    again = client.get(f"/api/patients/{pseudonym}/followup", headers=app.doctor).json()
    assert again["pairs"][0]["quality"] == pair["quality"]
    # the page: the table, the chart's data, the viewer, the RANO sentence; audited
    page = client.get(f"/patients/{pseudonym}", headers=app.doctor)
    assert page.status_code == 200, page.text
    assert RANO_NOTE in page.text.replace("&#39;", "'") and "not a RANO assessment" in page.text
    assert 'id="viewer-left"' in page.text and 'id="viewer-right"' in page.text
    assert f"{measured:+.1f} mL" in page.text
    assert f"on one scale: {matched:+.1f} mL" in page.text and 'id="one-scale"' in page.text
    with app.ctx.sessions() as db:
        seen = db.query(AuditEvent).filter_by(action="view-patient").all()
    assert len(seen) == 3 and all(f"cases {first},{second}" == e.detail for e in seen)
    # the worklist links a 3D case's patient to this page
    assert f'href="/patients/{pseudonym}"' in client.get("/", headers=app.doctor).text


def test_patient_page_access(followup_app: FollowUpApp) -> None:
    client = followup_app.client
    assert client.get("/api/patients/P-0000000000/followup",
                      headers=followup_app.doctor).status_code == 404
    anonymous = TestClient(client.app)
    assert anonymous.get("/api/patients/P-0000000000/followup").status_code == 401
    r = anonymous.get("/patients/P-0000000000", follow_redirects=False)
    assert r.status_code in (302, 303, 307) and "/login" in r.headers["location"]


def test_patient_page_in_a_browser(followup_app: FollowUpApp) -> None:
    """The page in Debian's chromium: the chart drawn, the RANO sentence, both viewers
    loaded, no CSP violation."""
    from playwright.sync_api import expect, sync_playwright

    from tests.serving.server import Server
    from tests.serving.test_browser import CHROMIUM, log_in, open_page

    if not Path(CHROMIUM).is_file():
        pytest.fail("browser tests need Debian's chromium (apt-get install chromium)")
    app = followup_app
    pseudonym = app.client.get(f"/api/cases/{app.cases[0]}", headers=app.doctor
                               ).json()["pseudonym"]
    server = Server(app.folder / "app", app.db_url).start()
    try:
        with sync_playwright() as pw:
            browser, page, errors, csp = open_page(pw)
            log_in(page, server)
            page.click("a.patient >> nth=0")
            expect(page.locator("h1")).to_contain_text(pseudonym)
            expect(page.locator("#rano")).to_contain_text("not a RANO assessment")
            expect(page.locator("#volume-chart circle")).to_have_count(6)
            # the page answers without registering (a registration takes tens of seconds on a
            # CPU, past a browser's navigation timeout: the old page made the click time out);
            # its script asks the API, which registers once, then loads both viewers
            # (a locator wait: a string wait_for_function is an eval, which the CSP refuses)
            expect(page.locator("#viewer-right")).to_have_attribute("data-loaded", "2",
                                                                    timeout=180_000)
            expect(page.locator(f"#registration-{app.cases[1]}")).to_contain_text("NMI")
            shot: Any = app.folder / "patient.png"
            page.screenshot(path=shot, full_page=True)
            browser.close()
        assert errors == [] and csp == [], (errors, csp)
    finally:
        server.stop()


def test_a_reviewed_mask_gives_the_follow_ups_volumes(followup_app: FollowUpApp) -> None:
    """A doctor corrects the later study's mask (the tumour's labels removed from half of it)
    and marks it reviewed: the follow-up shows that version's volumes, says so, and measures
    the change from them (it kept showing the AI's). Runs last: it changes the shared app."""
    import gzip

    app, client = followup_app, followup_app.client
    first, second = app.cases
    case = client.get(f"/api/cases/{second}", headers=app.doctor).json()
    ai = nib.Nifti1Image.from_bytes(gzip.decompress(
        client.get(case["files"]["mask.nii.gz"], headers=app.doctor).content))
    labels = np.asarray(ai.dataobj).copy()
    labels[: labels.shape[0] // 2] = 0
    edited = nib.Nifti1Image(labels, ai.affine, ai.header)
    r = client.post(f"/api/cases/{second}/masks?base=0", headers=app.doctor,
                    content=gzip.compress(edited.to_bytes()))
    assert r.status_code == 200, r.text
    version = r.json()["number"]
    assert client.post(f"/api/cases/{second}/masks/{version}/reviewed",
                       headers=app.doctor).status_code == 200
    listed = client.get(f"/api/cases/{second}/masks", headers=app.doctor).json()
    want = next(v for v in listed["versions"] if v["number"] == version)["volumes_ml"]
    data = client.get(f"/api/patients/{case['pseudonym']}/followup", headers=app.doctor).json()
    earlier, later = data["studies"]
    assert later["volumes_ml"]["WT"] == pytest.approx(want["WT"])
    assert later["volumes_ml"]["WT"] < case["result"]["volumes_ml"]["WT"]
    assert later["volumes_source"].startswith(f"reviewed mask (version {version}")
    assert earlier["volumes_source"] == "AI segmentation" and earlier["case"] == first
    assert later["from_previous"]["WT"]["ml"] == pytest.approx(
        want["WT"] - earlier["volumes_ml"]["WT"], abs=0.05)
    page = client.get(f"/patients/{case['pseudonym']}", headers=app.doctor).text
    assert f"reviewed mask (version {version}" in page
