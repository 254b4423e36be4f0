"""A content-addressed file store: each file is kept once, under the SHA-256 of its bytes.

Layout under the root: ``objects/ab/abcdef...`` (the hash) and ``tmp/`` (uploads being
written). A file is written to ``tmp/`` and renamed into ``objects/`` only when complete and
flushed to disk, so a crash never leaves a half-written object; what is left in ``tmp/`` and
objects no database row refers to are removed by :meth:`FileStore.sweep` at start-up.

Only the server's account may read the store: folders are created 0700 and files 0600 (set
when they are created, not afterwards), and what an older version left more open is
tightened when the store is opened.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from mrimaster.errors import MRIMasterError
from mrimaster.models.paths import file_sha256

HASH = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1 << 20
DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) if needed and make it 0700; returns it."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, DIR_MODE)
    return path


def open_private(path: Path) -> BinaryIO:
    """``path`` opened for writing (truncated), created 0600 (never readable by others, not
    even for a moment)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    os.fchmod(fd, FILE_MODE)  # an existing file keeps its mode in os.open
    return os.fdopen(fd, "wb")


class UploadTooLarge(MRIMasterError):
    """An upload exceeded the size limit."""


class FileStore:
    """Files by SHA-256 under ``root``.

    Args:
        root: Store folder (created 0700; existing folders and objects are tightened to
            0700 and 0600).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.tmp = self.root / "tmp"
        for folder in (self.root, self.objects, self.tmp):
            private_dir(folder)
        self.tighten()

    def tighten(self) -> int:
        """Make every folder of the store 0700 and every object 0600; returns how many
        modes were changed."""
        changed = 0
        for folder, dirs, names in os.walk(self.root):
            for name, mode in [*((d, DIR_MODE) for d in dirs), *((n, FILE_MODE) for n in names)]:
                p = os.path.join(folder, name)
                st = os.lstat(p)
                if not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) != mode:
                    os.chmod(p, mode)
                    changed += 1
        return changed

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
        path.mkdir(mode=DIR_MODE)
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

    def put_file(self, src: Path) -> str:
        """Store a copy of ``src`` (kept in place); returns its SHA-256."""
        digest = file_sha256(src)
        if not self.exists(digest):
            with self.temporary() as tmp, open(src, "rb") as f, open_private(tmp) as out:
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
                with open_private(tmp) as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                self._commit(tmp, digest)
        return digest

    def _commit(self, tmp: Path, digest: str) -> None:
        dest = self.path(digest)
        dest.parent.mkdir(mode=DIR_MODE, exist_ok=True)
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
