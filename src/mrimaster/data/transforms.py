"""Train and eval presets: uint8 slices -> normalised 3-channel float tensors.

Slices arrive already cropped to the head and resized (:func:`mrimaster.data.images.prepare_slice`).
The ``mri`` training preset varies what differs between MRI sources: field of view and zoom
(random resized crop), left-right orientation (flip), head tilt (rotation), and contrast,
brightness and gamma (scanner, sequence and windowing differences). Slices are grayscale and are
replicated to 3 channels with ImageNet mean/std, as ImageNet-pretrained backbones expect.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(batch: Tensor) -> Tensor:
    """``(B, 1, S, S)`` float in [0, 1] -> ``(B, 3, S, S)`` ImageNet-normalised float32."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
    return (batch.expand(-1, 3, -1, -1) - mean) / std


def eval_batch(images: np.ndarray) -> Tensor:
    """``(B, S, S)`` uint8 -> ``(B, 3, S, S)`` float32 model input (no randomness)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1).float().div_(255.0)
    return normalize(x)


class RandomGamma(torch.nn.Module):
    """``x ** gamma`` with log-uniform ``gamma`` in ``[lo, hi]``, for ``x`` in [0, 1]."""

    def __init__(self, lo: float = 0.7, hi: float = 1.5) -> None:
        super().__init__()
        self.lo, self.hi = np.log(lo), np.log(hi)

    def forward(self, x: Tensor) -> Tensor:
        gamma = float(np.exp(torch.empty(1).uniform_(self.lo, self.hi).item()))
        return x.clamp(0, 1).pow(gamma)


def train_transform(preset: str, size: int) -> v2.Transform:
    """Per-image random transform: ``(1, S, S)`` uint8 -> ``(1, size, size)`` float in [0, 1]."""
    steps: list[v2.Transform] = []
    if preset == "mri":
        steps += [v2.RandomResizedCrop(size, scale=(0.75, 1.0), ratio=(0.9, 1.1), antialias=True),
                  v2.RandomHorizontalFlip(),
                  v2.RandomApply([v2.RandomRotation(15)], p=0.7),
                  v2.ToDtype(torch.float32, scale=True),
                  v2.RandomApply([v2.ColorJitter(brightness=0.25, contrast=0.25)], p=0.8),
                  v2.RandomApply([RandomGamma()], p=0.5),
                  v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 1.2))], p=0.2)]
    elif preset == "seed":
        steps += [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(), v2.RandomRotation(20),
                  v2.ToDtype(torch.float32, scale=True)]
    else:
        steps += [v2.ToDtype(torch.float32, scale=True)]
    return v2.Compose(steps)


class SliceDataset(torch.utils.data.Dataset[tuple[Tensor, int]]):
    """Cached uint8 slices with labels, randomly transformed on access.

    Items are ``((1, S, S) float32 in [0, 1], class index)``; :func:`normalize` is applied per
    batch by the training loop.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: v2.Transform) -> None:
        self.images = torch.from_numpy(images)
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, idx: int) -> tuple[Tensor, int]:
        return self.transform(self.images[idx].unsqueeze(0)), int(self.labels[idx])
