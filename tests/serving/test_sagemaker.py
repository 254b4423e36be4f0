"""The SageMaker server's body limit: a declared length over the limit is refused before the
body is read, and a chunked body is cut off as soon as it streams past the limit."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mrimaster.serving import sagemaker

LIMIT = 200_000
CHUNK = 65_536


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> TestClient:
    monkeypatch.setattr(sagemaker, "MAX_BODY", LIMIT)

    def predict(paths: list[Path]) -> list[Any]:
        return []

    models: Any = SimpleNamespace(version="stub@0", classifier=SimpleNamespace(
        runtime="stub", predict=predict))
    return TestClient(sagemaker.create_sagemaker_app(models))


def invoke(app: Any, chunks: int, headers: list[tuple[bytes, bytes]]
           ) -> tuple[int, int]:
    """Send ``chunks`` chunks of 64 KiB to ``POST /invocations`` as a server would, one
    ASGI message at a time; returns ``(status, chunks the app read)``."""
    import anyio

    read = 0
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal read
        if read >= chunks:
            return {"type": "http.disconnect"}
        read += 1
        return {"type": "http.request", "body": b"\0" * CHUNK, "more_body": read < chunks}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "path": "/invocations", "raw_path": b"/invocations",
             "query_string": b"", "root_path": "", "scheme": "http",
             "headers": [(b"content-type", b"application/octet-stream"), *headers],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8080)}
    anyio.run(app, scope, receive, send)
    return status, read


def test_chunked_body_is_cut_off_past_the_limit(client: TestClient) -> None:
    status, read = invoke(client.app, 64, [(b"transfer-encoding", b"chunked")])
    assert status == 413
    assert read <= LIMIT // CHUNK + 2  # not the 64 chunks sent


def test_declared_length_over_the_limit_is_refused_unread(client: TestClient) -> None:
    status, read = invoke(client.app, 16, [(b"content-length", str(16 * CHUNK).encode())])
    assert status == 413 and read == 0
    status, read = invoke(client.app, 1, [(b"content-length", b"12abc")])
    assert status == 413 and read == 0  # a length that is not a number is not trusted


def test_a_body_within_the_limit_is_answered(client: TestClient) -> None:
    r = client.post("/invocations", content=b"not an image",
                    headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["status"] == "error"
