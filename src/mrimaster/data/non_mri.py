"""Images that are not brain MRI slices, generated deterministically, by kind.

The negatives of the brain-MRI check (:mod:`mrimaster.trust.brain_check`). Each *kind* is a
generator ``rng -> (H, W) uint8`` grayscale image; the kinds are split between training and a
held-out set the check never sees in training, so that its reject rate is measured on kinds
that are new to it (as a user's wrong upload would be).

Sources, all available offline: synthetic noise, gradients, shapes, patterns and text drawn
by the kinds themselves; scikit-image's bundled sample images (``skimage.data``, a ``dev``
dependency, BSD-3 and public-domain photos, see its ``data/README``) and matplotlib's sample
data (``grace_hopper``, the Jacksboro fault and topobathy elevation models, two more photos).
matplotlib's ``s1045.ima`` is a real MRI head slice: it is *never* a negative (see
:func:`matplotlib_mri_slice`).

The kinds live in :mod:`mrimaster.data.non_mri_training_kinds` and
:mod:`mrimaster.data.non_mri_held_out_kinds`, on the building blocks of
:mod:`mrimaster.data.non_mri_common`; this module names them, splits them and generates.

Every image then goes through :func:`finish`: random inversion and gamma, and in a third of the
cases a head-like ellipse mask on black, so that "a round thing on a black background" is not
enough to look like an MRI slice.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mrimaster.data.non_mri_common import to_uint8
from mrimaster.data.non_mri_held_out_kinds import (
    chart,
    document,
    photo_other,
    rings,
    science,
    terrain,
    texture,
)
from mrimaster.data.non_mri_training_kinds import (
    disk,
    gradient,
    noise,
    pattern,
    photo,
    shapes,
    smooth_noise,
    text,
)
from mrimaster.errors import DataError

Generator = Callable[[np.random.Generator], np.ndarray]

KINDS: dict[str, Generator] = {
    "noise": noise, "smooth_noise": smooth_noise, "gradient": gradient, "shapes": shapes,
    "disk": disk, "pattern": pattern, "text": text, "photo": photo,
    "terrain": terrain, "chart": chart, "document": document, "science": science,
    "texture": texture, "rings": rings, "photo_other": photo_other,
}
"""Every kind of non-MRI image, by name."""

HELD_OUT_KINDS: tuple[str, ...] = ("terrain", "chart", "document", "science", "texture",
                                   "rings", "photo_other")
"""Kinds the shipped check never trained on: its reported reject rate is measured on these."""


def finish(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random inversion (p 0.2) and gamma, and with p 1/3 a head-like ellipse mask on black.

    Args:
        img: ``(H, W)`` uint8.

    Returns:
        ``(H, W)`` uint8.
    """
    a = img.astype(np.float64) / 255
    if rng.random() < 0.2:
        a = 1 - a
    a = a ** rng.uniform(0.6, 1.6)
    if rng.random() < 1 / 3:
        h, w = a.shape
        yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
        ry, rx = rng.uniform(0.3, 0.48, 2)
        a = np.where(((yy - 0.5) / ry) ** 2 + ((xx - 0.5) / rx) ** 2 < 1, a, 0.0)
    return np.round(a * 255).astype(np.uint8)


def generate(kind: str, n: int, seed: int) -> list[np.ndarray]:
    """``n`` images of ``kind``, each ``(H, W)`` uint8, the same for the same ``seed``.

    Raises:
        DataError: an unknown kind.
    """
    if kind not in KINDS:
        raise DataError(f"unknown non-MRI kind {kind!r}", f"choose from {', '.join(KINDS)}")
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, list(KINDS).index(kind), i])
        out.append(finish(KINDS[kind](rng), rng))
    return out


def matplotlib_mri_slice() -> np.ndarray:
    """matplotlib's ``s1045.ima``: a real 256x256 MRI head slice (uint16 big-endian), as
    ``(256, 256)`` uint8 (min-max). A positive, never a negative."""
    from matplotlib import cbook

    data = Path(cbook.get_sample_data("s1045.ima.gz", asfileobj=False)).read_bytes()
    if data[:2] == b"\x1f\x8b":  # the file as stored is gzipped
        data = gzip.decompress(data)
    return to_uint8(np.frombuffer(data, np.dtype(">u2")).reshape(256, 256))
