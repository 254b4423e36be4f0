"""A content-addressed file store: each file is kept once, under the SHA-256 of its bytes.

Layout under the root: ``objects/ab/abcdef...`` (the hash) and ``tmp/`` (uploads being
written). A file is written to ``tmp/`` and renamed into ``objects/`` only when complete and
flushed to disk, so a crash never leaves a half-written object; what is left in ``tmp/`` and
objects no database row refers to are removed by :meth:`FileStore.sweep` at start-up.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from mrimaster.errors import MRIMasterError
from mrimaster.models.paths import file_sha256

HASH = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1 << 20


class UploadTooLarge(MRIMasterError):
    """An upload exceeded the size limit."""


class FileStore:
    """Files by SHA-256 under ``root``.

    Args:
        root: Store folder (created).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.tmp = self.root / "tmp"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        """Where the object ``digest`` lives (it may not exist)."""
        if not HASH.match(digest):
            raise ValueError(f"not a SHA-256 hex digest: {digest!r}")
        return self.objects / digest[:2] / digest

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    @contextmanager
    def work_dir(self) -> Iterator[Path]:
        """A temporary folder in the store's ``tmp/``, removed on exit."""
        path = self.tmp / f"work-{secrets.token_hex(8)}"
        path.mkdir()
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    @contextmanager
    def temporary(self, suffix: str = "") -> Iterator[Path]:
        """A temporary file path in the store's ``tmp/``, removed on exit."""
        path = self.tmp / f"{secrets.token_hex(8)}{suffix}"
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    def receive(self, stream: BinaryIO, dest: Path, limit: int) -> int:
        """Copy ``stream`` to ``dest`` (a temporary path), refusing more than ``limit`` bytes.

        Raises:
            UploadTooLarge: the stream is longer than ``limit`` (``dest`` is removed).
        """
        size = 0
        try:
            with open(dest, "wb") as out:
                while chunk := stream.read(CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise UploadTooLarge(
                            f"the upload is larger than the limit of {limit / 1e6:.0f} MB",
                            "upload a smaller file, or raise MRIMASTER_MAX_UPLOAD_MB")
                    out.write(chunk)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        return size

    def put_file(self, src: Path) -> str:
        """Store a copy of ``src`` (kept in place); returns its SHA-256."""
        digest = file_sha256(src)
        if not self.exists(digest):
            with self.temporary() as tmp, open(src, "rb") as f, open(tmp, "wb") as out:
                while chunk := f.read(CHUNK):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
                self._commit(tmp, digest)
        return digest

    def put_bytes(self, data: bytes) -> str:
        """Store ``data``; returns its SHA-256."""
        digest = hashlib.sha256(data).hexdigest()
        if not self.exists(digest):
            with self.temporary() as tmp:
                with open(tmp, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                self._commit(tmp, digest)
        return digest

    def _commit(self, tmp: Path, digest: str) -> None:
        dest = self.path(digest)
        dest.parent.mkdir(exist_ok=True)
        os.replace(tmp, dest)  # atomic on one file system

    def read(self, digest: str) -> bytes:
        return self.path(digest).read_bytes()

    def all_objects(self) -> list[str]:
        return sorted(p.name for p in self.objects.glob("*/*") if HASH.match(p.name))

    def sweep(self, referenced: Iterable[str]) -> int:
        """Remove temporary files and objects not in ``referenced``; returns how many."""
        keep = set(referenced)
        removed = 0
        for p in self.tmp.iterdir():
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed += 1
        for digest in self.all_objects():
            if digest not in keep:
                self.path(digest).unlink(missing_ok=True)
                removed += 1
        return removed
