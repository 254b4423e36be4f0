"""The local-folder back-end of the object store: :class:`FileStore` (alias
:data:`LocalStore`), objects by SHA-256 under ``root/objects/ab/<digest>``, each written to
``tmp/`` and renamed into place once complete and flushed to disk.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from mrimaster.storage.objectstore import CHUNK, HASH, ObjectStore
from mrimaster.storage.private_files import DIR_MODE, FILE_MODE, open_private, private_dir

log = logging.getLogger(__name__)


class FileStore(ObjectStore):
    """Objects by SHA-256 in a local folder: ``root/objects/ab/<digest>``.

    Args:
        root: Store folder (created 0700; existing folders and objects are tightened to
            0700 and 0600).
    """

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.objects = private_dir(self.root / "objects")
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
        self.check(digest)
        return self.objects / digest[:2] / digest

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def read(self, digest: str) -> bytes:
        return self.path(digest).read_bytes()

    def delete(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    def modified(self, digest: str) -> float | None:
        try:
            return self.path(digest).stat().st_mtime
        except FileNotFoundError:
            return None

    def objects_with_times(self) -> Iterator[tuple[str, float]]:
        for p in self.objects.glob("*/*"):
            if HASH.match(p.name):
                try:
                    yield p.name, p.stat().st_mtime
                except FileNotFoundError:
                    continue

    def _refresh(self, digest: str) -> bool:
        """Mark an existing object as just written; ``False``: it is missing."""
        try:
            os.utime(self.path(digest))
            return True
        except FileNotFoundError:
            return False

    def _put_path(self, src: Path, digest: str) -> None:
        if self._refresh(digest):
            return
        with self.temporary() as tmp, open(src, "rb") as f, open_private(tmp) as out:
            while chunk := f.read(CHUNK):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
            self._commit(tmp, digest)

    def _put_data(self, data: bytes, digest: str) -> None:
        if self._refresh(digest):
            return
        with self.temporary() as tmp:
            with open_private(tmp) as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            self._commit(tmp, digest)

    def _commit(self, tmp: Path, digest: str) -> None:
        dest = self.path(digest)
        dest.parent.mkdir(mode=DIR_MODE, exist_ok=True)
        os.replace(tmp, dest)  # atomic on one file system


LocalStore = FileStore
"""The local-folder back-end (``FileStore`` is its historical name)."""
