"""Mask editing in a real browser (Debian's chromium, Playwright) against a real ``mrimaster
serve``: draw a stroke with the pen, erase, undo, save; after a reload the versions list shows
version 1 by the doctor, and the comparison with the AI's mask gives its figures. Also the 2D
tumour box, saved with the review and shown on reload. No round trip while drawing."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from mrimaster.storage import repository as repo
from tests.serving.server import Server
from tests.serving.test_browser import CHROMIUM, add_doctor, log_in, open_page
from tests.serving.test_mask_versions import add_3d_case, context_beside
from tests.serving.test_studies import CASE


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "app", f"sqlite:///{tmp_path / 'app.db'}").start()
    yield srv
    srv.stop()


def count(page: Any, label: int) -> int:
    return int(page.evaluate(f"window.mrimasterViewer.drawBitmap.filter(v => v === {label})"
                             ".length"))


def drag(page: Any, box: dict[str, float], y_frac: float = 0.5) -> None:
    """A horizontal pen stroke across the middle of the canvas."""
    x0, x1 = box["x"] + box["width"] * 0.42, box["x"] + box["width"] * 0.58
    y = box["y"] + box["height"] * y_frac
    page.mouse.move(x0, y)
    page.mouse.down()
    page.mouse.move(x1, y, steps=12)
    page.mouse.up()


def test_edit_save_reload_compare_3d(server: Server, data_root: Path, tmp_path: Path
                                     ) -> None:
    from playwright.sync_api import expect, sync_playwright

    if not Path(CHROMIUM).is_file():
        pytest.fail("browser tests need Debian's chromium (apt-get install chromium)")
    flair = next((data_root / CASE).glob("Flair*"))
    img = nib.load(flair)
    mask = np.zeros(img.shape[:3], np.uint8)
    cx, cy, cz = (s // 2 for s in mask.shape)
    mask[cx - 30:cx - 10, cy - 10:cy + 10, cz - 5:cz + 5] = 2
    mask[cx - 25:cx - 15, cy - 5:cy + 5, cz - 3:cz + 3] = 1
    ctx = context_beside(server)
    case_id = add_3d_case(ctx, mask, img.affine, image=flair.read_bytes())
    ctx.engine.dispose()
    add_doctor(server)
    requests: list[str] = []
    with sync_playwright() as pw:
        browser, page, errors, csp = open_page(pw)
        log_in(page, server)
        page.goto(f"{server.url}/cases/{case_id}")
        canvas = page.locator("#viewer")
        expect(canvas).to_have_attribute("data-loaded", "2", timeout=60_000)
        expect(page.locator("#versions-table tr[data-version='0']")).to_be_visible()
        editor = page.locator("#mask-editor")
        expect(editor).to_be_visible()
        expect(page.locator("#shortcuts")).to_contain_text("Ctrl")
        page.click("#edit-start")
        expect(editor).to_have_attribute("data-ready", "1", timeout=30_000)
        assert count(page, 2) == int((mask == 2).sum())
        page.select_option("#plane", "0")  # axial only: the whole canvas is one slice
        page.wait_for_timeout(300)
        page.on("request", lambda r: requests.append(r.method + " " + r.url))
        # the pen: edema, a stroke across the middle (no request while drawing)
        page.click("#tools button[data-pen='2']")
        box = canvas.bounding_box()
        assert box is not None
        drag(page, box)
        drawn = count(page, 2)
        assert drawn > int((mask == 2).sum()), drawn
        assert not [r for r in requests if "/api/" in r], requests
        # the eraser over the same line, then undo brings the stroke back
        page.keyboard.press("e")
        drag(page, box)
        erased = count(page, 2)
        assert erased < drawn, (erased, drawn)
        page.click("#undo")
        assert count(page, 2) == drawn
        page.click("#redo")
        assert count(page, 2) == erased
        page.keyboard.press("Control+z")
        assert count(page, 2) == drawn
        core = count(page, 1)
        # save once: one POST with the whole mask
        page.click("#save-mask")
        expect(editor).to_have_attribute("data-saved", "1", timeout=30_000)
        posts = [r for r in requests if r.startswith("POST ")]
        assert len(posts) == 1 and posts[0].endswith(f"/api/cases/{case_id}/masks?base=0"), posts
        expect(page.locator("#edit-status")).to_contain_text("saved as version 1")
        page.screenshot(path=tmp_path / "mask-edit.png", full_page=True)
        # reload: version 1 by the doctor, and the figures against the AI's mask
        page.reload()
        row = page.locator("#versions-table tr[data-version='1']")
        expect(row).to_be_visible(timeout=30_000)
        expect(row.locator(".author")).to_have_text("doctor")
        page.select_option("#compare-a", "0")
        page.select_option("#compare-b", "1")
        page.click("#compare-submit")
        dice = page.locator("#compare-result tr[data-region=WT] .dice")
        expect(dice).to_be_visible()
        wt = float(dice.inner_text())
        assert 0.3 < wt < 1.0, wt
        # the reviewed mark moves the case's volumes to version 1
        page.click("#versions-table tr[data-version='1'] .mark-reviewed")
        expect(page.locator("#reviewed-note")).to_contain_text("version 1")
        expect(page.locator("#volumes-source")).to_contain_text("reviewed version 1")
        assert not errors, errors
        assert not csp, csp
        browser.close()
    # the saved version is the drawn mask: the AI's voxels plus the stroke, on the AI's grid
    ctx = context_beside(server)
    with ctx.sessions() as db:
        case = repo.get_case(db, case_id)
        assert case is not None
        from mrimaster.serving import masks

        saved = masks.load(ctx, case, db, 1)
        assert saved.labels.shape == mask.shape and np.allclose(saved.affine, img.affine,
                                                                atol=1e-3)
        assert int((saved.labels == 2).sum()) == drawn
        assert int((saved.labels == 1).sum()) == core
        # only the stroke's slice changed: every other voxel is the AI's
        changed = np.argwhere(saved.labels != mask)
        assert len(changed) > 0 and min(len(set(changed[:, a].tolist())) for a in range(3)) == 1
    ctx.engine.dispose()


def test_box_on_a_2d_case(server: Server, data_root: Path) -> None:
    import io

    from PIL import Image
    from playwright.sync_api import expect, sync_playwright

    image = sorted((data_root / "sartaj-training" / "glioma_tumor").iterdir())[3]
    ctx = context_beside(server)
    buf = io.BytesIO()
    with Image.open(image) as im:
        im.convert("L").save(buf, format="PNG")
        width, height = im.size
    with ctx.sessions() as db:
        admin = repo.get_user(db, "admin")
        assert admin is not None
        result = {"status": "ok", "label": "glioma_tumor", "confidence": 0.9,
                  "probabilities": {"glioma_tumor": 0.9}, "uncertainty": 0.1, "distance": None,
                  "layers": []}
        case = repo.add_case(db, "2d", "p2", admin, {"image": ctx.store.put_bytes(
            buf.getvalue())}, result, "ai-read", "glioma_tumor", "m@1")
        db.commit()
        case_id = case.id
    add_doctor(server)
    with sync_playwright() as pw:
        browser, page, errors, csp = open_page(pw)
        log_in(page, server)
        page.goto(f"{server.url}/cases/{case_id}")
        original = page.locator("#original")
        page.wait_for_function("document.getElementById('original').naturalWidth > 0")
        b = original.bounding_box()
        assert b is not None
        page.mouse.move(b["x"] + b["width"] * 0.25, b["y"] + b["height"] * 0.25)
        page.mouse.down()
        page.mouse.move(b["x"] + b["width"] * 0.5, b["y"] + b["height"] * 0.75, steps=8)
        page.mouse.up()
        drawn = json.loads(page.locator("#box-area").get_attribute("data-box") or "[]")
        assert abs(drawn[0] - width * 0.25) <= 2 and abs(drawn[3] - height * 0.75) <= 2
        with page.expect_response(f"**/api/cases/{case_id}/box") as answer:
            page.click("#review-form button[type=submit]")
        assert answer.value.status == 200, answer.value.text()
        expect(page.locator(".review")).to_be_visible()
        expect(page.locator("#box-note")).to_contain_text("saved by doctor")
        assert json.loads(page.locator("#box-area").get_attribute("data-box") or "[]") == drawn
        expect(page.locator("#tumour-box")).to_be_visible()
        assert not errors, errors
        assert not csp, csp
        browser.close()


def outline(page: Any, box: dict[str, float], x0: float, x1: float, y0: float, y1: float
            ) -> None:
    """A closed square outline with the pen (fractions of the canvas)."""
    pts = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
    page.mouse.move(box["x"] + box["width"] * x0, box["y"] + box["height"] * y0)
    page.mouse.down()
    for x, y in pts[1:]:
        page.mouse.move(box["x"] + box["width"] * x, box["y"] + box["height"] * y, steps=10)
    page.mouse.up()


def test_filled_pen_and_export(server: Server, data_root: Path, tmp_path: Path
                                       ) -> None:
    """The filled pen fills a closed outline, one POST saves it; once marked reviewed, the 3D
    export holds it with a ``dataset.json``."""
    import io
    import zipfile

    from playwright.sync_api import expect, sync_playwright

    if not Path(CHROMIUM).is_file():
        pytest.fail("browser tests need Debian's chromium (apt-get install chromium)")
    flair = next((data_root / CASE).glob("Flair*"))
    img: Any = nib.load(flair)
    mask = np.zeros(img.shape[:3], np.uint8)
    cx, cy, cz = (s // 2 for s in mask.shape)
    mask[cx - 30:cx - 10, cy - 10:cy + 10, cz - 5:cz + 5] = 2
    mask[cx - 25:cx - 15, cy - 5:cy + 5, cz - 3:cz + 3] = 1
    ctx = context_beside(server)
    case_id = add_3d_case(ctx, mask, img.affine, image=flair.read_bytes())
    with ctx.sessions() as db:  # as the job keeps them: the sequence on the mask's grid
        case = repo.get_case(db, case_id)
        assert case is not None
        case.files = {**case.files, "registered/flair.nii.gz": case.files["flair.nii.gz"]}
        db.commit()
    ctx.engine.dispose()
    add_doctor(server)
    ai_edema = int((mask == 2).sum())
    requests: list[str] = []
    with sync_playwright() as pw:
        browser, page, errors, csp = open_page(pw)
        log_in(page, server)
        page.goto(f"{server.url}/cases/{case_id}")
        canvas = page.locator("#viewer")
        expect(canvas).to_have_attribute("data-loaded", "2", timeout=60_000)
        editor = page.locator("#mask-editor")
        page.click("#edit-start")
        expect(editor).to_have_attribute("data-ready", "1", timeout=30_000)
        page.select_option("#plane", "0")
        page.wait_for_timeout(300)
        page.on("request", lambda r: requests.append(r.method + " " + r.url))
        box = canvas.bounding_box()
        assert box is not None
        page.click("#tools button[data-pen='2']")
        square = (0.55, 0.68, 0.40, 0.53)
        # the outline alone (no fill), measured, then undone
        outline(page, box, *square)
        line = count(page, 2) - ai_edema
        assert line > 0, line
        page.click("#undo")
        assert count(page, 2) == ai_edema
        # the filled pen: the same outline is filled inside
        page.click("#fill")
        expect(page.locator("#fill")).to_have_class(re.compile("active"))
        outline(page, box, *square)
        filled = count(page, 2) - ai_edema
        assert filled > 2 * line, (filled, line)
        page.click("#fill")  # back to the plain pen
        # region grow (NiiVue's GrowCut) is not exercised here: under headless chromium's
        # software WebGL it ran past 240 s on this volume (measured), see the closing note
        grown = {k: count(page, k) for k in (1, 2, 4)}
        assert not [r for r in requests if "/api/" in r], requests
        page.click("#save-mask")
        expect(editor).to_have_attribute("data-saved", "1", timeout=30_000)
        posts = [r for r in requests if r.startswith("POST ")]
        assert len(posts) == 1 and posts[0].endswith(f"/api/cases/{case_id}/masks?base=0"), posts
        page.reload()
        row = page.locator("#versions-table tr[data-version='1']")
        expect(row).to_be_visible(timeout=30_000)
        page.click("#versions-table tr[data-version='1'] .mark-reviewed")
        expect(page.locator("#reviewed-note")).to_contain_text("version 1")
        answer = page.request.get(f"{server.url}/api/export/reviewed-3d.zip")
        assert answer.status == 200, answer.text()
        with zipfile.ZipFile(io.BytesIO(answer.body())) as zf:
            names = zf.namelist()
            assert "dataset.json" in names, names
            assert any(n.endswith("_seg.nii.gz") for n in names), names
            assert any(n.endswith("_flair.nii.gz") for n in names), names
            assert json.loads(zf.read("dataset.json"))
        assert not errors, errors
        assert not csp, csp
        browser.close()
    ctx = context_beside(server)
    with ctx.sessions() as db:
        case = repo.get_case(db, case_id)
        assert case is not None
        from mrimaster.serving import masks

        saved = masks.load(ctx, case, db, 1)
        assert not np.array_equal(saved.labels, mask)
        assert int((saved.labels == 2).sum()) - ai_edema >= line
        assert {k: int((saved.labels == k).sum()) for k in (1, 2, 4)} == grown
        assert not (saved.labels == 9).any()
    ctx.engine.dispose()
