"""Decoding 2D slices and the deterministic preprocessing shared by training and inference."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mrimaster.errors import ImageLoadError

Image.MAX_IMAGE_PIXELS = 100_000_000


def image_suffixes() -> frozenset[str]:
    """Lower-case file suffixes Pillow can read (``.jpg``, ``.png``, ``.dcm`` is not among them)."""
    Image.init()
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items()
                     if fmt in Image.OPEN)


def load_grayscale(path: Path) -> np.ndarray:
    """Decode an image file to a grayscale array.

    Args:
        path: Any format Pillow reads.

    Returns:
        ``(H, W)`` uint8 array, 0-255.

    Raises:
        ImageLoadError: the file is missing, not an image, or truncated.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                im.load()
                return np.asarray(im.convert("L"), dtype=np.uint8).copy()
    except FileNotFoundError as exc:
        raise ImageLoadError(f"{path}: file not found") from exc
    except UnidentifiedImageError as exc:
        raise ImageLoadError(f"{path}: not an image Pillow can read",
                             "check the file is a JPEG/PNG/... image and not renamed") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageLoadError(f"{path}: corrupt or truncated image ({exc})",
                             "re-export or re-download the file") from exc


def foreground_box(gray: np.ndarray, threshold: int = 15) -> tuple[int, int, int, int]:
    """Bounding box ``(top, bottom, left, right)`` (exclusive ends) of pixels above ``threshold``.

    Returns the whole image when nothing is above the threshold.
    """
    mask = gray > threshold
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0 or cols.size == 0:
        return 0, gray.shape[0], 0, gray.shape[1]
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def prepare_slice(gray: np.ndarray, size: int, margin: float = 0.04) -> np.ndarray:
    """Crop to the head, pad to a square and resize: the model-independent preprocessing.

    Cropping to the foreground removes the black borders whose width differs between scanners
    and exports, so that the head fills the frame the same way for every source.

    Args:
        gray: ``(H, W)`` uint8 slice.
        size: Output side in pixels.
        margin: Extra border around the head, as a fraction of the box's longer side.

    Returns:
        ``(size, size)`` uint8 array.
    """
    top, bottom, left, right = foreground_box(gray)
    crop = gray[top:bottom, left:right]
    h, w = crop.shape
    side = int(round(max(h, w) * (1 + 2 * margin)))
    square = np.zeros((side, side), dtype=np.uint8)
    y0, x0 = (side - h) // 2, (side - w) // 2
    square[y0:y0 + h, x0:x0 + w] = crop
    resized = Image.fromarray(square).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)
