"""A SageMaker-compatible inference server: ``GET /ping`` and ``POST /invocations`` (the
contract of SageMaker's bring-your-own-container hosting, port 8080), with the same trust
fields as ``mrimaster predict``.

Bodies ``POST /invocations`` accepts:
    - ``image/png``, ``image/jpeg``, ``application/x-image``, ``application/dicom``,
      ``application/octet-stream``: one image file;
    - ``application/json``: ``{"image": "<base64>"}`` or ``{"images": ["<base64>", ...]}``.

The answer is ``{"model": ..., "predictions": [{"status", "reason", "label", "confidence",
"uncertainty", "distance", "probabilities"}, ...]}``, one per image in order; an image that
cannot be read gets ``{"status": "error", "reason": ...}`` in its place (the others are still
answered). There is no log-in: SageMaker endpoints are called through AWS's own authentication.
"""

from __future__ import annotations

import base64
import binascii
import json
import tempfile
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from mrimaster.data.dicom import dicom_to_gray, is_dicom, read_dicom
from mrimaster.errors import MRIMasterError
from mrimaster.serving.models import ServedModels

MAX_BODY = 64 * 1024 * 1024
MAX_IMAGES = 256
RAW_TYPES = ("image/", "application/x-image", "application/dicom", "application/octet-stream")


def _error(status: int, message: str, hint: str) -> JSONResponse:
    return JSONResponse({"error": message, "hint": hint}, status_code=status)


async def read_limited(request: Request, limit: int) -> bytes | None:
    """The request's body, or ``None`` when it is longer than ``limit`` bytes: refused from
    its declared ``Content-Length`` before anything is read, and for a body without one
    (chunked) as soon as it streams past the limit (never more than ``limit`` plus one chunk
    is held)."""
    declared = request.headers.get("content-length", "")
    if declared and (not declared.isdigit() or int(declared) > limit):
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _images_of(body: bytes, content_type: str) -> list[bytes]:
    """The image files in a request body (see the module's docstring).

    Raises:
        MRIMasterError: an unsupported content type, malformed JSON or base64, no image, too
            many images.
    """
    if content_type.startswith("application/json"):
        try:
            doc = json.loads(body)
            items = doc["images"] if "images" in doc else [doc["image"]]
            if not isinstance(items, list) or not items:
                raise ValueError("no image")
            images = [base64.b64decode(x, validate=True) for x in items]
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise MRIMasterError(f"malformed JSON body ({type(exc).__name__}: {exc})",
                                 'send {"images": ["<base64 image file>", ...]}') from exc
    elif content_type.startswith(RAW_TYPES):
        images = [body]
    else:
        raise MRIMasterError(f"unsupported content type {content_type or '(none)'!r}",
                             "send image/png, image/jpeg, application/dicom or "
                             "application/json")
    if len(images) > MAX_IMAGES:
        raise MRIMasterError(f"{len(images)} images in one request (at most {MAX_IMAGES})",
                             "split the batch")
    return images


def predict_bytes(models: ServedModels, images: list[bytes], lock: threading.Lock
                  ) -> list[dict[str, Any]]:
    """Classify image files given as bytes, in one batch; unreadable ones get an error row."""
    rows: list[dict[str, Any] | None] = [None] * len(images)
    with tempfile.TemporaryDirectory(prefix="mrimaster-invoke-") as tmp:
        paths: list[Path] = []
        index: list[int] = []
        for i, data in enumerate(images):
            path = Path(tmp) / f"{i:04d}.png"
            path.write_bytes(data)
            if not data:
                rows[i] = {"status": "error", "reason": "empty image"}
                continue
            if is_dicom(path):
                try:
                    from PIL import Image

                    Image.fromarray(dicom_to_gray(read_dicom(path), f"image {i}")).save(path)
                except MRIMasterError as exc:
                    rows[i] = {"status": "error", "reason": exc.message}
                    continue
            paths.append(path)
            index.append(i)
        with lock:
            found = {Path(p.path).name: p for p in models.classifier.predict(paths)}
        for i, path in zip(index, paths, strict=True):
            p = found.get(path.name)
            rows[i] = ({k: v for k, v in asdict(p).items() if k != "path"} if p else
                       {"status": "error", "reason": "not an image file that can be read "
                        "(JPEG, PNG, DICOM, ...)"})
    return [r for r in rows if r is not None]


def create_sagemaker_app(models: ServedModels) -> FastAPI:
    app = FastAPI(title="MRIMaster (SageMaker inference)", docs_url=None, redoc_url=None)
    lock = threading.Lock()

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"status": "ok", "model": models.version}

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        body = await read_limited(request, MAX_BODY)
        if body is None:
            return _error(413, f"the body is larger than {MAX_BODY // 2**20} MB",
                          "send fewer images per request")
        try:
            images = _images_of(body, request.headers.get("content-type", "").lower())
        except MRIMasterError as exc:
            status = 415 if "content type" in exc.message else 400
            return _error(status, exc.message, exc.hint or "")
        import anyio

        rows = await anyio.to_thread.run_sync(predict_bytes, models, images, lock)
        return JSONResponse({"model": models.version, "runtime": models.classifier.runtime,
                             "predictions": rows})

    return app
