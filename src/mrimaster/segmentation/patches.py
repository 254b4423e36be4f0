"""Training patches of ``mrimaster seg train``: a loaded case, patches sampled from it (biased
towards tumour), and the endless stream of augmented batches an epoch draws from."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mrimaster.errors import DataError
from mrimaster.segmentation.augment import PatchAugmenter, context_size
from mrimaster.segmentation.cases import Case
from mrimaster.segmentation.volumes import Volume, load_channels_zero_filled

if TYPE_CHECKING:
    from mrimaster.segmentation.train import SegTrainConfig


@dataclass
class TrainCase:
    """A loaded training case; channels absent from the case are zero and flagged."""

    volume: Volume
    present: np.ndarray  # (C,) bool
    brain_voxels: np.ndarray  # (N, 3) int, where patches may be centred
    tumour_voxels: np.ndarray  # (M, 3) int, WT voxels (empty when WT is unknown)


def load_training_case(case: Case, modalities: list[str], allow_missing: bool,
                       spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> TrainCase:
    """Load ``case``'s ``modalities`` (absent ones zero) and labels at ``spacing`` mm.

    Raises:
        DataError: it has none of them, lacks one while ``allow_missing`` is off, or has no
            label map.
    """
    present = [m for m in modalities if m in case.available()]
    if not present or (len(present) < len(modalities) and not allow_missing):
        raise DataError(f"training case {case.name} lacks "
                        f"{', '.join(sorted(set(modalities) - set(present)))}",
                        "set modality_dropout > 0 to train on cases missing a modality")
    volume = load_channels_zero_filled(case, modalities, spacing=spacing)
    if volume.regions is None:
        raise DataError(f"training case {case.name} has no label map")
    tumour = np.argwhere(volume.regions[0]) if volume.known[0] else np.zeros((0, 3), int)
    return TrainCase(volume, np.array([m in present for m in modalities]),
                     np.argwhere(volume.brain), tumour)


def sample_patch(case: TrainCase, patch: list[int], tumour_fraction: float,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A patch ``(C, *patch)`` image and ``(3, *patch)`` regions, centred on tumour with
    probability ``tumour_fraction`` (else anywhere in the brain); zero-padded at borders."""
    vol = case.volume
    assert vol.regions is not None
    coords = case.tumour_voxels if len(case.tumour_voxels) and \
        rng.random() < tumour_fraction else case.brain_voxels
    centre = coords[rng.integers(len(coords))]
    size = np.array(patch)
    start = centre - size // 2
    img = np.zeros((vol.image.shape[0], *patch), np.float32)
    reg = np.zeros((3, *patch), np.float32)
    src_lo = np.maximum(start, 0)
    src_hi = np.minimum(start + size, vol.image.shape[1:])
    dst_lo = src_lo - start
    dst_hi = dst_lo + (src_hi - src_lo)
    src = tuple(slice(a, b) for a, b in zip(src_lo, src_hi, strict=True))
    dst = tuple(slice(a, b) for a, b in zip(dst_lo, dst_hi, strict=True))
    img[(slice(None), *dst)] = vol.image[(slice(None), *src)]
    reg[(slice(None), *dst)] = vol.regions[(slice(None), *src)]
    return img, reg



Batch = tuple[np.ndarray, np.ndarray, np.ndarray]
"""``(B, C, *patch)`` float32 images, ``(B, 3, *patch)`` float32 region masks, ``(B, 3)``
float32 flags of the regions each patch's labels define."""


def patch_batches(cases: list[TrainCase], cfg: SegTrainConfig, augmenter: PatchAugmenter,
                  rng: np.random.Generator) -> Iterator[Batch]:
    """Endless training batches: ``cfg.batch_size`` cases drawn with replacement, a patch
    sampled from each (:func:`sample_patch`) and augmented, all draws from ``rng``."""
    crop = context_size(cfg.patch) if cfg.augment else cfg.patch
    while True:
        batch = [cases[rng.integers(len(cases))] for _ in range(cfg.batch_size)]
        pairs = [augmenter(*sample_patch(c, crop, cfg.tumour_fraction, rng), c.present,
                           cfg.modality_dropout, rng) for c in batch]
        yield (np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]),
               np.stack([c.volume.known for c in batch]).astype(np.float32))
