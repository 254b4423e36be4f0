"""What a run records about how it was made (``run.json``), and portable paths in its config.

``run.json`` holds the exact command line, the package version, the git commit (and whether the
tree had uncommitted changes), Python and library versions, and a fingerprint of the data: the
SHA-256 over every file's path (relative to the dataset folder) and content hash. Two runs with
the same record and seed give the same weights on the same kind of machine.
"""

from __future__ import annotations

import hashlib
import platform
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from mrimaster.models.paths import file_sha256

LIBRARIES = ("torch", "torchvision", "numpy", "pillow", "monai", "nibabel", "scipy",
             "onnxruntime", "openvino", "mlflow")


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def version_or_unknown(name: str) -> str:
    """The installed version of package ``name``, or ``unknown``."""
    return _version(name) or "unknown"


def git_state(where: Path) -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the repository holding ``where``; ``None`` outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True, cwd=where).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, check=True, cwd=where).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip())}


def data_fingerprint(folder: Path) -> dict[str, Any]:
    """Number of files under ``folder`` and a SHA-256 over their relative paths and contents."""
    digest = hashlib.sha256()
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    for path in files:
        digest.update(f"{path.relative_to(folder).as_posix()}\0{file_sha256(path)}\n".encode())
    return {"folder": Path(folder).name, "files": len(files), "sha256": digest.hexdigest()}


def run_record(data_dirs: list[Path]) -> dict[str, Any]:
    """The provenance of a run started now by this process (see the module docstring)."""
    return {"command": shlex.join(["mrimaster", *sys.argv[1:]])
            if Path(sys.argv[0]).name == "mrimaster" else shlex.join(sys.argv),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "mrimaster": _version("mrimaster"), "git": git_state(Path(__file__).parent),
            "python": platform.python_version(), "platform": platform.platform(),
            "libraries": {n: v for n in LIBRARIES if (v := _version(n))},
            "data": [data_fingerprint(d) for d in data_dirs if Path(d).is_dir()]}


def portable(path: Path | None, data_root: Path) -> Path | None:
    """``path`` relative to the data root when it lies inside it (a dataset name such as
    ``sartaj-training``), else unchanged: configs saved with runs hold no machine paths for
    data."""
    if path is None:
        return None
    try:
        return Path(path).resolve().relative_to(Path(data_root).resolve())
    except ValueError:
        return Path(path)
