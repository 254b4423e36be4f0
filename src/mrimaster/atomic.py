"""Files written whole or not at all.

A file another process may read while it is rewritten (a run's ``cv.json``, a model card, the
runtime-check cache, a training checkpoint, a file pulled from S3) is written to a temporary
file beside it and put in place with one ``os.replace``, atomic on one file system: a reader
sees the old file or the new one, never half of one, and a write that fails leaves the old
file as it was and no temporary file behind. A process killed outright can leave a temporary
file; :func:`leftovers` finds them.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

TOKEN_HEX = 12
"""Hex digits of the random part of a temporary name (48 bits: no two writers collide)."""


def temporary_name(path: Path) -> Path:
    """A fresh hidden name beside ``path``: ``.NAME.<12 hex>.tmp``."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:TOKEN_HEX]}.tmp")


def is_temporary(name: str) -> bool:
    """Whether a file name is one :func:`temporary_name` makes."""
    return re.fullmatch(rf"\..+\.[0-9a-f]{{{TOKEN_HEX}}}\.tmp", name) is not None


def leftovers(path: Path) -> list[Path]:
    """Temporary files of ``path`` left by a process killed while writing it."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[0-9a-f]{{{TOKEN_HEX}}}\.tmp")
    if not path.parent.is_dir():
        return []
    return sorted(p for p in path.parent.iterdir() if pattern.fullmatch(p.name))


def discard_leftovers(path: Path) -> None:
    """Delete what :func:`leftovers` finds (before writing ``path`` again)."""
    for stale in leftovers(path):
        stale.unlink(missing_ok=True)


@contextmanager
def replaced_whole(path: Path, *, durable: bool = False) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to; on leaving the block without an
    exception it replaces ``path`` in one step, on an exception it is deleted (as far as it
    can be) and ``path`` keeps its old content.

    Args:
        path: the file to write; its folder must exist.
        durable: flush the temporary file's data to the disk (``fsync``) before the
            replacement, for files whose loss costs hours (checkpoints). The folder is not
            synced: after a power cut the replacement itself may be lost, and the previous
            file comes back whole.

    Yields:
        The temporary file's path (in ``path``'s folder, so the replacement stays on one file
        system).
    """
    tmp = temporary_name(path)
    try:
        yield tmp
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):  # never hide the error (or the interrupt) that got here
            tmp.unlink(missing_ok=True)
        raise


def write_whole(path: Path, content: str | bytes) -> None:
    """Write ``content`` (text as UTF-8) to ``path`` whole or not at all."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    with replaced_whole(path) as tmp:
        tmp.write_bytes(data)
