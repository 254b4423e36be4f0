"""Images that are not brain MRI slices, generated deterministically, by kind.

The negatives of the brain-MRI check (:mod:`mrimaster.trust.brain_check`). Each *kind* is a
generator ``rng -> (H, W) uint8`` grayscale image; the kinds are split between training and a
held-out set the check never sees in training, so that its reject rate is measured on kinds
that are new to it (as a user's wrong upload would be).

Sources, all available offline: synthetic noise, gradients, shapes, patterns and text drawn
here; scikit-image's bundled sample images (``skimage.data``, a ``dev`` dependency, BSD-3 and
public-domain photos, see its ``data/README``) and matplotlib's sample data (``grace_hopper``,
the Jacksboro fault and topobathy elevation models, two more photos). matplotlib's ``s1045.ima``
is a real MRI head slice: it is *never* a negative (see :func:`matplotlib_mri_slice`).

Every image then goes through :func:`finish`: random inversion and gamma, and in a third of the
cases a head-like ellipse mask on black, so that "a round thing on a black background" is not
enough to look like an MRI slice.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from mrimaster.errors import DataError

Generator = Callable[[np.random.Generator], np.ndarray]

_WORDS = ["patient", "report", "scan", "the", "of", "and", "image", "brain", "left", "right",
          "total", "invoice", "date", "page", "summary", "figure", "table", "results", "method",
          "data", "value", "mean", "lorem", "ipsum", "dolor", "sit", "amet", "0.52", "2026",
          "mm", "kg", "A4", "ID", "no", "tumour", "class", "score", "model"]


def _to_uint8(img: np.ndarray) -> np.ndarray:
    """Min-max scale any array to ``(H, W)`` uint8 0-255 (constant -> mid-gray)."""
    a = np.asarray(img, dtype=np.float64)
    lo, hi = float(a.min()), float(a.max())
    if hi - lo < 1e-9:
        return np.full(a.shape, 128, np.uint8)
    return np.round(255 * (a - lo) / (hi - lo)).astype(np.uint8)


def _gray(img: np.ndarray) -> np.ndarray:
    """RGB(A)/bool/float image -> ``(H, W)`` uint8 (ITU-R 601 luma, as Pillow's ``L``)."""
    a = np.asarray(img)
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    if a.ndim == 3:
        a = a[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    if a.dtype != np.uint8:
        return _to_uint8(a)
    return a


def _size(rng: np.random.Generator) -> tuple[int, int]:
    return int(rng.integers(160, 513)), int(rng.integers(160, 513))


def _crop(src: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random crop (20-100 % of each side), flipped/rotated at random."""
    h, w = src.shape
    ch, cw = (max(32, int(s * rng.uniform(0.2, 1.0))) for s in (h, w))
    y, x = int(rng.integers(0, h - min(ch, h) + 1)), int(rng.integers(0, w - min(cw, w) + 1))
    out = src[y:y + ch, x:x + cw]
    return np.rot90(out[:, ::-1] if rng.random() < 0.5 else out, int(rng.integers(4)))


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without a scalable default font
        return ImageFont.load_default()


# ---- training kinds -------------------------------------------------------------------------

def noise(rng: np.random.Generator) -> np.ndarray:
    """Uniform, Gaussian, salt-and-pepper, exponential (speckle) or Poisson noise."""
    shape = _size(rng)
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
    return _to_uint8(np.clip(a, np.percentile(a, 0.5), np.percentile(a, 99.5)))


def smooth_noise(rng: np.random.Generator) -> np.ndarray:
    """Gaussian-blurred noise ("clouds"), sometimes thresholded into blobs."""
    a = ndimage.gaussian_filter(rng.normal(size=_size(rng)), rng.uniform(2, 30))
    if rng.random() < 0.3:
        a = (a > np.percentile(a, rng.uniform(20, 80))).astype(float)
    return _to_uint8(a)


def gradient(rng: np.random.Generator) -> np.ndarray:
    """A linear gradient at a random angle, or a bilinear one between four corner values."""
    h, w = _size(rng)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    if rng.random() < 0.7:
        t = rng.uniform(0, 2 * np.pi)
        a = np.cos(t) * xx + np.sin(t) * yy
    else:
        c = rng.uniform(0, 1, 4)
        a = (c[0] * (1 - yy) * (1 - xx) + c[1] * (1 - yy) * xx + c[2] * yy * (1 - xx)
             + c[3] * yy * xx)
    a = _to_uint8(a).astype(float) / 255
    a = a ** rng.uniform(0.4, 2.5)
    if rng.random() < 0.3:
        a = np.floor(a * rng.integers(3, 10)) / 10
    return _to_uint8(a * rng.uniform(0.3, 1) + rng.uniform(0, 0.3))


def shapes(rng: np.random.Generator) -> np.ndarray:
    """Random filled rectangles, ellipses, polygons and lines on a random background."""
    h, w = _size(rng)
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
    h, w = _size(rng)
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
    h, w = _size(rng)
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
    return _to_uint8(a * rng.uniform(0.3, 1) + rng.uniform(0, 0.5))


def text(rng: np.random.Generator) -> np.ndarray:
    """Random words in the default font, on a light or dark background."""
    h, w = _size(rng)
    dark = rng.random() < 0.4
    im = Image.new("L", (w, h), int(rng.integers(0, 60) if dark else rng.integers(190, 256)))
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(3, 30))):
        words = " ".join(rng.choice(_WORDS, int(rng.integers(1, 6))))
        draw.text((int(rng.integers(-20, w)), int(rng.integers(-10, h))), words,
                  fill=int(rng.integers(180, 256) if dark else rng.integers(0, 90)),
                  font=_font(int(rng.integers(8, 48))))
    return np.asarray(im)


@lru_cache(maxsize=1)
def _skimage_photos() -> tuple[np.ndarray, ...]:
    data = _skimage()
    names = ("camera", "astronaut", "coffee", "chelsea", "rocket", "coins", "moon", "clock",
             "horse", "colorwheel", "logo", "binary_blobs", "shepp_logan_phantom", "cat")
    photos = [_gray(getattr(data, n)()) for n in names]
    photos.append(_gray(data.stereo_motorcycle()[0]))
    return tuple(photos)


def photo(rng: np.random.Generator) -> np.ndarray:
    """A crop of one of scikit-image's photos and drawings, in grayscale."""
    photos = _skimage_photos()
    return _crop(photos[int(rng.integers(len(photos)))], rng)


# ---- held-out kinds (never trained on) ------------------------------------------------------

def _skimage() -> Any:
    try:
        import skimage.data as data
    except ModuleNotFoundError as exc:
        raise DataError("the brain-MRI check's negatives need scikit-image's sample images",
                        "pip install scikit-image (a dev dependency)") from exc
    return data


@lru_cache(maxsize=1)
def _elevations() -> tuple[np.ndarray, ...]:
    from matplotlib import cbook

    def load(name: str, key: str) -> np.ndarray:
        with np.load(Path(cbook.get_sample_data(name, asfileobj=False))) as dem:
            return np.asarray(dem[key], float)

    return load("jacksboro_fault_dem.npz", "elevation"), load("topobathy.npz", "topo")


def terrain(rng: np.random.Generator) -> np.ndarray:
    """Elevation maps: matplotlib's real DEMs or fractal (1/f^b) surfaces, as height or
    hill-shaded relief (matplotlib's ``LightSource``)."""
    from matplotlib.colors import LightSource

    if rng.random() < 0.5:
        dems = _elevations()
        z = np.asarray(Image.fromarray(_to_uint8(_crop(dems[int(rng.integers(2))], rng)))
                       .resize(_size(rng)[::-1], Image.Resampling.BILINEAR), float)
    else:
        h, w = _size(rng)
        fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
        amp = 1 / np.maximum(np.hypot(fy, fx), 1 / max(h, w)) ** rng.uniform(1.6, 2.6)
        z = np.real(np.fft.ifft2(amp * np.exp(2j * np.pi * rng.random((h, w)))))
    if rng.random() < 0.6:
        ls = LightSource(azdeg=rng.uniform(0, 360), altdeg=rng.uniform(20, 60))
        return _to_uint8(ls.hillshade(z, vert_exag=rng.uniform(0.5, 5)))
    return _to_uint8(z)


def chart(rng: np.random.Generator) -> np.ndarray:
    """A matplotlib line, scatter, bar, histogram or image plot, rendered off-screen."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(rng.uniform(2.5, 6), rng.uniform(2.5, 6)), dpi=60)
    ax = fig.add_subplot()
    x = np.linspace(0, rng.uniform(1, 20), 200)
    pick = int(rng.integers(5))
    if pick == 0:
        for _ in range(int(rng.integers(1, 4))):
            ax.plot(x, np.cumsum(rng.normal(size=x.size)))
    elif pick == 1:
        ax.scatter(rng.normal(size=80), rng.normal(size=80), s=rng.uniform(4, 40))
    elif pick == 2:
        ax.bar(range(8), rng.uniform(1, 10, 8))
    elif pick == 3:
        ax.hist(rng.normal(size=500), bins=int(rng.integers(8, 40)))
    else:
        ax.imshow(ndimage.gaussian_filter(rng.normal(size=(40, 40)), 3), cmap="gray")
    ax.set_title(" ".join(rng.choice(_WORDS, 3)))
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return _gray(np.asarray(canvas.buffer_rgba()))


def document(rng: np.random.Generator) -> np.ndarray:
    """A page: title, paragraphs, a table, sometimes a dark box; or scikit-image's scanned
    ``page`` / ``text``."""
    if rng.random() < 0.2:
        data = _skimage()
        return _crop(data.page() if rng.random() < 0.5 else data.text(), rng)
    w = int(rng.integers(220, 500))
    h = int(w * rng.uniform(1.1, 1.5))
    im = Image.new("L", (w, h), int(rng.integers(215, 256)))
    draw = ImageDraw.Draw(im)
    y, m = int(rng.integers(8, 30)), int(rng.integers(8, 30))
    draw.text((m, y), " ".join(rng.choice(_WORDS, 3)).upper(), fill=0, font=_font(18))
    y += 30
    while y < h - 20:
        if rng.random() < 0.15:  # a table
            rows, cols = int(rng.integers(2, 6)), int(rng.integers(2, 5))
            cw, rh = (w - 2 * m) // cols, 14
            for r in range(rows + 1):
                draw.line((m, y + r * rh, w - m, y + r * rh), fill=60)
            for c in range(cols + 1):
                draw.line((m + c * cw, y, m + c * cw, y + rows * rh), fill=60)
            y += rows * rh + 12
            continue
        for _ in range(int(rng.integers(2, 7))):
            draw.text((m, y), " ".join(rng.choice(_WORDS, 10)), fill=int(rng.integers(0, 70)),
                      font=_font(int(rng.integers(8, 13))))
            y += int(rng.integers(11, 16))
        y += 8
    return np.asarray(im)


@lru_cache(maxsize=1)
def _science() -> tuple[np.ndarray, ...]:
    data = _skimage()
    return tuple(_gray(getattr(data, n)()) for n in (
        "immunohistochemistry", "cell", "microaneurysms", "retina", "hubble_deep_field"))


def science(rng: np.random.Generator) -> np.ndarray:
    """Other scientific and medical images: microscopy, a retinal fundus photo, astronomy."""
    images = _science()
    return _crop(images[int(rng.integers(len(images)))], rng)


@lru_cache(maxsize=1)
def _textures() -> tuple[np.ndarray, ...]:
    data = _skimage()
    return data.brick(), data.grass(), data.gravel()


def texture(rng: np.random.Generator) -> np.ndarray:
    """Crops of scikit-image's brick, grass and gravel textures."""
    images = _textures()
    return _crop(images[int(rng.integers(len(images)))], rng)


def rings(rng: np.random.Generator) -> np.ndarray:
    """Concentric rings, zone plates, spirals and radial gradients."""
    h, w = _size(rng)
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    r = np.hypot(yy - h * rng.uniform(0.3, 0.7), xx - w * rng.uniform(0.3, 0.7))
    theta = np.arctan2(yy - h / 2, xx - w / 2)
    pick = int(rng.integers(4))
    if pick == 0:
        a = np.sin(2 * np.pi * r / rng.uniform(5, 60))
    elif pick == 1:
        a = np.cos(np.pi * r ** 2 / (rng.uniform(0.2, 2) * max(h, w) ** 2 / 64))
    elif pick == 2:
        a = np.sin(int(rng.integers(1, 8)) * theta + r / rng.uniform(3, 30))
    else:
        a = -r ** rng.uniform(0.5, 2)
    return _to_uint8(a)


@lru_cache(maxsize=1)
def _mpl_photos() -> tuple[np.ndarray, ...]:
    from matplotlib import cbook

    names = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png")
    out = []
    for n in names:
        with Image.open(Path(cbook.get_sample_data(n, asfileobj=False))) as im:
            out.append(np.asarray(im.convert("L")))
    return tuple(out)


def photo_other(rng: np.random.Generator) -> np.ndarray:
    """Crops of matplotlib's sample photo (Grace Hopper), its product photo and logo."""
    images = _mpl_photos()
    return _crop(images[int(rng.integers(len(images)))], rng)


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
    return _to_uint8(np.frombuffer(data, np.dtype(">u2")).reshape(256, 256))
