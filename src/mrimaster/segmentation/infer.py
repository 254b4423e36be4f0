"""Segment a case: sliding-window inference, label map on the input grid, volumes, overlays.

No torch or MONAI here: the model runs in whichever runtime it was loaded for
(:mod:`mrimaster.segmentation.runtime`)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from mrimaster.errors import DataError
from mrimaster.segmentation.cases import Case
from mrimaster.segmentation.labels import REGIONS, regions_to_brats2021
from mrimaster.segmentation.runtime import SegModel
from mrimaster.segmentation.volumes import (
    Volume,
    load_channels_zero_filled,
    restore_to_input_grid,
)

log = logging.getLogger(__name__)


def prepare_inputs(seg: SegModel, case: Case) -> tuple[Volume, list[str]]:
    """Load the model's modalities; zero-fill missing ones if the model tolerates that.

    Returns:
        The volume (channels in the model's order) and the modalities that were missing.

    Raises:
        DataError: a modality is missing and the model was not trained to tolerate it.
    """
    have = set(case.available())
    missing = [m for m in seg.modalities if m not in have]
    if missing and (not seg.modality_dropout or len(missing) == len(seg.modalities)):
        raise DataError(f"case {case.name} lacks {', '.join(missing)}, which this model needs",
                        f"the model takes {', '.join(seg.modalities)}; found "
                        f"{', '.join(case.available()) or 'none'}")
    if missing:
        log.warning("case %s lacks %s: segmenting without it (the model was trained with "
                    "modality dropout; expect lower accuracy)", case.name, ", ".join(missing))
    return load_channels_zero_filled(case, list(seg.modalities)), missing


def predict_regions(seg: SegModel, image: np.ndarray) -> np.ndarray:
    """``(C, D, H, W)`` float32 -> ``(3, D, H, W)`` bool WT/TC/ET (hierarchy enforced)."""
    return clean_regions(seg.logits(image) > 0)


def clean_regions(regions: np.ndarray, keep_fraction: float = 0.1) -> np.ndarray:
    """Enforce ET inside TC inside WT and drop small stray WT components.

    WT components smaller than ``keep_fraction`` of the largest are removed (26-connectivity),
    and TC / ET outside the kept WT with them: isolated false positives far from the tumour
    are what inflate HD95.
    """
    from scipy import ndimage

    out = regions.copy()
    components, n = ndimage.label(out[0], structure=np.ones((3, 3, 3)))
    if n > 1:
        sizes = np.bincount(components.ravel())[1:]
        keep = np.flatnonzero(sizes >= keep_fraction * sizes.max()) + 1
        out[0] = np.isin(components, keep)
    out[1] &= out[0]
    out[2] &= out[1]
    return out


def region_volumes(regions: np.ndarray, voxel_ml: float) -> dict[str, float]:
    """Millilitres per region from ``(3, ...)`` bool masks."""
    return {name: float(regions[i].sum() * voxel_ml) for i, name in enumerate(REGIONS)}


@dataclass
class SegmentResult:
    """What :func:`segment_case` wrote."""

    seg_path: Path
    volumes_ml: dict[str, float]
    missing: list[str]
    pictures: list[Path]


def segment_case(seg: SegModel, case: Case, out_dir: Path) -> SegmentResult:
    """Segment ``case`` and write ``seg.nii.gz`` (BraTS 2021 labels on the input grid),
    ``volumes.json`` (mL per region) and overlay PNGs into ``out_dir``."""
    from mrimaster.segmentation.figures import save_overlays

    volume, missing = prepare_inputs(seg, case)
    regions = predict_regions(seg, volume.image)
    labels = regions_to_brats2021(regions)
    out_dir.mkdir(parents=True, exist_ok=True)
    nifti = restore_to_input_grid(labels, volume)
    seg_path = out_dir / "seg.nii.gz"
    nib.save(nifti, str(seg_path))
    vols = region_volumes(regions, volume.voxel_ml)
    info: dict[str, Any] = {"case": case.name, "volumes_ml": vols,
                            "labels": "BraTS 2021: 1 NCR/NET, 2 edema, 4 enhancing",
                            "modalities_used": [m for m in seg.modalities if m not in missing],
                            "modalities_missing": missing, "runtime": seg.runtime_name}
    (out_dir / "volumes.json").write_text(json.dumps(info, indent=2))
    pictures = save_overlays(volume, regions, out_dir, case.name)
    return SegmentResult(seg_path, vols, missing, pictures)
