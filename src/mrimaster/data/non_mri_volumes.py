"""3D volumes that are not brain MRI, generated deterministically, by kind: what the 3D
brain-MRI check (:mod:`mrimaster.trust.volume_check`) must refuse, for its tests and its
benchmark (``benchmarks/eval_volume_check.py``). None of them trained anything: the check is the
2D one, trained on slices.

Each kind is ``rng -> ((X, Y, Z) float32, spacing mm)``, about the size of a head scan:

- ``ct_head``: a CT-like head, Hounsfield units (air -1000, a 6 mm skull of bone at +1000, a
  soft-tissue inside at 40 with noise);
- ``smooth_noise``: Gaussian-smoothed noise (blobs);
- ``uniform_noise``: white noise;
- ``checkerboard``: 3D blocks of two values;
- ``spheres``: bright balls of several sizes on black;
- ``photo_stack``: scikit-image's camera photo repeated along the third axis, with a drift.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from mrimaster.errors import DataError

SHAPE = (160, 192, 160)
Volume = tuple[np.ndarray, tuple[float, float, float]]
VolumeGenerator = Callable[[np.random.Generator], Volume]
ISO: tuple[float, float, float] = (1.0, 1.0, 1.0)


def _radius(shape: tuple[int, ...], radii: tuple[float, ...]) -> np.ndarray:
    """Normalised ellipsoidal radius about the centre (1 at the ellipsoid's surface)."""
    grid = np.indices(shape, dtype=np.float32)
    return np.sqrt(sum(((g - (n - 1) / 2) / r) ** 2
                       for g, n, r in zip(grid, shape, radii, strict=True)))


def ct_head(rng: np.random.Generator) -> Volume:
    r = _radius(SHAPE, (70.0, 85.0, 70.0))
    ct = np.full(SHAPE, -1000.0, np.float32)
    ct[r < 1.0] = 1000.0
    inside = r < 0.92
    ct[inside] = 40.0 + rng.normal(0, 5, int(inside.sum()))
    return ct, ISO


def smooth_noise(rng: np.random.Generator) -> Volume:
    blobs = ndimage.gaussian_filter(rng.normal(0, 1, SHAPE).astype(np.float32), 6)
    return (blobs - blobs.min()) * 1000.0, ISO


def uniform_noise(rng: np.random.Generator) -> Volume:
    return rng.uniform(0, 1000, SHAPE).astype(np.float32), ISO


def checkerboard(rng: np.random.Generator) -> Volume:
    size = int(rng.integers(8, 24))
    grid = (np.indices(SHAPE) // size).sum(axis=0)
    return (200.0 + 600.0 * (grid % 2)).astype(np.float32), ISO


def spheres(rng: np.random.Generator) -> Volume:
    out = np.zeros(SHAPE, np.float32)
    grid = np.indices(SHAPE, dtype=np.float32)
    for _ in range(int(rng.integers(4, 9))):
        centre = rng.uniform(20, np.asarray(SHAPE) - 20)
        radius = rng.uniform(6, 30)
        d2 = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
        out[d2 < radius ** 2] = rng.uniform(300, 1000)
    return out, ISO


def photo_stack(rng: np.random.Generator) -> Volume:
    from skimage import data

    photo = data.camera().astype(np.float32)
    slices = [np.roll(photo, int(k), axis=1) for k in np.linspace(0, 20, 40)]
    return np.stack(slices, axis=-1), (0.9, 0.9, 4.0)


KINDS: dict[str, VolumeGenerator] = {
    "ct_head": ct_head, "smooth_noise": smooth_noise, "uniform_noise": uniform_noise,
    "checkerboard": checkerboard, "spheres": spheres, "photo_stack": photo_stack,
}
"""Every kind of non-MRI volume, by name."""


def generate(kind: str, seed: int) -> Volume:
    """One volume of ``kind`` (see the module docstring) and its voxel size in mm.

    Raises:
        DataError: an unknown kind.
    """
    if kind not in KINDS:
        raise DataError(f"unknown non-MRI volume kind {kind!r}; kinds: {', '.join(KINDS)}")
    return KINDS[kind](np.random.default_rng(seed))
