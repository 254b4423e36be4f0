"""Train and eval presets: uint8 slices -> normalised 3-channel float tensors.

Slices arrive already cropped to the head and resized (:func:`mrimaster.data.images.prepare_slice`).
The ``mri`` training preset varies what differs between MRI sources: field of view and zoom
(random resized crop), left-right orientation (flip), head tilt (rotation), and contrast,
brightness and gamma (scanner, sequence and windowing differences). The ``shift`` preset adds
what differs between *sources* and would otherwise let a network recognise the source instead of
the tumour: random monotone intensity curves (windowing and sequence contrast), resolution loss,
noise and JPEG re-encoding at random quality. Slices are grayscale and are
replicated to 3 channels with ImageNet mean/std, as ImageNet-pretrained backbones expect.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms import v2

from mrimaster.data.images import IMAGENET_MEAN, IMAGENET_STD, model_input


def normalize(batch: Tensor) -> Tensor:
    """``(B, 1, S, S)`` float in [0, 1] -> ``(B, 3, S, S)`` ImageNet-normalised float32."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
    return (batch.expand(-1, 3, -1, -1) - mean) / std


def eval_batch(images: np.ndarray) -> Tensor:
    """``(B, S, S)`` uint8 -> ``(B, 3, S, S)`` float32 model input (no randomness)."""
    return torch.from_numpy(model_input(images))


class RandomGamma(torch.nn.Module):
    """``x ** gamma`` with log-uniform ``gamma`` in ``[lo, hi]``, for ``x`` in [0, 1]."""

    def __init__(self, lo: float = 0.7, hi: float = 1.5) -> None:
        super().__init__()
        self.lo, self.hi = np.log(lo), np.log(hi)

    def forward(self, x: Tensor) -> Tensor:
        gamma = float(np.exp(torch.empty(1).uniform_(self.lo, self.hi).item()))
        return x.clamp(0, 1).pow(gamma)


def piecewise_linear(x: Tensor, xs: Tensor, ys: Tensor) -> Tensor:
    """The curve through the points ``(xs[i], ys[i])`` (``xs`` sorted, from 0 to 1) at ``x``
    clipped to [0, 1]; same shape as ``x``."""
    flat = x.clamp(0, 1).reshape(-1)
    idx = torch.searchsorted(xs, flat.contiguous(), right=True).clamp(1, len(xs) - 1)
    x0, x1, y0, y1 = xs[idx - 1], xs[idx], ys[idx - 1], ys[idx]
    out = y0 + (flat - x0) * (y1 - y0) / (x1 - x0).clamp_min(1e-6)
    return out.reshape(x.shape)


class RandomIntensityCurve(torch.nn.Module):
    """A random monotone piecewise-linear intensity curve through (0, 0) and (1, 1).

    ``knots`` inner control points have sorted uniform inputs and sorted uniform outputs, so
    dark stays dark (background) but the contrast between tissues changes, as between
    scanners, sequences and windowing choices.
    """

    def __init__(self, knots: int = 3) -> None:
        super().__init__()
        self.knots = knots

    def forward(self, x: Tensor) -> Tensor:
        xs = torch.cat([torch.zeros(1), torch.rand(self.knots).sort().values, torch.ones(1)])
        ys = torch.cat([torch.zeros(1), torch.rand(self.knots).sort().values, torch.ones(1)])
        return piecewise_linear(x, xs, ys)


class RandomTissueContrast(torch.nn.Module):
    """A random *non-monotone* piecewise-linear intensity curve through (0, 0).

    Where :class:`RandomIntensityCurve` keeps the order of tissue intensities, this one may
    reverse it (a lesion bright on FLAIR and T2 is dark on a pre-contrast T1): ``knots`` inner
    control points with sorted uniform inputs in ``[dark, 1]`` and *unsorted* uniform outputs
    in [0, 1]. The curve starts at (0, 0) and rises no faster than ``1 / dark`` there, so the
    background and its JPEG noise stay dark and the head outline is kept. The idea is the
    contrast randomisation of SynthSeg (Billot et al., Medical Image Analysis 86:102789, 2023),
    here without labels: intensity ranges, not tissues, get random values.
    """

    def __init__(self, knots: int = 4, dark: float = 0.1) -> None:
        super().__init__()
        self.knots, self.dark = knots, dark

    def forward(self, x: Tensor) -> Tensor:
        inner = self.dark + (1 - self.dark) * torch.rand(self.knots).sort().values
        xs = torch.cat([torch.zeros(1), inner, torch.ones(1)])
        ys = torch.cat([torch.zeros(1), torch.rand(self.knots + 1)])
        return piecewise_linear(x, xs, ys).clamp(0, 1)


class RandomResolution(torch.nn.Module):
    """Downsample by a random factor in ``[1, max_factor]`` and back (lost resolution)."""

    def __init__(self, max_factor: float = 3.0) -> None:
        super().__init__()
        self.max_factor = max_factor

    def forward(self, x: Tensor) -> Tensor:
        factor = float(torch.empty(1).uniform_(1.0, self.max_factor))
        size = x.shape[-1]
        small = max(int(size / factor), 8)
        low = torch.nn.functional.interpolate(x[None], size=(small, small), mode="area")
        return torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear",
                                               align_corners=False)[0]


class RandomNoise(torch.nn.Module):
    """Additive Gaussian noise with a random sigma in ``[0, max_sigma]``, clipped to [0, 1]."""

    def __init__(self, max_sigma: float = 0.06) -> None:
        super().__init__()
        self.max_sigma = max_sigma

    def forward(self, x: Tensor) -> Tensor:
        sigma = float(torch.empty(1).uniform_(0, self.max_sigma))
        return (x + sigma * torch.randn_like(x)).clamp(0, 1)


class RandomJPEG(torch.nn.Module):
    """Re-encode a ``(1, S, S)`` uint8 image as JPEG at a random quality in ``[lo, hi]``."""

    def __init__(self, lo: int = 25, hi: int = 95) -> None:
        super().__init__()
        self.lo, self.hi = lo, hi

    def forward(self, x: Tensor) -> Tensor:
        quality = int(torch.randint(self.lo, self.hi + 1, (1,)))
        buf = io.BytesIO()
        Image.fromarray(x[0].numpy()).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        return torch.from_numpy(np.asarray(Image.open(buf).convert("L")).copy())[None]


AUGMENT_PRESETS: tuple[str, ...] = ("shift", "shift-contrast", "mri", "seed", "none")


def train_transform(preset: str, size: int) -> v2.Transform:
    """Per-image random transform: ``(1, S, S)`` uint8 -> ``(1, size, size)`` float in [0, 1]."""
    steps: list[v2.Transform] = []
    if preset in ("shift", "shift-contrast"):
        steps += [v2.RandomApply([RandomJPEG()], p=0.3),
                  v2.RandomResizedCrop(size, scale=(0.65, 1.0), ratio=(0.85, 1.15),
                                       antialias=True),
                  v2.RandomHorizontalFlip(),
                  v2.RandomApply([v2.RandomRotation(20)], p=0.7),
                  v2.ToDtype(torch.float32, scale=True)]
        if preset == "shift-contrast":
            steps.append(v2.RandomApply([RandomTissueContrast()], p=0.3))
        steps += [v2.RandomApply([RandomIntensityCurve()], p=0.6),
                  v2.RandomApply([v2.ColorJitter(brightness=0.3, contrast=0.3)], p=0.8),
                  v2.RandomApply([RandomGamma(0.6, 1.7)], p=0.5),
                  v2.RandomApply([RandomResolution()], p=0.3),
                  v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 1.5))], p=0.2),
                  v2.RandomApply([RandomNoise()], p=0.3)]
    elif preset == "mri":
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


def augmented_views(images: np.ndarray, preset: str, draws: int, seed: int = 0) -> np.ndarray:
    """``draws`` randomly augmented copies of each slice, as the model's input slices.

    Args:
        images: ``(N, S, S)`` uint8 preprocessed slices.
        preset: One of :data:`AUGMENT_PRESETS` (at size ``S``).
        draws: Copies per slice.
        seed: Seed of the augmentation's random draws (the same views every call).

    Returns:
        ``(draws * N, S, S)`` uint8: the first ``N`` are the first draw of every slice.
    """
    transform = train_transform(preset, int(images.shape[-1]))
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        views = [(transform(torch.from_numpy(np.ascontiguousarray(im))[None])[0]
                  .clamp(0, 1) * 255).round().to(torch.uint8).numpy()
                 for _ in range(draws) for im in images]
    finally:
        torch.random.set_rng_state(state)
    return np.stack(views) if views else np.zeros((0, *images.shape[1:]), np.uint8)
