"""The building blocks the kinds of non-MRI image share (:mod:`mrimaster.data.non_mri`).

Conversion to ``(H, W)`` uint8 grayscale, a random image size and a random crop of a source
image, the default font and the word list text is drawn from, and scikit-image's sample data.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mrimaster.errors import DataError

WORDS = ["patient", "report", "scan", "the", "of", "and", "image", "brain", "left", "right",
         "total", "invoice", "date", "page", "summary", "figure", "table", "results", "method",
         "data", "value", "mean", "lorem", "ipsum", "dolor", "sit", "amet", "0.52", "2026",
         "mm", "kg", "A4", "ID", "no", "tumour", "class", "score", "model"]


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Min-max scale any array to ``(H, W)`` uint8 0-255 (constant -> mid-gray)."""
    a = np.asarray(img, dtype=np.float64)
    lo, hi = float(a.min()), float(a.max())
    if hi - lo < 1e-9:
        return np.full(a.shape, 128, np.uint8)
    return np.round(255 * (a - lo) / (hi - lo)).astype(np.uint8)


def gray(img: np.ndarray) -> np.ndarray:
    """RGB(A)/bool/float image -> ``(H, W)`` uint8 (ITU-R 601 luma, as Pillow's ``L``)."""
    a = np.asarray(img)
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    if a.ndim == 3:
        a = a[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    if a.dtype != np.uint8:
        return to_uint8(a)
    return a


def random_size(rng: np.random.Generator) -> tuple[int, int]:
    """A random ``(height, width)``, each 160-512 pixels."""
    return int(rng.integers(160, 513)), int(rng.integers(160, 513))


def crop(src: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random crop (20-100 % of each side), flipped/rotated at random."""
    h, w = src.shape
    ch, cw = (max(32, int(s * rng.uniform(0.2, 1.0))) for s in (h, w))
    y, x = int(rng.integers(0, h - min(ch, h) + 1)), int(rng.integers(0, w - min(cw, w) + 1))
    out = src[y:y + ch, x:x + cw]
    return np.rot90(out[:, ::-1] if rng.random() < 0.5 else out, int(rng.integers(4)))


def skimage_data() -> Any:
    """The ``skimage.data`` module (scikit-image's sample images), or a clear error."""
    try:
        import skimage.data as data
    except ModuleNotFoundError as exc:
        raise DataError("the brain-MRI check's negatives need scikit-image's sample images",
                        "pip install scikit-image (a dev dependency)") from exc
    return data
