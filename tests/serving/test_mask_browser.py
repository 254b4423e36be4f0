"""Mask editing in a real browser (Debian's chromium, Playwright) against a real ``mrimaster
serve``: draw a stroke with the pen, erase, undo, save; after a reload the versions list shows
version 1 by the doctor, and the comparison with the AI's mask gives its figures. The filled pen
and region grow, saved and exported. Also the 2D tumour box, saved with the review and shown on
reload. No round trip while drawing."""

from __future__ import annotations

import gzip
import io
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from mrimaster.storage import repository as repo
from tests.serving.server import Server
from tests.serving.test_browser import CHROMIUM, add_doctor, log_in, open_page, wait_for_image
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


def magenta(canvas: Any) -> int:
    """How many of the canvas's pixels are magenta (the uncertainty overlay; the image is
    grey, the mask red to yellow), from a screenshot of it."""
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return int(((r - g > 60) & (b - g > 60)).sum())


def wait_for_pixels(canvas: Any, ok: Any, timeout_s: float = 20.0) -> int:
    """Poll (from Python: the CSP refuses a string wait_for_function) until ``ok`` holds for
    the canvas's count of magenta pixels; returns that count."""
    deadline = time.monotonic() + timeout_s
    while True:
        n = magenta(canvas)
        if ok(n):
            return n
        assert time.monotonic() < deadline, f"the canvas's magenta pixels stayed at {n}"
        time.sleep(0.2)


def drag(page: Any, y_frac: float = 0.5) -> None:
    """A horizontal pen stroke across the middle of the canvas."""
    pen(page, [(0.42, y_frac), (0.58, y_frac)], steps=12)


def test_edit_save_reload_compare_3d(server: Server, data_root: Path, tmp_path: Path
                                     ) -> None:
    from playwright.sync_api import expect, sync_playwright

    if not Path(CHROMIUM).is_file():
        pytest.fail("browser tests need Debian's chromium (apt-get install chromium)")
    flair = next((data_root / CASE).glob("Flair*"))
    img: Any = nib.load(flair)
    mask = np.zeros(img.shape[:3], np.uint8)
    cx, cy, cz = (s // 2 for s in mask.shape)
    mask[cx - 30:cx - 10, cy - 10:cy + 10, cz - 5:cz + 5] = 2
    mask[cx - 25:cx - 15, cy - 5:cy + 5, cz - 3:cz + 3] = 1
    # an uncertainty map on the mask's grid, as the ensemble writes it: high on the tumour,
    # low around it
    uncertainty = np.zeros(mask.shape, np.float32)
    uncertainty[cx - 40:cx, cy - 20:cy + 20, cz - 10:cz + 10] = 0.3
    uncertainty[cx - 34:cx - 6, cy - 14:cy + 14, cz - 8:cz + 8] = 0.9
    heat = gzip.compress(nib.Nifti1Image(uncertainty, img.affine).to_bytes())
    ctx = context_beside(server)
    case_id = add_3d_case(ctx, mask, img.affine, image=flair.read_bytes(),
                          files={"uncertainty.nii.gz": heat},
                          result={"status": "ok", "reason": "",
                                  "uncertainty_file": "uncertainty.nii.gz",
                                  "ensemble": {"members": 5, "runtime": "test"}})
    ctx.engine.dispose()
    add_doctor(server)
    requests: list[str] = []
    with sync_playwright() as pw:
        browser, page, errors, csp = open_page(pw)
        log_in(page, server)
        page.goto(f"{server.url}/cases/{case_id}")
        canvas = page.locator("#viewer")
        expect(canvas).to_have_attribute("data-loaded", "2", timeout=60_000)
        # the uncertainty overlay: off at first; ticked, magenta appears on the same slices;
        # unticked, it is gone
        toggle = page.locator("#uncertainty")
        expect(toggle).to_be_visible()
        expect(toggle).not_to_be_checked()
        page.wait_for_timeout(300)
        before = magenta(canvas)
        toggle.check()
        expect(canvas).to_have_attribute("data-uncertainty", "on", timeout=30_000)
        shown = wait_for_pixels(canvas, lambda n: n > before + 500)
        assert len(page.evaluate("window.mrimasterViewer.volumes")) == 3
        toggle.uncheck()
        expect(canvas).to_have_attribute("data-uncertainty", "off")
        hidden = wait_for_pixels(canvas, lambda n: n <= before + 50)
        assert before < shown and hidden < shown, (before, shown, hidden)
        assert canvas.get_attribute("data-error") is None
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
        drag(page)
        drawn = count(page, 2)
        assert drawn > int((mask == 2).sum()), drawn
        assert not [r for r in requests if "/api/" in r], requests
        # the eraser over the same line, then undo brings the stroke back
        page.keyboard.press("e")
        drag(page)
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
        wait_for_image(original)
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


# a pen stroke as the canvas's own mouse events, each placed from the canvas's box as it is
# when the event is sent (fractions of its width and height)
PEN_EVENTS = """([path]) => {
  const canvas = window.mrimasterViewer.canvas;
  path.forEach(([fx, fy], i) => {
    const r = canvas.getBoundingClientRect();
    const type = i === 0 ? "mousedown" : i === path.length - 1 ? "mouseup" : "mousemove";
    canvas.dispatchEvent(new MouseEvent(type, {
      clientX: r.left + fx * r.width, clientY: r.top + fy * r.height, button: 0,
      buttons: type === "mouseup" ? 0 : 1, bubbles: true, cancelable: true, view: window }));
  });
}"""


def pen(page: Any, points: list[tuple[float, float]], steps: int = 10) -> None:
    """A pen stroke through ``points`` (fractions of the canvas's width and height), ``steps``
    moves a segment, sent to the canvas as DOM mouse events in one call.

    Not Playwright's mouse: under load (CI's 2 cores) chromium merges the real moves of one
    frame into one event (rAF-aligned input), so a closed outline could end where it began,
    and the page may scroll or reflow (NiiVue focuses the canvas on a drag) between measuring
    the canvas and pressing the button, which then lands beside it: both seen as a filled pen
    that drew nothing. Sent this way, every event reaches NiiVue's own listeners in order, at
    the place meant, whatever the load."""
    path = [points[0]] + [(xa + (xb - xa) * k / steps, ya + (yb - ya) * k / steps)
                          for (xa, ya), (xb, yb) in zip(points, points[1:], strict=False)
                          for k in range(1, steps + 1)]
    page.evaluate(PEN_EVENTS, [[*path, path[-1]]])


def outline(page: Any, x0: float, x1: float, y0: float, y1: float) -> None:
    """A closed square outline with the pen (fractions of the canvas)."""
    pen(page, [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)])


def stroke(page: Any, affine: np.ndarray, a: tuple[int, int, int], b: tuple[int, int, int]
           ) -> None:
    """A pen stroke on the shown slice from voxel ``a`` to voxel ``b`` (the image file's voxel
    indices, placed on the canvas by NiiVue's own mm -> canvas mapping)."""
    ends: list[tuple[float, float]] = []
    for v in (a, b):
        mm = (affine @ [*v, 1])[:3].tolist()
        ends.append(tuple(page.evaluate("""(mm) => {
          const nv = window.mrimasterViewer, frac = nv.mm2frac(mm);
          frac[2] = nv.scene.crosshairPos[2];  // on the slice shown
          const p = nv.frac2canvasPos(frac), r = nv.canvas.getBoundingClientRect();
          const dpr = nv.uiData.dpr || window.devicePixelRatio || 1;
          return [p[0] / dpr / r.width, p[1] / dpr / r.height];
        }""", mm)))
    pen(page, ends, steps=8)


# the drawing now against the one kept in window.beforeGrow: seeds (labels but the background
# seed 9) that changed, background seeds left, voxels labelled that were not
AGAINST_BEFORE = """() => {
  const b = window.beforeGrow, a = window.mrimasterViewer.drawBitmap;
  let seedsChanged = 0, backgroundLeft = 0, added = 0, differ = 0;
  for (let i = 0; i < a.length; i++) {
    if (b[i] !== 0 && b[i] !== 9 && a[i] !== b[i]) seedsChanged++;
    if (a[i] === 9) backgroundLeft++;
    if (b[i] === 0 && a[i] !== 0) added++;
    if (a[i] !== b[i]) differ++;
  }
  return {seedsChanged, backgroundLeft, added, differ};
}"""


def test_filled_pen_grow_and_export(server: Server, data_root: Path, tmp_path: Path) -> None:
    """The filled pen fills a closed outline; region grow from a seed in a bright cube of the
    shown image fills the cube exactly and keeps every label already drawn, undo takes it back;
    one POST saves it; once marked reviewed, the 3D export holds it with a ``dataset.json``."""
    import gzip
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
    # a cube of 20 in the shown FLAIR (its z-scores stay below 10), beside the AI's mask and
    # within the seeds' box plus the editor's margin (10 voxels)
    cube = np.zeros(mask.shape, bool)
    cube[cx + 10:cx + 24, cy - 7:cy + 7, cz - 5:cz + 5] = True
    image = np.asarray(img.dataobj, np.float32)
    image[cube] = 20
    shown = gzip.compress(nib.Nifti1Image(image, img.affine).to_bytes())
    ctx = context_beside(server)
    case_id = add_3d_case(ctx, mask, img.affine, image=shown)
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
        page.click("#tools button[data-pen='2']")
        square = (0.55, 0.68, 0.40, 0.53)
        # the outline alone (no fill), measured, then undone
        outline(page, *square)
        line = count(page, 2) - ai_edema
        assert line > 0, line
        page.click("#undo")
        assert count(page, 2) == ai_edema
        # the filled pen: the same outline is filled inside
        page.click("#fill")
        expect(page.locator("#fill")).to_have_class(re.compile("active"))
        outline(page, *square)
        filled = count(page, 2) - ai_edema
        assert filled > 2 * line, (filled, line)
        page.click("#fill")  # back to the plain pen
        # region grow: a seed of enhancing tumour (key 3) inside the cube, background seeds
        # (key B) in the brain beside it, then G
        page.keyboard.press("3")
        stroke(page, img.affine, (cx + 15, cy, cz), (cx + 18, cy, cz))
        page.keyboard.press("b")
        stroke(page, img.affine, (cx + 10, cy + 12, cz), (cx + 24, cy + 12, cz))
        seed = count(page, 4)
        assert 0 < seed < int(cube.sum()) and count(page, 9) > 0, (seed, count(page, 9))
        before = {k: count(page, k) for k in (1, 2)}
        page.evaluate("window.beforeGrow = window.mrimasterViewer.drawBitmap.slice()")
        page.keyboard.press("g")
        expect(page.locator("#edit-status")).to_contain_text("region grown from the seeds")
        print("\n" + page.locator("#edit-status").inner_text())  # its voxels and time
        assert count(page, 4) == int(cube.sum())  # the cube, all of it (where, after the save)
        change = page.evaluate(AGAINST_BEFORE)
        assert change["seedsChanged"] == 0 and change["backgroundLeft"] == 0, change
        assert change["added"] == int(editor.get_attribute("data-grown") or "-1"), change
        assert all(count(page, k) >= before[k] for k in (1, 2)), before
        # undo takes the whole grow back (the background seeds too), redo brings it again
        page.keyboard.press("Control+z")
        assert page.evaluate(AGAINST_BEFORE)["differ"] == 0
        page.keyboard.press("Control+y")
        assert page.evaluate(AGAINST_BEFORE) == change
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
        # the grown enhancing tumour is the cube, on the mask's own grid, and no voxel of the
        # AI's mask became background (the filled square may relabel some of them)
        np.testing.assert_array_equal(saved.labels == 4, cube)
        assert (saved.labels[mask > 0] > 0).all()
    ctx.engine.dispose()
