"""Files and folders only the server's account may read: folders are created 0700
(:func:`private_dir`) and files 0600 (:func:`open_private`), set when they are created, not
afterwards.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

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
