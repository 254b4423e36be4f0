"""Unpacking a study zip safely: judged by its total size and entry count, not by one entry's
compression ratio (one mostly-air MRI slice compresses 300-400 times; a zip bomb is caught by
the total it declares, and by each entry being cut off once it outgrows its declared size)."""

from __future__ import annotations

import re
import stat
import zipfile
from pathlib import Path, PurePosixPath

from mrimaster.errors import DataError

MAX_BYTES = 4_000_000_000
"""Default cap on a zip's total uncompressed size (a whole MRI study is a few hundred MB)."""
MAX_ENTRIES = 20_000
"""Default cap on a zip's entries (a study of thin-slice series has a few thousand files)."""


def extract_zip(archive: Path, dest: Path, max_bytes: int = MAX_BYTES,
                max_entries: int = MAX_ENTRIES) -> list[Path]:
    """Extract the regular files of ``archive`` into ``dest``; returns their paths.

    Raises:
        DataError: not a readable zip, more than ``max_entries`` entries, more than
            ``max_bytes`` uncompressed in all, an entry whose path escapes ``dest`` or is a
            link, an entry longer than it declares, or one that cannot be extracted.
    """
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{archive.name} is not a readable zip file ({exc})",
                        "zip the DICOM folder again, or give the folder itself") from exc
    root = dest.resolve()
    root.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    with zf:
        infos = zf.infolist()
        if len(infos) > max_entries:
            raise DataError(f"the zip holds {len(infos):,} entries (at most {max_entries:,})",
                            "import one study at a time, or raise the entry limit")
        total = sum(i.file_size for i in infos)
        if total > max_bytes:
            raise DataError(f"the zip unpacks to {total / 1e6:,.0f} MB (at most "
                            f"{max_bytes / 1e6:,.0f} MB)",
                            "import one study at a time, or raise the size limit")
        for info in infos:
            name = info.filename
            parts = PurePosixPath(name.replace("\\", "/")).parts
            target = (root / Path(*parts)).resolve() if parts else root
            if (name.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", name)
                    or not target.is_relative_to(root)):
                raise DataError(f"the zip entry {name!r} points outside its folder",
                                "zip the study folder itself, without '..' or absolute paths")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise DataError(f"the zip entry {name!r} is a link", "zip the files themselves")
            if info.is_dir():
                continue
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as dst:
                    copied = 0
                    while chunk := src.read(1 << 20):  # in chunks: no entry held in memory
                        copied += len(chunk)
                        if copied > info.file_size:
                            raise DataError(f"the zip entry {name!r} is longer than declared",
                                            "zip the study again")
                        dst.write(chunk)
            except (RuntimeError, NotImplementedError, zipfile.BadZipFile, OSError,
                    EOFError) as exc:  # encrypted, Deflate64, CRC error, clashing names
                raise DataError(f"the zip entry {name!r} cannot be extracted "
                                f"({type(exc).__name__}: {exc})",
                                "zip the study again without encryption (plain Deflate)") from exc
            out.append(target)
    return out
