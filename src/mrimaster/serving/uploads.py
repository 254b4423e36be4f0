"""Receiving uploaded files into the store's temporary folder, size-limited."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi import UploadFile

from mrimaster.serving.context import AppContext


@contextmanager
def received(ctx: AppContext, upload: UploadFile) -> Iterator[Path]:
    """The upload's bytes in a temporary file (removed afterwards).

    Raises:
        UploadTooLarge: over the configured limit.
    """
    suffix = Path(upload.filename or "").suffix.lower()[:10]
    with ctx.store.temporary(suffix) as tmp:
        ctx.store.receive(upload.file, tmp, ctx.config.max_upload_bytes)
        yield tmp
