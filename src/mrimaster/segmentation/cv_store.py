"""What a cross-validation run folder keeps between runs of ``mrimaster seg cv``: the fold
models' patch grid and fingerprints, so that a table (``cv.json``) is kept only while it
describes exactly the fold models, grid and data a new run would score."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def fold_fingerprints(folders: list[Path]) -> dict[str, str]:
    """SHA-256 (first 16 hex digits) of each fold's ``model.pt``, as scored."""
    return {f.name: hashlib.sha256((f / "model.pt").read_bytes()).hexdigest()[:16]
            for f in folders}


def record_grid(folders: list[Path], grid: str) -> None:
    """Give every fold model the recipe's patch grid (one trained before the grid was
    recorded, or a rerun with another ``grid``): the folds are scored, and later run, on it,
    and the re-saved file's fingerprint no longer matches a table scored on another grid."""
    from mrimaster.segmentation.model import load_segmenter, save_segmenter

    for folder in folders:
        seg = load_segmenter(folder / "model.pt")
        if seg.grid != grid:
            seg.grid = grid
            save_segmenter(folder / "model.pt", seg)


def scored_earlier(run_dir: Path, folders: list[Path], scored_on: dict[str, str]
                   ) -> dict[str, Any] | None:
    """``cv.json``'s results when it scored exactly these fold models on this grid and data
    (a run interrupted while training the final model resumes without segmenting the
    held-out cases again), else None: no table yet, an unreadable one, one written before
    fingerprints were recorded, a fold trained since, another grid or other data."""
    path = run_dir / "cv.json"
    try:
        results: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    same = results.get("fold_models") == fold_fingerprints(folders) and \
        results.get("scored_on") == scored_on
    return results if same else None
