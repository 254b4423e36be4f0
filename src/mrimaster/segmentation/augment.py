"""Training-time augmentation of 3D patches, after nnU-Net's default scheme (Isensee et al.,
"nnU-Net", Nature Methods 18:203-211, 2021, supplementary note 4), with MONAI's transforms.

Spatial steps move the image and the region masks together (image trilinear, masks
nearest-neighbour): rotation, scaling, elastic deformation, mirroring. Intensity steps touch
the image only: gamma, brightness, Gaussian noise, simulated low resolution, and modality
dropout (blanking present channels so that the network learns to work without them). Voxels
outside the brain stay 0 (the z-scored background the network sees at inference).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai import transforms as T

CONTEXT = 1.25
"""A patch is cut from a crop this much larger, so that rotated or scaled patches keep real
image at their corners."""


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges; nnU-Net's defaults where it has one.

    Attributes:
        p_spatial: Probability of a rotation + scaling (± ``rotation_deg`` per axis, scale in
            ``1 ± scale``).
        p_elastic: Probability that the spatial step is also an elastic deformation.
        p_gamma: Probability of a gamma change (γ in ``gamma``) per patch.
        p_brightness: Probability of a per-channel multiplicative change in [0.75, 1.25].
        p_noise: Probability of additive Gaussian noise (std up to 0.1 of a z-score unit).
        p_lowres: Probability of simulating a coarser acquisition (downsampled by a factor in
            [0.5, 1], nearest, then back up, trilinear).
        p_mirror: Probability of a mirror per axis.
    """

    rotation_deg: float = 30.0
    scale: float = 0.3
    p_spatial: float = 0.2
    p_elastic: float = 0.25
    gamma: tuple[float, float] = (0.7, 1.5)
    p_gamma: float = 0.3
    p_brightness: float = 0.15
    p_noise: float = 0.1
    p_lowres: float = 0.25
    p_mirror: float = 0.5


def context_size(patch: list[int]) -> list[int]:
    """Size of the crop a ``patch`` is augmented from (:data:`CONTEXT` times, even)."""
    return [int(np.ceil(p * CONTEXT / 2) * 2) for p in patch]


class PatchAugmenter:
    """Turns a context crop into an augmented training patch.

    Args:
        patch: Output patch size ``(d, h, w)``.
        cfg: Probabilities and ranges.
        seed: Seed of MONAI's random states (the caller's ``rng`` decides which steps run).
    """

    def __init__(self, patch: list[int], cfg: AugmentConfig | None = None, seed: int = 0):
        self.patch = list(patch)
        self.cfg = cfg or AugmentConfig()
        rot = np.deg2rad(self.cfg.rotation_deg)
        size = (patch[0], patch[1], patch[2])
        self.affine = T.RandAffined(
            keys=["image", "label"], prob=1.0, rotate_range=(rot,) * 3,
            scale_range=(self.cfg.scale,) * 3, spatial_size=size,
            mode=("bilinear", "nearest"), padding_mode="zeros")
        self.elastic = T.Rand3DElasticd(
            keys=["image", "label"], sigma_range=(5, 8), magnitude_range=(50, 150), prob=1.0,
            rotate_range=(rot,) * 3, scale_range=(self.cfg.scale,) * 3, spatial_size=size,
            mode=("bilinear", "nearest"), padding_mode="zeros")
        self.gamma = T.RandAdjustContrastd(keys=["image"], prob=1.0, gamma=self.cfg.gamma)
        self.lowres = T.RandSimulateLowResolutiond(keys=["image"], prob=1.0,
                                                   zoom_range=(0.5, 1.0))
        for i, t in enumerate((self.affine, self.elastic, self.gamma, self.lowres)):
            t.set_random_state(seed + i)

    def __call__(self, img: np.ndarray, reg: np.ndarray, present: np.ndarray,
                 dropout: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Augment one crop.

        Args:
            img: ``(C, *context)`` float32 z-scored image crop (0 outside the brain).
            reg: ``(3, *context)`` float32 {0, 1} WT/TC/ET masks.
            present: ``(C,)`` bool, channels the case really has.
            dropout: Probability of blanking each present channel (at least one is kept).
            rng: Decides which steps run and the NumPy-side draws.

        Returns:
            ``(C, *patch)`` float32 image and ``(3, *patch)`` float32 masks.
        """
        cfg = self.cfg
        if rng.random() < cfg.p_spatial:
            sample: dict[Hashable, Any] = {"image": torch.from_numpy(img),
                                           "label": torch.from_numpy(reg)}
            moved = (self.elastic if rng.random() < cfg.p_elastic else self.affine)(sample)
            image, label = np.asarray(moved["image"]), np.asarray(moved["label"])
        else:
            lo = [(c - p) // 2 for c, p in zip(img.shape[1:], self.patch, strict=True)]
            sl = tuple(slice(a, a + p) for a, p in zip(lo, self.patch, strict=True))
            image, label = img[(slice(None), *sl)], reg[(slice(None), *sl)]
        for axis in (1, 2, 3):
            if rng.random() < cfg.p_mirror:
                image, label = np.flip(image, axis), np.flip(label, axis)
        image = np.ascontiguousarray(image, np.float32)
        background = ~(image != 0).any(axis=0)
        if rng.random() < cfg.p_gamma:
            image = np.asarray(self.gamma({"image": torch.from_numpy(image)})["image"])
        if rng.random() < cfg.p_brightness:
            image = image * rng.uniform(0.75, 1.25, (image.shape[0], 1, 1, 1))
        if rng.random() < cfg.p_noise:
            image = image + rng.normal(0, rng.uniform(0, 0.1), image.shape)
        if rng.random() < cfg.p_lowres:
            image = np.asarray(self.lowres({"image": torch.from_numpy(
                np.ascontiguousarray(image, np.float32))})["image"])
        keep = present.copy()
        if dropout > 0:
            drop = (rng.random(len(keep)) < dropout) & keep
            if drop.sum() < keep.sum():  # keep at least one present channel
                keep &= ~drop
        image = np.where(background, 0, image) * keep[:, None, None, None]
        return np.ascontiguousarray(image, np.float32), \
            np.ascontiguousarray(label, np.float32)
