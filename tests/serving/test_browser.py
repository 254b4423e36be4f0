"""The main flows in a real browser: Debian's chromium driven by Playwright against a real
``mrimaster serve`` process. Screenshots of each page go to ``MRIMASTER_SCREENSHOTS`` (default:
the test's temporary folder)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.serving.conftest import DOCTOR_PASSWORD
from tests.serving.server import Server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--use-angle=swiftshader",
        "--enable-unsafe-swiftshader"]  # WebGL (the slice viewer) in software


@pytest.fixture
def server(tmp_path: Path, data_root: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "app", f"sqlite:///{tmp_path / 'app.db'}").start()
    yield srv
    srv.stop()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("MRIMASTER_SCREENSHOTS", str(tmp_path / "screenshots")))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# Every Content-Security-Policy violation, reported to the console (chromium logs a "Refused to
# ... because it violates the following Content Security Policy directive" error itself; the
# securitypolicyviolation event also catches the ones it reports only to the event).
REPORT_CSP = """document.addEventListener("securitypolicyviolation", function (e) {
  console.error("CSP violation: " + e.effectiveDirective + " blocked " + (e.blockedURI || "inline")
                + " at " + e.sourceFile + ":" + e.lineNumber);
});"""


def watch_csp(page: Any) -> list[str]:
    """The CSP violations (and other console errors naming the policy) on ``page``, over all
    the pages it goes to; also any error about the Permissions-Policy header (an unknown
    feature name, a syntax error)."""
    seen: list[str] = []
    page.add_init_script(REPORT_CSP)

    def on_console(message: Any) -> None:
        text = message.text
        if any(word in text for word in ("Content Security Policy", "CSP violation",
                                         "Permissions-Policy", "Permissions Policy")):
            seen.append(f"{page.url}: {text}")

    page.on("console", on_console)
    return seen


def open_page(pw: Any) -> tuple[Any, Any, list[str], list[str]]:
    """Debian's chromium with one page: ``(browser, page, page errors, CSP violations)``."""
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    return browser, page, errors, watch_csp(page)


def wait_for_image(image: Any, timeout_s: float = 30.0) -> None:
    """Wait until the ``<img>`` locator ``image`` has decoded a picture.

    Polled from Python: a string ``page.wait_for_function`` is an ``eval`` in the page once
    its first check fails, which the app's Content Security Policy refuses.
    """
    import time

    deadline = time.monotonic() + timeout_s
    while not image.evaluate("img => img.complete && img.naturalWidth > 0"):
        assert time.monotonic() < deadline, f"the image {image} did not load in {timeout_s} s"
        time.sleep(0.1)


def add_doctor(server: Server) -> None:
    """The admin creates the doctor's account through the API."""
    import httpx

    with httpx.Client(base_url=server.url) as api:
        token = api.post("/api/auth/token", json={"username": "admin",
                                                  "password": "admin-password-1"}).json()
        r = api.post("/api/users", headers={"Authorization": f"Bearer {token['token']}"},
                     json={"username": "doctor", "password": DOCTOR_PASSWORD,
                           "role": "radiologist"})
        assert r.status_code == 200, r.text


def log_in(page: Any, server: Server, shots: Path | None = None) -> None:
    from playwright.sync_api import expect

    page.goto(server.url + "/")
    expect(page).to_have_url(server.url + "/login?next=/")
    if shots is not None:
        page.screenshot(path=shots / "login.png")
    page.fill("input[name=username]", "doctor")
    page.fill("input[name=password]", DOCTOR_PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_contain_text("Worklist")


def test_doctor_flow_2d(server: Server, data_root: Path, shots: Path, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    if not Path(CHROMIUM).is_file():
        pytest.fail("browser tests need Debian's chromium (apt-get install chromium)")
    add_doctor(server)
    image = sorted((data_root / "sartaj-training" / "glioma_tumor").iterdir())[3]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
        csp = watch_csp(page)
        log_in(page, server, shots)
        page.click("text=Upload")
        page.set_input_files("input[type=file]", str(image))
        page.screenshot(path=shots / "upload.png")
        page.click("#upload-2d button[type=submit]")
        expect(page.locator("#ai-read")).to_be_visible(timeout=60_000)
        verdict = page.locator("#ai-read .verdict").inner_text()
        assert "calibrated probability" in verdict
        assert page.locator("#ai-read meter").count() == 4
        # what a read cannot promise is on the page beside it
        assert "does not rule a tumour out" in page.locator("#ai-read .limits").inner_text()
        # the heatmap: switch layers and opacity, it stays over the original
        shown = page.locator("img.cam.shown")
        expect(shown).to_have_count(1)
        wait_for_image(shown)
        options = page.locator("#layer option")
        assert options.count() >= 3
        page.select_option("#layer", index=0)
        first_layer = options.nth(0).get_attribute("value")
        expect(page.locator("img.cam.shown")).to_have_attribute("data-layer", first_layer or "")
        wait_for_image(page.locator("img.cam.shown"))  # made by the server when first chosen
        page.fill("#opacity", "40")
        page.dispatch_event("#opacity", "input")
        assert page.evaluate("document.querySelector('img.cam.shown').style.opacity") == "0.4"
        page.select_option("#layer", index=options.count() - 1)
        page.fill("#opacity", "70")
        page.dispatch_event("#opacity", "input")
        page.screenshot(path=shots / "case-2d.png", full_page=True)
        # the doctor corrects the class
        ai_label = verdict.split("·")[0].strip()
        other = next(o for o in ("glioma", "meningioma", "no_tumor", "pituitary")
                     if o != ai_label)
        page.check("input[value=correct]")
        page.select_option("#label", other)
        page.fill("textarea[name=comment]", "enhancing rim on T1-Gd")
        page.click("#review-form button[type=submit]")
        expect(page.locator(".review")).to_contain_text(f"corrected to {other}")
        page.screenshot(path=shots / "case-2d-reviewed.png", full_page=True)
        # the worklist shows it reviewed, and the filter finds it
        page.click("text=Worklist")
        page.select_option("select[name=status]", "reviewed")
        page.click("form.filters button")
        row = page.locator("table.worklist tbody tr")
        expect(row).to_have_count(1)
        expect(row.locator(".status")).to_have_text("reviewed")
        page.screenshot(path=shots / "worklist.png")
        # the PDF report downloads
        row.locator("a").click()
        with page.expect_download() as download:
            page.click("#report-link")
        pdf = tmp_path / "report.pdf"
        download.value.save_as(pdf)
        assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 10_000
        # log-in page, upload page, 2D case page (heatmap controls), worklist: nothing the
        # Content-Security-Policy had to block
        assert not csp, csp
        browser.close()


def test_doctor_flow_3d(server: Server, data_root: Path, shots: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    add_doctor(server)
    folder = data_root / "brats-mini" / "deepmedic-brats2015" / "test" / "brats_2013_pat0002_1"
    with sync_playwright() as pw:
        browser, page, errors, csp = open_page(pw)
        log_in(page, server)
        page.click("text=Upload")
        page.set_input_files("#upload-3d input[name=flair]", str(next(folder.glob("Flair*"))))
        page.set_input_files("#upload-3d input[name=t1ce]", str(next(folder.glob("T1c*"))))
        page.click("#upload-3d button[type=submit]")
        # the page shows the job's progress, then the result without a manual reload
        expect(page.locator("#study")).to_be_visible()
        expect(page.locator("#volumes")).to_be_visible(timeout=180_000)
        for region in ("WT", "TC", "ET"):
            expect(page.locator(f"#volumes tr[data-region={region}]")).to_contain_text("mL")
        canvas = page.locator("#viewer")
        expect(canvas).to_have_attribute("data-loaded", "2", timeout=60_000)
        mask_max = page.evaluate("window.mrimasterViewer.volumes[1].global_max")
        assert mask_max >= 1, mask_max
        assert canvas.get_attribute("data-centre-error") is None
        # the series with their roles (editable), the registration and brain-mask checks
        expect(page.locator("#series select.role")).to_have_count(2)
        expect(page.locator("#series select.role").first).to_have_value("series/flair.nii.gz|flair")
        expect(page.locator("#registration figure[data-role=flair] img")).to_be_visible()
        assert page.evaluate("document.querySelector('#registration img').naturalWidth") > 0
        expect(page.locator("#brain-mask img")).to_be_visible()
        page.select_option("#base", "t1ce")
        expect(canvas).to_have_attribute("data-loaded", "2")
        page.wait_for_timeout(1000)
        page.screenshot(path=shots / "case-3d.png", full_page=True)
        assert not errors, errors
        # the job's progress page and the NiiVue viewer run under the strict CSP
        assert not csp, csp
        browser.close()


def test_api_docs_offline(server: Server, shots: Path) -> None:
    """The API docs page works with no internet: every request to another host is aborted,
    and Swagger UI still lists the operations; nothing breaks the Content-Security-Policy."""
    from urllib.parse import urlsplit

    from playwright.sync_api import expect, sync_playwright

    outside: list[str] = []

    def only_loopback(route: Any) -> None:
        if urlsplit(route.request.url).hostname in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort("internetdisconnected")

    with sync_playwright() as pw:
        browser, page, errors, csp = open_page(pw)
        page.route("**/*", only_loopback)
        page.goto(server.url + "/api/docs")
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("MRIMaster")
        operations = page.locator(".opblock")
        expect(operations.first).to_be_visible(timeout=30_000)
        assert operations.count() > 10
        expect(page.locator(".opblock-summary-path[data-path='/api/cases']").first
               ).to_be_visible()
        # open one operation: its parameters and responses render too
        page.locator(".opblock-summary").first.click()
        expect(page.locator(".opblock-body").first).to_be_visible()
        page.wait_for_timeout(500)
        page.screenshot(path=shots / "api-docs.png", full_page=False)
        # the Permissions-Policy header is in force: no camera, microphone or location
        assert page.evaluate("['camera', 'microphone', 'geolocation'].map(function (f) {"
                             " return document.featurePolicy.allowsFeature(f); })"
                             ) == [False, False, False]
        assert not outside, outside
        assert not errors, errors
        assert not csp, csp
        browser.close()
