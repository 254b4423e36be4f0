"""Batched prediction on image files, with the trust fields of every prediction.

No torch here: the classifier runs in whichever runtime it was loaded for."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mrimaster.data.folders import collect_image_paths, load_slices
from mrimaster.inference.runtime import ClassifierModel
from mrimaster.trust.referral import TrustRule, assess


def predict_files(clf: ClassifierModel, inputs: Sequence[Path], batch_size: int = 64,
                  progress: bool = False) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Classify image files and folders (searched recursively).

    Returns:
        ``(rows, skipped)``: one row per decoded image with ``path``, ``status`` (``ok``,
        ``refer``: refer to a radiologist, ``reject``: not a brain MRI slice the model knows),
        ``reason``, ``prediction`` and ``confidence`` (calibrated; ``None`` when rejected: no
        class is shown), ``uncertainty`` (under the model's referral method), ``distance``
        (feature distance to the training images, per dimension; ``None`` when the model has
        no distance check), ``referred`` (status is not ``ok``) and ``p_<class>`` for every
        class (``None`` when rejected); and the files skipped, with the reason.
    """
    paths, skipped = collect_image_paths(inputs)
    slices = load_slices(paths, None, clf.image_size, progress=progress, skipped=skipped)
    rows: list[dict[str, Any]] = []
    skipped_rows = [{"path": str(s.path), "reason": s.reason} for s in slices.skipped]
    if not slices.paths:
        return rows, skipped_rows
    result = assess(clf.runtime, TrustRule.of(clf), slices.images, slices.stats, batch_size)
    for i, path in enumerate(slices.paths):
        p, shown = result.probs[i], result.status[i] != "reject"
        dist = float(result.distance[i])
        row: dict[str, Any] = {
            "path": str(path), "status": result.status[i], "reason": result.reason[i],
            "prediction": clf.classes[int(p.argmax())] if shown else None,
            "confidence": float(p.max()) if shown else None,
            "uncertainty": float(result.uncertainty[i]),
            "distance": None if np.isnan(dist) else dist,
            "referred": result.status[i] != "ok"}
        row.update({f"p_{c}": float(p[k]) if shown else None for k, c in enumerate(clf.classes)})
        rows.append(row)
    return rows, skipped_rows
