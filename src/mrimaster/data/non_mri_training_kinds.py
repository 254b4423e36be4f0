"""The kinds of non-MRI image the brain-MRI check trains on.

Synthetic noise, smooth noise, gradients, shapes, disks, patterns and text, drawn here, and
crops of scikit-image's photos and drawings. Each is a generator ``rng -> (H, W) uint8``,
registered by name in :mod:`mrimaster.data.non_mri`.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from mrimaster.data.non_mri_common import (
    WORDS,
    crop,
    gray,
    random_size,
    skimage_data,
    to_uint8,
)
from mrimaster.imaging.panels import default_font


def noise(rng: np.random.Generator) -> np.ndarray:
    """Uniform, Gaussian, salt-and-pepper, exponential (speckle) or Poisson noise."""
    shape = random_size(rng)
    pick = int(rng.integers(5))
    if pick == 0:
        a = rng.uniform(0, 1, shape)
    elif pick == 1:
        a = rng.normal(rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.3), shape)
    elif pick == 2:
        a = (rng.random(shape) < rng.uniform(0.05, 0.6)).astype(float)
    elif pick == 3:
        a = rng.exponential(1.0, shape)
    else:
        a = rng.poisson(rng.uniform(1, 30), shape).astype(float)
    if rng.random() < 0.3:
        a = ndimage.gaussian_filter(a, rng.uniform(0.5, 1.5))
    return to_uint8(np.clip(a, np.percentile(a, 0.5), np.percentile(a, 99.5)))


def smooth_noise(rng: np.random.Generator) -> np.ndarray:
    """Gaussian-blurred noise ("clouds"), sometimes thresholded into blobs."""
    a = ndimage.gaussian_filter(rng.normal(size=random_size(rng)), rng.uniform(2, 30))
    if rng.random() < 0.3:
        a = (a > np.percentile(a, rng.uniform(20, 80))).astype(float)
    return to_uint8(a)


def gradient(rng: np.random.Generator) -> np.ndarray:
    """A linear gradient at a random angle, or a bilinear one between four corner values."""
    h, w = random_size(rng)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    if rng.random() < 0.7:
        t = rng.uniform(0, 2 * np.pi)
        a = np.cos(t) * xx + np.sin(t) * yy
    else:
        c = rng.uniform(0, 1, 4)
        a = (c[0] * (1 - yy) * (1 - xx) + c[1] * (1 - yy) * xx + c[2] * yy * (1 - xx)
             + c[3] * yy * xx)
    a = to_uint8(a).astype(float) / 255
    a = a ** rng.uniform(0.4, 2.5)
    if rng.random() < 0.3:
        a = np.floor(a * rng.integers(3, 10)) / 10
    return to_uint8(a * rng.uniform(0.3, 1) + rng.uniform(0, 0.3))


def shapes(rng: np.random.Generator) -> np.ndarray:
    """Random filled rectangles, ellipses, polygons and lines on a random background."""
    h, w = random_size(rng)
    im = Image.new("L", (w, h), int(rng.integers(0, 256)))
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(2, 25))):
        x0, x1 = sorted(rng.integers(0, w, 2))
        y0, y1 = sorted(rng.integers(0, h, 2))
        fill = int(rng.integers(0, 256))
        pick = int(rng.integers(4))
        if pick == 0:
            draw.rectangle((x0, y0, x1, y1), fill=fill)
        elif pick == 1:
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        elif pick == 2:
            pts = [(int(rng.integers(0, w)), int(rng.integers(0, h))) for _ in range(5)]
            draw.polygon(pts, fill=fill)
        else:
            draw.line((x0, y0, x1, y1), fill=fill, width=int(rng.integers(1, 12)))
    return np.asarray(im)


def disk(rng: np.random.Generator) -> np.ndarray:
    """One disk or ellipse on a dark background: flat, shaded, noisy or with blobs inside."""
    h, w = random_size(rng)
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    cy, cx = h * rng.uniform(0.35, 0.65), w * rng.uniform(0.35, 0.65)
    ry, rx = h * rng.uniform(0.15, 0.48), w * rng.uniform(0.15, 0.48)
    r = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
    pick = int(rng.integers(5))
    if pick == 0:
        inside = np.full((h, w), rng.uniform(0.3, 1.0))
    elif pick == 1:
        inside = 1 - r * rng.uniform(0.2, 0.9)
    elif pick == 2:
        inside = rng.uniform(0.3, 0.7) + rng.normal(0, rng.uniform(0.02, 0.2), (h, w))
    elif pick == 3:
        inside = 0.5 + ndimage.gaussian_filter(rng.normal(size=(h, w)), rng.uniform(3, 20)) * 8
    else:
        inside = np.full((h, w), 0.5)
        for _ in range(int(rng.integers(1, 6))):
            by, bx = cy + ry * rng.uniform(-0.6, 0.6), cx + rx * rng.uniform(-0.6, 0.6)
            rad = min(ry, rx) * rng.uniform(0.05, 0.3)
            inside = np.where((yy - by) ** 2 + (xx - bx) ** 2 < rad ** 2, rng.uniform(0, 1), inside)
    ring = ((r < 1) & (r > 1 - rng.uniform(0, 0.15)) if rng.random() < 0.4
            else np.zeros_like(r, bool))
    a = np.where(r < 1, np.clip(inside, 0, 1), rng.uniform(0, 0.04))
    a = np.where(ring, rng.uniform(0.6, 1), a)
    return (np.clip(a, 0, 1) * 255).astype(np.uint8)


def pattern(rng: np.random.Generator) -> np.ndarray:
    """Checkerboards, stripes (square or sine gratings at any angle), grids and dot lattices."""
    h, w = random_size(rng)
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    period = rng.uniform(4, 80)
    t = rng.uniform(0, np.pi)
    u, v = np.cos(t) * xx + np.sin(t) * yy, -np.sin(t) * xx + np.cos(t) * yy
    pick = int(rng.integers(4))
    if pick == 0:
        a = ((u // period + v // period) % 2).astype(float)
    elif pick == 1:
        a = np.sin(2 * np.pi * u / period)
        a = np.sign(a) if rng.random() < 0.5 else a
    elif pick == 2:
        a = ((u % period < period * 0.15) | (v % period < period * 0.15)).astype(float)
    else:
        a = (((u % period) - period / 2) ** 2 + ((v % period) - period / 2) ** 2
             < (period * rng.uniform(0.1, 0.45)) ** 2).astype(float)
    return to_uint8(a * rng.uniform(0.3, 1) + rng.uniform(0, 0.5))


def text(rng: np.random.Generator) -> np.ndarray:
    """Random words in the default font, on a light or dark background."""
    h, w = random_size(rng)
    dark = rng.random() < 0.4
    im = Image.new("L", (w, h), int(rng.integers(0, 60) if dark else rng.integers(190, 256)))
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(3, 30))):
        words = " ".join(rng.choice(WORDS, int(rng.integers(1, 6))))
        draw.text((int(rng.integers(-20, w)), int(rng.integers(-10, h))), words,
                  fill=int(rng.integers(180, 256) if dark else rng.integers(0, 90)),
                  font=default_font(int(rng.integers(8, 48))))
    return np.asarray(im)


@lru_cache(maxsize=1)
def _skimage_photos() -> tuple[np.ndarray, ...]:
    data = skimage_data()
    names = ("camera", "astronaut", "coffee", "chelsea", "rocket", "coins", "moon", "clock",
             "horse", "colorwheel", "logo", "binary_blobs", "shepp_logan_phantom", "cat")
    photos = [gray(getattr(data, n)()) for n in names]
    photos.append(gray(data.stereo_motorcycle()[0]))
    return tuple(photos)


def photo(rng: np.random.Generator) -> np.ndarray:
    """A crop of one of scikit-image's photos and drawings, in grayscale."""
    photos = _skimage_photos()
    return crop(photos[int(rng.integers(len(photos)))], rng)
