"""Bad uploads get a clear message and a 4xx status, and change nothing stored."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from mrimaster.serving.app import create_app
from mrimaster.serving.context import AppContext
from mrimaster.serving.models import ServedModels
from mrimaster.storage.tables import AuditEvent, Case
from tests.serving.conftest import bearer, make_ctx
from tests.serving.test_deid import identified_dicom


def png_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A tiny PNG whose header declares ``width x height`` pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def truncated_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (256, 256), 90).save(buf, format="JPEG")
    return buf.getvalue()[:400]


def state(ctx: AppContext) -> tuple[int, list[str], list[Path]]:
    with ctx.sessions() as db:
        cases = db.query(Case).count()
    return cases, ctx.store.all_objects(), list(ctx.store.tmp.iterdir())


BAD = {
    "empty.png": (b"", "empty"),
    "notes.png": (b"these are my notes, not an image\n" * 20, "not an image"),
    "cut.jpg": (truncated_jpeg(), "truncated"),
    "bomb.png": (png_bomb(), "too large"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_file_is_refused_and_nothing_is_stored(client: TestClient, ctx: AppContext,
                                                   doctor: dict[str, str], name: str) -> None:
    data, words = BAD[name]
    before = state(ctx)
    r = client.post("/api/cases/2d", files={"file": (name, data, "image/png")}, headers=doctor)
    assert 400 <= r.status_code < 500, r.text
    assert words in r.json()["error"] and name in r.json()["error"]
    assert "/tmp" not in r.text  # no server path leaks
    assert state(ctx) == before == (0, [], [])


def test_dicom_without_pixels_is_refused(client: TestClient, ctx: AppContext,
                                         doctor: dict[str, str], tmp_path: Path) -> None:
    path = identified_dicom(tmp_path / "report.dcm", None)
    r = client.post("/api/cases/2d", files={"file": ("report.dcm", path.read_bytes())},
                    headers=doctor)
    assert r.status_code == 415 and "no pixel data" in r.json()["error"]
    assert state(ctx) == (0, [], [])


def test_upload_over_the_limit_is_refused(tmp_path: Path, db_url: str,
                                          served_models: ServedModels) -> None:
    ctx = make_ctx(tmp_path, db_url, served_models, MRIMASTER_MAX_UPLOAD_MB="0.01")
    client = TestClient(create_app(ctx))
    headers = bearer(client, "doctor", "doctor-password-1")
    r = client.post("/api/cases/2d", files={"file": ("big.png", b"\0" * 2_000_000)},
                    headers=headers)
    assert r.status_code == 413 and "limit" in r.json()["error"]
    # a body without a declared length (chunked) is cut off while it streams
    def chunks():  # type: ignore[no-untyped-def]
        yield b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\n"
        for _ in range(64):
            yield b"\0" * 65536

    r = client.post("/api/cases/2d", headers={**headers, "Content-Type":
                                              "multipart/form-data; boundary=x"},
                    content=chunks())
    assert r.status_code == 413, r.text
    with ctx.sessions() as db:
        assert db.query(Case).count() == 0
        assert db.query(AuditEvent).filter(AuditEvent.action == "upload-2d").count() == 0
    assert ctx.store.all_objects() == [] and list(ctx.store.tmp.iterdir()) == []
    ctx.engine.dispose()


def test_anonymous_uploads_are_refused_before_the_body_is_read(client: TestClient,
                                                              ctx: AppContext) -> None:
    read = 0

    def body():  # type: ignore[no-untyped-def]
        nonlocal read
        for _ in range(16):
            read += 1
            yield b"\0" * 65536

    r = client.post("/api/cases/2d", content=body(),
                    headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert r.status_code == 401 and read <= 1
    page = TestClient(client.app, follow_redirects=False).post(
        "/cases/new", content=b"x", headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert page.status_code == 303 and page.headers["location"] == "/login"
    assert state(ctx) == (0, [], [])


def test_security_headers(client: TestClient) -> None:
    r = client.get("/login")
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"
