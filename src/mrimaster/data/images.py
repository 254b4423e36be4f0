"""Decoding 2D slices and the deterministic preprocessing shared by training and inference."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mrimaster.errors import ImageLoadError

Image.MAX_IMAGE_PIXELS = 100_000_000


MAX_PIXELS = 40_000_000
"""Largest image (width x height) decoded: refused from the header, before memory is taken
(MRI slices are a few hundred pixels a side; a 24-megapixel photo still opens)."""

HIGH_DEPTH_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
"""Pillow modes of 16-bit, 32-bit integer and floating-point grayscale images (16-bit PNG and
TIFF exports of MRI, float TIFFs): windowed like a DICOM slice (:func:`window_to_uint8`),
never clipped at 255."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def model_input(images: np.ndarray) -> np.ndarray:
    """``(B, S, S)`` uint8 prepared slices -> ``(B, 3, S, S)`` float32 network input.

    Scaled to [0, 1], copied to three channels and ImageNet-normalised (the networks start from
    ImageNet weights). NumPy only, so the ONNX Runtime path needs no torch.
    """
    x = np.asarray(images, dtype=np.float32)[:, None] / np.float32(255.0)
    mean = np.asarray(IMAGENET_MEAN, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(IMAGENET_STD, np.float32).reshape(1, 3, 1, 1)
    return np.ascontiguousarray((x - mean) / std, dtype=np.float32)


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
    return load_slice_file(path)[0]


@dataclass(frozen=True)
class RawStats:
    """What the input checks need to know about a decoded file.

    Attributes:
        height, width: Pixel size as stored.
        std: Standard deviation of the grayscale image (0-255).
        foreground: Share of grayscale pixels above 15 (not background).
        colourfulness: Mean ``|R - G| + |G - B|`` over pixels (0 for grayscale).
    """

    height: int
    width: int
    std: float
    foreground: float
    colourfulness: float


def raw_stats(rgb: np.ndarray) -> RawStats:
    """Statistics of one decoded image.

    Args:
        rgb: ``(H, W, 3)`` uint8.
    """
    rgb16 = rgb.astype(np.int16)
    gray = rgb16.mean(axis=2)
    colour = float(np.abs(rgb16[..., 0] - rgb16[..., 1]).mean()
                   + np.abs(rgb16[..., 1] - rgb16[..., 2]).mean())
    return RawStats(int(rgb.shape[0]), int(rgb.shape[1]), float(gray.std()),
                    float((gray > 15).mean()), colour)


def window_to_uint8(values: np.ndarray, lo: float | None = None, hi: float | None = None
                    ) -> np.ndarray:
    """Map stored values to a display image, as a DICOM viewer does without a stored window.

    Args:
        values: ``(H, W)`` numbers of any range (16-bit, float; NaN counts as the window's low
            end).
        lo, hi: The window; default the 0.5th and 99.5th percentiles of the finite values.

    Returns:
        ``(H, W)`` uint8: ``lo`` and below 0, ``hi`` and above 255, linear between.
    """
    values = np.asarray(values, dtype=np.float32)
    if lo is None or hi is None:
        sample = values.ravel()[::max(1, values.size // 1_000_000)]  # a large scan: a sample
        finite = sample[np.isfinite(sample)].astype(np.float64)
        lo, hi = (np.percentile(finite, [0.5, 99.5]) if finite.size else (0.0, 1.0))
    if hi <= lo:
        hi = lo + 1
    scaled = np.clip((np.nan_to_num(values, nan=lo) - np.float32(lo)) / np.float32(hi - lo),
                     0, 1) * 255
    return scaled.round().astype(np.uint8)


def _upright(im: Image.Image) -> Image.Image:
    """The image as a viewer shows it: its EXIF orientation applied (a photo of a film or a
    phone export may store the pixels rotated); an unreadable EXIF block is ignored."""
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # a broken EXIF block must not make the pixels unreadable
        return im


def _slices_in(im: Image.Image) -> int:
    """How many full-size images a file holds: a JPEG's multi-picture block (MPO: a phone's
    gain map or a camera's preview) and a TIFF's reduced-size pages (thumbnails) do not
    count; the file is left at its first image."""
    frames = int(getattr(im, "n_frames", 1) or 1)
    if frames == 1 or im.format == "MPO":
        return 1
    size, full = im.size, 0
    for k in range(frames):
        im.seek(k)
        full += im.size == size
    im.seek(0)
    return full


def load_slice_file(path: Path) -> tuple[np.ndarray, RawStats]:
    """Decode an image file to grayscale, with the statistics the input checks need.

    8-bit images are read as stored (colour converted to luma); 16-bit, 32-bit and float
    grayscale ones (:data:`HIGH_DEPTH_MODES`) are windowed between their 0.5th and 99.5th
    percentiles (:func:`window_to_uint8`), as a DICOM slice without a stored window is. The EXIF
    orientation is applied. A file of several full-size images (multi-page TIFF, animated GIF)
    is refused, as a multi-frame DICOM is; a JPEG's preview or a TIFF's thumbnail is not
    counted (:func:`_slices_in`).

    Returns:
        ``((H, W) uint8 grayscale, RawStats)``.

    Raises:
        ImageLoadError: as :func:`load_grayscale`, and a file of several frames.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise ImageLoadError(
                        f"{path}: the file declares an image too large to be a slice "
                        f"({im.width}x{im.height} px)", "check the file; MRI slices are a "
                        "few hundred pixels a side")
                frames = _slices_in(im)
                if frames > 1:
                    raise ImageLoadError(
                        f"{path}: the file holds {frames} images (a multi-page or animated "
                        "file), not one slice", "save each slice as its own file")
                im.load()
                shown = _upright(im)
                if shown.mode in HIGH_DEPTH_MODES:
                    gray = window_to_uint8(np.asarray(shown))
                    rgb = np.repeat(gray[:, :, None], 3, axis=2)
                else:
                    rgb = np.asarray(shown.convert("RGB"), dtype=np.uint8)
                    gray = np.asarray(shown.convert("L"), dtype=np.uint8).copy()
    except FileNotFoundError as exc:
        raise ImageLoadError(f"{path}: file not found") from exc
    except PermissionError as exc:
        raise ImageLoadError(f"{path}: permission denied (this user cannot read the file)",
                             "make the file readable, or copy it somewhere readable") from exc
    except IsADirectoryError as exc:
        raise ImageLoadError(f"{path}: is a folder, not an image file",
                             "give the image files inside it") from exc
    except ImageLoadError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageLoadError(f"{path}: not an image Pillow can read",
                             "check the file is a JPEG/PNG/... image and not renamed") from exc
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(f"{path}: the file declares an image too large to be a slice "
                             f"({exc})", "check the file; MRI slices are a few hundred "
                             "pixels a side") from exc
    except Exception as exc:  # any other failure of a decoder on a user's file
        raise ImageLoadError(f"{path}: corrupt or truncated image ({type(exc).__name__}: "
                             f"{exc})", "re-export or re-download the file") from exc
    return gray, raw_stats(rgb)


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


@dataclass(frozen=True)
class SliceGeometry:
    """Where the model's square input sits in the original image.

    The head's box ``[top:bottom, left:right]`` of the original is placed at ``(y0, x0)`` in a
    black square of side ``side``, which is resized to the model's input size.
    """

    top: int
    bottom: int
    left: int
    right: int
    side: int
    y0: int
    x0: int


def slice_geometry(gray: np.ndarray, margin: float = 0.04) -> SliceGeometry:
    """The crop-and-pad geometry of :func:`prepare_slice` for ``gray`` ``(H, W)``."""
    top, bottom, left, right = foreground_box(gray)
    h, w = bottom - top, right - left
    side = int(round(max(h, w) * (1 + 2 * margin)))
    return SliceGeometry(top, bottom, left, right, side, (side - h) // 2, (side - w) // 2)


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
    g = slice_geometry(gray, margin)
    crop = gray[g.top:g.bottom, g.left:g.right]
    square = np.zeros((g.side, g.side), dtype=np.uint8)
    square[g.y0:g.y0 + crop.shape[0], g.x0:g.x0 + crop.shape[1]] = crop
    resized = Image.fromarray(square).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def to_original_grid(values: np.ndarray, geometry: SliceGeometry, shape: tuple[int, int]
                     ) -> np.ndarray:
    """Map a model-input-sized array back onto the original image (undo resize, pad, crop).

    Args:
        values: ``(S, S)`` float map on the model's input grid.
        geometry: From :func:`slice_geometry` of the original image.
        shape: ``(H, W)`` of the original image.

    Returns:
        ``(H, W)`` float32, zero outside the head's box.
    """
    g = geometry
    square = np.asarray(Image.fromarray(values.astype(np.float32), mode="F").resize(
        (g.side, g.side), Image.Resampling.BILINEAR))
    out = np.zeros(shape, dtype=np.float32)
    h, w = g.bottom - g.top, g.right - g.left
    out[g.top:g.bottom, g.left:g.right] = square[g.y0:g.y0 + h, g.x0:g.x0 + w]
    return out
