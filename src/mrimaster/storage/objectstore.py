"""A content-addressed object store: each file is kept once, under the SHA-256 of its bytes.

Two back-ends behind one interface (:class:`ObjectStore`), chosen by ``MRIMASTER_STORE_URL``
(:func:`mrimaster.storage.store_url.open_store`):

- :class:`~mrimaster.storage.filestore.FileStore` (default): a local folder,
  ``objects/ab/abcdef...`` (the hash). A file is written to ``tmp/`` and renamed into
  ``objects/`` only when complete and flushed to disk, so a crash never leaves a half-written
  object.
- :class:`~mrimaster.storage.s3store.S3Store` (``s3://bucket/prefix``): objects at
  ``prefix/objects/ab/abcdef...`` in an S3-compatible bucket, each put with server-side
  encryption (AES256); a put is atomic in S3.

Both keep their work files (uploads being received, a segmentation's folder) in a local
``tmp/``. An object is stored before any database row refers to it. What is left in ``tmp/``
and objects no row refers to are removed only by :meth:`ObjectStore.cleanup` (``mrimaster
cleanup``), and only once older than a grace period: never at a process start, when other
processes may be writing.

Only the server's account may read the store: folders are created 0700 and files 0600 (set
when they are created, not afterwards: :mod:`mrimaster.storage.private_files`), and what an
older version left more open is tightened when the store is opened.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from mrimaster.errors import MRIMasterError
from mrimaster.models.paths import file_sha256
from mrimaster.storage.private_files import DIR_MODE, open_private, private_dir

HASH = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1 << 20


class UploadTooLarge(MRIMasterError):
    """An upload exceeded the size limit."""


class ObjectStore:
    """What the app needs of a store: put, read, test and delete objects by SHA-256, list them
    with their age, and local work files in ``tmp/``.

    A subclass stores the objects (:meth:`exists`, :meth:`_put_path`, :meth:`_put_data`,
    :meth:`read`, :meth:`delete`, :meth:`objects_with_times`); this class owns the local work
    folder (``root/tmp``, created 0700) and the clean-up.

    Args:
        root: Local folder of the work files (``tmp/`` under it).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.tmp = self.root / "tmp"
        for folder in (self.root, self.tmp):
            private_dir(folder)

    # -- the objects (a back-end overrides these) ------------------------------------------
    def exists(self, digest: str) -> bool:
        raise NotImplementedError

    def read(self, digest: str) -> bytes:
        raise NotImplementedError

    def delete(self, digest: str) -> None:
        raise NotImplementedError

    def objects_with_times(self) -> Iterator[tuple[str, float]]:
        """Every object as ``(digest, when last written in seconds since the epoch)``."""
        raise NotImplementedError

    def modified(self, digest: str) -> float | None:
        """When ``digest`` was last written (``None``: it is missing)."""
        raise NotImplementedError

    def _put_path(self, src: Path, digest: str) -> None:
        raise NotImplementedError

    def _put_data(self, data: bytes, digest: str) -> None:
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------
    def put_file(self, src: Path) -> str:
        """Store a copy of ``src`` (kept in place); returns its SHA-256. An object that is
        already there is written again (local: its time refreshed), so that a clean-up never
        takes an object an upload is about to refer to."""
        digest = file_sha256(src)
        self._put_path(src, digest)
        return digest

    def put_bytes(self, data: bytes) -> str:
        """Store ``data``; returns its SHA-256."""
        digest = hashlib.sha256(data).hexdigest()
        self._put_data(data, digest)
        return digest

    def all_objects(self) -> list[str]:
        return sorted(d for d, _ in self.objects_with_times())

    @staticmethod
    def check(digest: str) -> str:
        if not HASH.match(digest):
            raise ValueError(f"not a SHA-256 hex digest: {digest!r}")
        return digest

    @contextmanager
    def work_dir(self) -> Iterator[Path]:
        """A temporary local folder in ``tmp/``, removed on exit."""
        path = self.tmp / f"work-{secrets.token_hex(8)}"
        path.mkdir(mode=DIR_MODE)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    @contextmanager
    def temporary(self, suffix: str = "") -> Iterator[Path]:
        """A temporary local file path in ``tmp/``, removed on exit."""
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
            with open_private(dest) as out:
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

    def cleanup(self, referenced: Iterable[str], grace_s: float,
                now: float | None = None) -> tuple[int, int]:
        """Remove work files and unreferenced objects older than ``grace_s`` seconds; returns
        ``(work files removed, objects removed)``.

        Safe beside running processes: an object younger than the grace period is kept
        whatever refers to it (an upload stores its objects before its row), and each object's
        age is read again right before it is deleted (a put refreshes it). The grace period
        must be longer than any upload or job takes (``mrimaster cleanup``: a day).

        Args:
            referenced: Every digest a database row refers to.
            grace_s: Minimum age of what is removed, in seconds.
            now: The current time (seconds since the epoch; tests move it).
        """
        now = time.time() if now is None else now
        cutoff = now - grace_s
        keep = set(referenced)
        work = 0
        for p in list(self.tmp.iterdir()):
            try:
                if p.lstat().st_mtime > cutoff or (p.is_dir() and any(
                        f.stat().st_mtime > cutoff for f in p.rglob("*"))):
                    continue
            except FileNotFoundError:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            work += 1
        objects = 0
        for digest, written in list(self.objects_with_times()):
            if digest in keep or written > cutoff:
                continue
            again = self.modified(digest)  # a put since the listing refreshed it
            if again is None or again > cutoff:
                continue
            self.delete(digest)
            objects += 1
        return work, objects
