"""The kinds of non-MRI image the brain-MRI check never trains on.

Terrain, charts, documents, scientific images, textures, rings and matplotlib's sample photos:
its reject rate is measured on these. Each is a generator ``rng -> (H, W) uint8``,
registered by name in :mod:`mrimaster.data.non_mri`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

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
        z = np.asarray(Image.fromarray(to_uint8(crop(dems[int(rng.integers(2))], rng)))
                       .resize(random_size(rng)[::-1], Image.Resampling.BILINEAR), float)
    else:
        h, w = random_size(rng)
        fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
        amp = 1 / np.maximum(np.hypot(fy, fx), 1 / max(h, w)) ** rng.uniform(1.6, 2.6)
        z = np.real(np.fft.ifft2(amp * np.exp(2j * np.pi * rng.random((h, w)))))
    if rng.random() < 0.6:
        ls = LightSource(azdeg=rng.uniform(0, 360), altdeg=rng.uniform(20, 60))
        return to_uint8(ls.hillshade(z, vert_exag=rng.uniform(0.5, 5)))
    return to_uint8(z)


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
    ax.set_title(" ".join(rng.choice(WORDS, 3)))
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return gray(np.asarray(canvas.buffer_rgba()))


def document(rng: np.random.Generator) -> np.ndarray:
    """A page: title, paragraphs, a table, sometimes a dark box; or scikit-image's scanned
    ``page`` / ``text``."""
    if rng.random() < 0.2:
        data = skimage_data()
        return crop(data.page() if rng.random() < 0.5 else data.text(), rng)
    w = int(rng.integers(220, 500))
    h = int(w * rng.uniform(1.1, 1.5))
    im = Image.new("L", (w, h), int(rng.integers(215, 256)))
    draw = ImageDraw.Draw(im)
    y, m = int(rng.integers(8, 30)), int(rng.integers(8, 30))
    draw.text((m, y), " ".join(rng.choice(WORDS, 3)).upper(), fill=0, font=default_font(18))
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
            draw.text((m, y), " ".join(rng.choice(WORDS, 10)), fill=int(rng.integers(0, 70)),
                      font=default_font(int(rng.integers(8, 13))))
            y += int(rng.integers(11, 16))
        y += 8
    return np.asarray(im)


@lru_cache(maxsize=1)
def _science() -> tuple[np.ndarray, ...]:
    data = skimage_data()
    return tuple(gray(getattr(data, n)()) for n in (
        "immunohistochemistry", "cell", "microaneurysms", "retina", "hubble_deep_field"))


def science(rng: np.random.Generator) -> np.ndarray:
    """Other scientific and medical images: microscopy, a retinal fundus photo, astronomy."""
    images = _science()
    return crop(images[int(rng.integers(len(images)))], rng)


@lru_cache(maxsize=1)
def _textures() -> tuple[np.ndarray, ...]:
    data = skimage_data()
    return data.brick(), data.grass(), data.gravel()


def texture(rng: np.random.Generator) -> np.ndarray:
    """Crops of scikit-image's brick, grass and gravel textures."""
    images = _textures()
    return crop(images[int(rng.integers(len(images)))], rng)


def rings(rng: np.random.Generator) -> np.ndarray:
    """Concentric rings, zone plates, spirals and radial gradients."""
    h, w = random_size(rng)
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
    return to_uint8(a)


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
    return crop(images[int(rng.integers(len(images)))], rng)
